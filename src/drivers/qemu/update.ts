/**
 * Changing a VM of the QEMU driver (PATCH). vm.json holds what the next launch uses and, while
 * QEMU runs, `live`: what it was launched with and changed to since. A running VM is changed
 * over QMP where QEMU can — data disks by blockdev-add + device_add on a free PCIe root port
 * (virtio) or the virtio-scsi controller (SCSI), device_del to remove them; the root disk by
 * block_resize; memory by the balloon up to the launch's maximum; vCPUs by hot-plug up to
 * its maximum — and everything else only in vm.json, for the next launch. Every step has
 * its undo; on failure the steps done are undone in reverse, and vm.json is written last.
 */
import { existsSync, rmSync } from "node:fs";
import { isHotPluggable, reportedBus } from "../../api-types/values.ts";
import type { QmpClient } from "../../qmp/index.ts";
import { allocateDiskSlots } from "../shared/disk-slots.ts";
import { pendingChanges, type VmSizes } from "../shared/pending.ts";
import { DriverError, type PendingChanges, type VmChange, type VmChangeResult } from "../types.ts";
import { createDisk } from "./disks.ts";
import { hotplugPortIds, run, waitUntil } from "./process.ts";
import { dataDiskId, type LiveConfig, maxima, type StoredDisk, type StoredVm, type VmPaths } from "./state.ts";

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
/** How long a guest gets to release a device being unplugged. */
const UNPLUG_TIMEOUT_MS = 30_000;

export interface QemuUpdateContext {
  /** The VM's record; not changed: the result is a changed copy. */
  vm: StoredVm;
  paths: VmPaths;
  qemuImg: string;
  /** The VM's QMP connection while it runs; null when stopped. */
  qmp: QmpClient | null;
  /** Hands a new disk file to the user QEMU runs as (qemu.run_as). */
  own: (path: string) => void;
}

type Undo = () => Promise<void>;

export interface QemuUpdate {
  vm: StoredVm;
  result: VmChangeResult;
  /** Undoes what was done, when writing vm.json fails. */
  undo: () => Promise<void>;
  /** Deletes the files of removed disks, once vm.json is written. */
  removeFiles: () => void;
}

/** Applies `change`; returns the record to store and what took effect now. The caller writes vm.json. */
export async function updateQemuVm(ctx: QemuUpdateContext, change: VmChange): Promise<QemuUpdate> {
  const vm: StoredVm = structuredClone(ctx.vm);
  const qmp = ctx.qmp;
  // What the running QEMU has. One launched before `live` existed has it from vm.json as it
  // was, but no balloon and no vCPU slots: its sizes change at the next launch.
  const live = qmp ? (vm.live ?? launchConfig(ctx.vm)) : null;
  const sizesLive = qmp !== null && ctx.vm.live != null;
  const result: VmChangeResult = { live: [], pending: [] };
  const undo: Undo[] = [];
  const removedFiles: string[] = [];
  const note = (k: keyof VmChange, now: boolean) => (now ? result.live : result.pending).push(k);
  try {
    // vCPUs and memory: vm.json always; QEMU too when within what it was launched with.
    if (change.maxVcpus !== undefined) {
      vm.max_vcpus = change.maxVcpus;
      note("maxVcpus", false);
    }
    if (change.maxMemoryMb !== undefined) {
      vm.max_memory_mb = change.maxMemoryMb;
      note("maxMemoryMb", false);
    }
    if (change.memoryMb !== undefined) {
      vm.memory_mb = change.memoryMb;
      const now = sizesLive && live !== null && change.memoryMb <= live.max_memory_mb;
      if (now) {
        const before = live.memory_mb;
        await qmp.execute("balloon", { value: change.memoryMb * MiB });
        live.memory_mb = change.memoryMb;
        undo.push(async () => void (await qmp.execute("balloon", { value: before * MiB })));
      }
      note("memoryMb", now);
    }
    if (change.vcpus !== undefined) {
      vm.vcpus = change.vcpus;
      // More vCPUs are hot-plugged; fewer wait for the next launch (unplug needs the guest's consent).
      const now = sizesLive && live !== null && change.vcpus > live.vcpus && change.vcpus <= live.max_vcpus;
      if (now) {
        const added = await plugCpus(qmp, change.vcpus - live.vcpus);
        live.vcpus = change.vcpus;
        undo.push(async () => {
          for (const id of added) await qmp.execute("device_del", { id }).catch(() => {});
        });
      }
      note("vcpus", now);
    }
    if (change.boot !== undefined) {
      vm.boot = change.boot;
      note("boot", false);
    }

    // Data disks: removed by serial, added after the last one (before the seed).
    if (change.removeDisks?.length) {
      for (const serial of change.removeDisks) {
        const i = vm.disks.findIndex((d) => d.type === "data" && d.serial === serial);
        if (i < 0) throw new DriverError("not_found", `${vm.name} has no data disk ${serial}`);
        const disk = vm.disks[i]!;
        if (qmp) {
          checkHotplugBus(vm.name, disk.driver);
          const id = dataDiskId(disk, i);
          await unplug(qmp, id);
          undo.push(() => plugDisk(qmp, ctx.paths, vm, disk, id));
        }
        vm.disks.splice(i, 1);
        removedFiles.push(ctx.paths.disk(disk.file));
      }
      note("removeDisks", qmp !== null);
    }
    if (change.addDisks?.length) {
      // Serials continue from the highest the VM had, removed ones included (their files go last).
      let next = 1 + Math.max(-1, ...ctx.vm.disks.map((d) => serialNo(d.serial)));
      for (const spec of change.addDisks) {
        const driver = reportedBus(spec.bus);
        if (qmp) checkHotplugBus(vm.name, driver);
        const disk: StoredDisk = { type: "data", file: `data${next}.qcow2`, size_gb: spec.sizeGb, driver, format: "qcow2", serial: `kdevops${next}` };
        next++;
        const path = ctx.paths.disk(disk.file);
        // Never over a file that is there already (qemu-img would truncate it).
        if (existsSync(path)) throw new DriverError("conflict", `${vm.name}: ${path} exists already; remove it or pick another disk`);
        // Undone from before the create: a qemu-img that fails or is killed on its timeout can
        // leave the file, and the next add of this disk would be refused over it for good.
        undo.push(async () => rmSync(path, { force: true }));
        await createDisk(ctx.qemuImg, path, spec.sizeGb * GiB);
        ctx.own(path);
        const at = vm.disks.findIndex((d) => d.type === "seed");
        vm.disks.splice(at < 0 ? vm.disks.length : at, 0, disk);
        if (qmp) {
          const id = dataDiskId(disk, vm.disks.indexOf(disk));
          await plugDisk(qmp, ctx.paths, vm, disk, id);
          undo.push(() => unplug(qmp, id));
        }
      }
      note("addDisks", qmp !== null);
    }

    // The root disk last: growing cannot be undone.
    if (change.rootDiskGb !== undefined) {
      const root = vm.disks.find((d) => d.type === "root");
      if (!root) throw new DriverError("failed", `${vm.name} has no root disk`);
      const bytes = change.rootDiskGb * GiB;
      if (qmp) await qmp.execute("block_resize", { device: "root", size: bytes });
      else await run([ctx.qemuImg, "resize", "-q", "-f", root.format, ctx.paths.disk(root.file), String(bytes)], `growing ${root.file}`);
      root.size_gb = change.rootDiskGb;
      vm.root_disk_gb = change.rootDiskGb;
      note("rootDiskGb", qmp !== null);
    }
  } catch (e) {
    await runAll(undo.reverse());
    throw e;
  }
  vm.live = live;
  // Files of removed disks go once vm.json no longer names them: the caller calls this after writing it.
  return { vm, result, undo: async () => void (await runAll(undo.reverse())), removeFiles: () => removedFiles.forEach((f) => rmSync(f, { force: true })) };
}

