/**
 * Internal qcow2 snapshots for the QEMU driver. A running VM: QMP's snapshot-save /
 * snapshot-load / snapshot-delete jobs (QEMU >= 6.0) over its writable block nodes (the
 * read-only seed CD-ROM is left out), memory and device state in the root disk; the job is
 * waited for with query-jobs and its error reported. A stopped VM: qemu-img snapshot on each
 * qcow2 disk (argument arrays, never a shell). The qcow2 snapshot tables are the only
 * record: the list is read from the root disk (query-block, or qemu-img info when stopped).
 */
import type { QmpClient } from "../../qmp/index.ts";
import { DriverError, type SnapshotInfo } from "../types.ts";
import { run } from "./process.ts";
import type { StoredDisk, VmPaths } from "./state.ts";

/** One entry of a qcow2 snapshot table, as QMP and `qemu-img info --output=json` give it. */
interface QcowSnapshot {
  name: string;
  "vm-state-size": number;
  "date-sec": number;
}

interface BlockInfo {
  device: string;
  inserted?: { "node-name": string; ro: boolean; image?: { snapshots?: QcowSnapshot[] } };
}

interface JobInfo {
  id: string;
  status: string;
  error?: string;
}

/** Longest a snapshot job may take (a guest's whole memory written on a slow disk). */
const JOB_TIMEOUT_MS = 30 * 60_000;

let jobSeq = 0;

function toInfo(s: QcowSnapshot): SnapshotInfo {
  const memory = s["vm-state-size"] > 0;
  return { name: s.name, createdAt: new Date(s["date-sec"] * 1000).toISOString(), memory, state: memory ? "running" : "stopped", vmStateBytes: memory ? s["vm-state-size"] : null };
}

/** The disks a snapshot covers: every writable one (root and data disks; all qcow2). */
function snapshotDisks(disks: StoredDisk[]): StoredDisk[] {
  const writable = disks.filter((d) => d.type !== "seed");
  const raw = writable.filter((d) => d.format !== "qcow2");
  if (raw.length > 0) throw new DriverError("unsupported", `internal snapshots need qcow2 disks; ${raw.map((d) => d.serial ?? d.type).join(", ")} ${raw.length > 1 ? "are" : "is"} ${raw[0]!.format}`);
  return writable;
}

// ---- a running VM (QMP) ----

/** The writable block nodes and the root disk's node (where the memory state goes). */
async function nodes(qmp: QmpClient): Promise<{ vmstate: string; devices: string[]; root: BlockInfo }> {
  const blocks = await qmp.execute<BlockInfo[]>("query-block");
  const writable = blocks.filter((b) => b.inserted && !b.inserted.ro);
  const root = writable.find((b) => b.device === "root");
  if (!root) throw new DriverError("failed", "QEMU reports no writable root disk");
  return { vmstate: root.inserted!["node-name"], devices: writable.map((b) => b.inserted!["node-name"]), root };
}

export async function listRunning(qmp: QmpClient): Promise<SnapshotInfo[]> {
  const { root } = await nodes(qmp);
  return (root.inserted?.image?.snapshots ?? []).map(toInfo);
}

/** Runs a snapshot job to its end; QEMU's own error if it failed. */
async function runJob(qmp: QmpClient, command: string, args: Record<string, unknown>): Promise<void> {
  const id = `rcloud-${command}-${process.pid}-${++jobSeq}`;
  await qmp.execute(command, { "job-id": id, ...args });
  const deadline = Date.now() + JOB_TIMEOUT_MS;
  for (;;) {
    const job = (await qmp.execute<JobInfo[]>("query-jobs")).find((j) => j.id === id);
    if (!job) throw new DriverError("failed", `${command}: job ${id} vanished`);
    if (job.status === "concluded") {
      await qmp.execute("job-dismiss", { id }).catch(() => {});
      if (job.error) throw new DriverError("failed", `${command}: ${job.error}`);
      return;
    }
    if (Date.now() > deadline) {
      await qmp.execute("job-cancel", { id }).catch(() => {});
      throw new DriverError("failed", `${command}: still running after ${JOB_TIMEOUT_MS / 60_000} minutes; cancelled`);
    }
    await Bun.sleep(50);
  }
}