async function runAll(steps: Undo[]): Promise<void> {
  for (const u of steps) await u().catch(() => {});
}

/** What a VM launched from `vm` runs with (also the record of VMs launched before `live` existed). */
export function launchConfig(vm: StoredVm): LiveConfig {
  const { maxVcpus, maxMemoryMb } = maxima(vm);
  return { vcpus: vm.vcpus, max_vcpus: maxVcpus, memory_mb: vm.memory_mb, max_memory_mb: maxMemoryMb, boot: vm.boot };
}

/** What the next launch (vm.json) has that the running QEMU does not; null when nothing. */
export function pendingOf(next: LiveConfig, now: LiveConfig): PendingChanges | null {
  const sizes = (c: LiveConfig): VmSizes => ({ vcpus: c.vcpus, maxVcpus: c.max_vcpus, memoryMb: c.memory_mb, maxMemoryMb: c.max_memory_mb, boot: c.boot });
  return pendingChanges(sizes(next), sizes(now));
}

function serialNo(serial: string | null): number {
  const m = /^kdevops(\d+)$/.exec(serial ?? "");
  return m ? Number(m[1]) : -1;
}

function checkHotplugBus(name: string, driver: string): void {
  if (!isHotPluggable(driver)) {
    throw new DriverError("unsupported", `${name}: ${driver} disks cannot be plugged into or out of a running VM; stop it first`);
  }
}

interface PciDevice {
  qdev_id?: string;
  pci_bridge?: { devices?: PciDevice[] };
}

/** A root port with nothing behind it; spares first, then ports whose disk was unplugged. */
async function freePort(qmp: QmpClient, name: string): Promise<string> {
  const buses = await qmp.execute<{ bus: number; devices: PciDevice[] }[]>("query-pci");
  const free = new Set<string>();
  for (const b of buses) {
    for (const d of b.devices) if (d.pci_bridge && d.qdev_id && (d.pci_bridge.devices ?? []).length === 0) free.add(d.qdev_id);
  }
  const spare = hotplugPortIds().find((id) => free.has(id)) ?? [...free].find((id) => id.startsWith("port-"));
  if (!spare) throw new DriverError("unsupported", `${name} has no free PCIe port to plug a disk into (it was started before PATCH existed, or all are used); stop it and change it then`);
  return spare;
}

/** The peripheral devices (ids) QEMU has now. */
async function peripherals(qmp: QmpClient): Promise<Set<string>> {
  const list = await qmp.execute<{ name: string }[]>("qom-list", { path: "/machine/peripheral" });
  return new Set(list.map((p) => p.name));
}

/** blockdev-add + device_add of a data disk (and of the SCSI controller, if the VM has none yet). */
async function plugDisk(qmp: QmpClient, paths: VmPaths, vm: StoredVm, disk: StoredDisk, id: string): Promise<void> {
  await qmp.execute("blockdev-add", {
    "node-name": id,
    driver: disk.format,
    discard: "unmap",
    file: { driver: "file", filename: paths.disk(disk.file) },
  });
  try {
    const serial = disk.serial ?? undefined;
    if (disk.driver === "virtio") {
      await qmp.execute("device_add", { driver: "virtio-blk-pci", id: `disk-${id}`, drive: id, bus: await freePort(qmp, vm.name), ...(serial ? { serial } : {}) });
    } else {
      const devs = await peripherals(qmp);
      if (!devs.has("scsi0")) await qmp.execute("device_add", { driver: "virtio-scsi-pci", id: "scsi0", bus: await freePort(qmp, vm.name) });
      const lun = await freeLun(qmp, vm, devs);
      await qmp.execute("device_add", { driver: "scsi-hd", id: `disk-${id}`, drive: id, bus: "scsi0.0", channel: 0, "scsi-id": 0, lun, ...(serial ? { serial } : {}) });
    }
  } catch (e) {
    await qmp.execute("blockdev-del", { "node-name": id }).catch(() => {});
    throw e;
  }
}

/** The lowest LUN no SCSI disk of the VM uses now (they are compacted only at the next launch). */
async function freeLun(qmp: QmpClient, vm: StoredVm, devs: Set<string>): Promise<number> {
  const used = new Set<number>();
  const data = vm.disks.filter((d) => d.type === "data");
  const launchSlots = allocateDiskSlots(data.map((d) => d.driver), { seed: vm.disks.some((d) => d.type === "seed") });
  for (const [i, d] of data.entries()) {
    if (d.driver !== "scsi") continue;
    const dev = `disk-${dataDiskId(d, vm.disks.indexOf(d))}`;
    if (!devs.has(dev)) continue;
    const lun = await qmp.execute<number>("qom-get", { path: `/machine/peripheral/${dev}`, property: "lun" }).catch(() => launchSlots.data[i]?.drive?.unit ?? -1);
    used.add(lun);
  }
  let lun = 0;
  while (used.has(lun)) lun++;
  return lun;
}

/** device_del, then waits until the guest let go and QEMU removed the device; then its block node. */
async function unplug(qmp: QmpClient, id: string): Promise<void> {
  const dev = `disk-${id}`;
  if (!(await peripherals(qmp)).has(dev)) throw new DriverError("unsupported", `the disk ${id} cannot be unplugged: it has no device id (the VM was started before PATCH existed); stop the VM and change it then`);
  await qmp.execute("device_del", { id: dev });
  let gone = false;
  const deadline = Date.now() + UNPLUG_TIMEOUT_MS;
  while (!gone && Date.now() < deadline) {
    gone = !(await peripherals(qmp)).has(dev);
    if (!gone) await waitUntil(() => false, 250);
  }
  if (!gone) throw new DriverError("failed", `the guest did not release disk ${id} within ${UNPLUG_TIMEOUT_MS / 1000} s`);
  // A disk plugged in by blockdev-add leaves its node behind; one from the command line does not.
  await qmp.execute("blockdev-del", { "node-name": id }).catch(() => {});
}

interface HotpluggableCpu {
  type: string;
  props: Record<string, number>;
  "qom-path"?: string;
}

/** Hot-plugs `count` vCPUs into free sockets; returns their device ids. */
async function plugCpus(qmp: QmpClient, count: number): Promise<string[]> {
  // Lowest socket (core, thread) first.
  const key = (c: HotpluggableCpu) => [c.props["socket-id"] ?? 0, c.props["core-id"] ?? 0, c.props["thread-id"] ?? 0];
  const order = (a: HotpluggableCpu, b: HotpluggableCpu) => key(a).reduce((r, x, i) => r || x - key(b)[i]!, 0);
  const slots = (await qmp.execute<HotpluggableCpu[]>("query-hotpluggable-cpus")).filter((c) => c["qom-path"] === undefined).sort(order);
  if (slots.length < count) throw new DriverError("failed", `QEMU has room for ${slots.length} more vCPUs, not ${count}`);
  const added: string[] = [];
  try {
    for (const slot of slots.slice(0, count)) {
      const id = `vcpu-${Object.values(slot.props).join("-")}`;
      await qmp.execute("device_add", { driver: slot.type, id, ...slot.props });
      added.push(id);
    }
  } catch (e) {
    for (const id of added) await qmp.execute("device_del", { id }).catch(() => {});
    throw e;
  }
  return added;
}