export async function saveRunning(qmp: QmpClient, tag: string): Promise<SnapshotInfo> {
  const { vmstate, devices } = await nodes(qmp);
  await runJob(qmp, "snapshot-save", { tag, vmstate, devices });
  const made = (await listRunning(qmp)).find((s) => s.name === tag);
  if (!made) throw new DriverError("failed", `snapshot-save finished but ${tag} is not in the root disk's snapshot table`);
  return made;
}

/** Loads a memory snapshot into the running QEMU; the guest runs on from the snapshot. */
export async function loadRunning(qmp: QmpClient, tag: string): Promise<void> {
  const { vmstate, devices } = await nodes(qmp);
  await runJob(qmp, "snapshot-load", { tag, vmstate, devices });
  // snapshot-load resumes a guest that was running; one that was paused is let run too.
  const { status } = await qmp.execute<{ status: string }>("query-status");
  if (status === "paused") await qmp.execute("cont");
}

export async function deleteRunning(qmp: QmpClient, tag: string): Promise<void> {
  const { devices } = await nodes(qmp);
  await runJob(qmp, "snapshot-delete", { tag, devices });
}

// ---- a stopped VM (qemu-img) ----

async function table(qemuImg: string, path: string): Promise<QcowSnapshot[]> {
  const out = await run([qemuImg, "info", "--output=json", "-f", "qcow2", path], `reading the snapshots of ${path}`);
  return ((JSON.parse(out) as { snapshots?: QcowSnapshot[] }).snapshots ?? []).filter((s) => typeof s.name === "string");
}

export async function listStopped(qemuImg: string, paths: VmPaths, disks: StoredDisk[]): Promise<SnapshotInfo[]> {
  const root = disks.find((d) => d.type === "root");
  return root ? (await table(qemuImg, paths.disk(root.file))).map(toInfo) : [];
}

/** A disk-only snapshot on every writable disk; the ones made are removed if one fails. */
export async function saveStopped(qemuImg: string, paths: VmPaths, disks: StoredDisk[], tag: string): Promise<SnapshotInfo> {
  const done: string[] = [];
  try {
    for (const d of snapshotDisks(disks)) {
      const file = paths.disk(d.file);
      await run([qemuImg, "snapshot", "-q", "-c", tag, file], `snapshot ${tag} of ${d.serial ?? d.type}`);
      done.push(file);
    }
  } catch (e) {
    for (const file of done) await run([qemuImg, "snapshot", "-q", "-d", tag, file], "undoing a snapshot").catch(() => {});
    throw e;
  }
  const made = (await listStopped(qemuImg, paths, disks)).find((s) => s.name === tag);
  if (!made) throw new DriverError("failed", `qemu-img made snapshot ${tag} but the root disk does not list it`);
  return made;
}

/** Applies a snapshot to every writable disk; all of them must hold it (a disk added later does not). */
export async function applyStopped(qemuImg: string, paths: VmPaths, disks: StoredDisk[], tag: string): Promise<void> {
  const covered = snapshotDisks(disks);
  for (const d of covered) {
    if (!(await table(qemuImg, paths.disk(d.file))).some((s) => s.name === tag)) {
      throw new DriverError("invalid_state", `disk ${d.serial ?? d.type} has no snapshot ${tag} (added after it was taken); remove that disk first`);
    }
  }
  for (const d of covered) await run([qemuImg, "snapshot", "-q", "-a", tag, paths.disk(d.file)], `reverting ${d.serial ?? d.type} to ${tag}`);
}

/** Removes the snapshot from every disk that holds it. */
export async function deleteStopped(qemuImg: string, paths: VmPaths, disks: StoredDisk[], tag: string): Promise<void> {
  for (const d of snapshotDisks(disks)) {
    const file = paths.disk(d.file);
    if ((await table(qemuImg, file)).some((s) => s.name === tag)) await run([qemuImg, "snapshot", "-q", "-d", tag, file], `deleting snapshot ${tag} of ${d.serial ?? d.type}`);
  }
}

/** Checks the snapshot exists (by the root disk's table) and says whether it holds memory. */
export function find(list: SnapshotInfo[], vmName: string, tag: string): SnapshotInfo {
  const s = list.find((x) => x.name === tag);
  if (!s) throw new DriverError("not_found", `${vmName} has no snapshot named ${tag}`);
  return s;
}
