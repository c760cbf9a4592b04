/**
 * Storage full (issue #17, fault 4), on a real libvirtd: rcloud's pool on a small ext4 file
 * system (a loop-mounted file, mounted inside the rig `main` daemon's private mount namespace
 * with nsenter), VMs created stopped from the tiny test disk with an SSH key (so a seed ISO
 * is written too). Checked, in order:
 *
 * 1. the pool looks roomy to libvirt and rcloud, but the file system is full (a filler file
 *    written behind libvirt's back): the create's volume writes fail with ENOSPC → 507
 *    `insufficient_storage`, and no volume, file or domain of it is left;
 *    also when the file system has room for the first volumes but not the rest (the volumes
 *    made before the failing write are removed);
 * 2. the filler gone, the same create fits: 201; its delete leaves the pool directory empty;
 * 3. the file system nearly full and libvirt told so (pool refresh): the create is refused up
 *    front → 507 naming the pool, its free space and what was asked; nothing written;
 * 4. room again: a create is 201, and its delete leaves the pool empty.
 *
 * runStorageFullQemu() does the same on the qemu driver: its state directory on such a file
 * system mounted in this process's mount namespace, the host's (no libvirt: step 1 relies on rcloud's
 * 2-second facts cache having read the file system before it was filled, and is tried again
 * when the cache expired first).
 *
 * `bun bench/storage-full.ts` runs both (needs the rig: RCLOUD_RIG_DIR) and prints one JSON
 * line; `bun run chaos` calls runStorageFull(). Every mount, loop device and file it makes is
 * removed at the end, by what it made (the loop device by its path).
 */
import { mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { LibvirtClient, remoteProcedures as P } from "../src/libvirt/index.ts";
import { tinyDiskImageDir } from "../test/helpers/guest.ts";
import { removePool, rig, unixUri } from "../test/helpers/rig.ts";
import { startTestServer, waitHealthy, type TestServer } from "../test/helpers/server.ts";
import { makeSshKey } from "../test/helpers/ssh.ts";

const MiB = 1024 ** 2;
/** Small enough to fill in a moment, big enough for ext4's journal and a few tiny VMs. */
const FS_MIB = 64;
/** vm_defaults.pool_reserve_mb for the run: a few MiB, so a 64 MiB pool admits VMs. */
const RESERVE_MIB = 4;
/** Free space left for step 1b: the root overlay (qemu-img writes about 200 KiB) fits, the data disk's does not. */
const MIDWAY_FREE_BYTES = 384 * 1024;

export interface StorageFullResult {
  ok: boolean;
  /** Volumes, files and domains left behind by refused creates (must be 0). */
  orphans: number;
  detail: string;
  /** What each step answered, for the report. */
  steps: { step: string; status: number; code: string | null; message: string | null }[];
}

/** A 507 from a write that failed (src/drivers/shared/no-space.ts), not the up-front refusal. */
const viaWrite = (message: string) => message.includes("ran out of space");

function run(argv: string[]): string {
  const r = Bun.spawnSync(argv, { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${argv.join(" ")} failed (exit ${r.exitCode}): ${r.stderr.toString().trim()}`);
  return r.stdout.toString();
}

/** A command inside the mount namespace of process `pid` (where the file system is mounted); null: this one's. */
const inNs = (pid: number | null, argv: string[]) => run(pid === null ? argv : ["nsenter", "-t", String(pid), "-m", "--", ...argv]);

/** How one driver's scenario differs: where the file system is mounted, and what else to look at. */
interface Target {
  /** The mount namespace's process (libvirtd), or null for this process's own. */
  nsPid: number | null;
  /** rcloud's configuration, given the directory its VM files go to. */
  config(vmDir: string): Record<string, unknown>;
  /** The directory under the mount point VM files go to (pool or state directory). */
  vmSubdir: string;
  /** The name the refusal must mention besides the path (the pool's), if any. */
  poolName: string | null;
  /** Tells the hypervisor the file system changed (libvirt: pool refresh). */
  refresh(): Promise<void>;
  /** What a refused create left besides files: volumes, domains. */
  leftovers(name: string): Promise<string[]>;
  /** Disks made one after another (libvirt), so in step 1b the root overlay is made and the data disk fails; the qemu driver makes them at once, either may fail. */
  sequentialDisks: boolean;
  /** Where, under the VM directory, a VM's files go (everything in it is a VM's). */
  filesSubdir: string;
  close(): Promise<void>;
}

export async function runStorageFull(opts: { libvirtdPid?: number; uri?: string } = {}): Promise<StorageFullResult> {
  const r = rig();
  const pid = opts.libvirtdPid ?? r.instances.main.libvirtdPid;
  const uri = opts.uri ?? unixUri("qemu");
  const poolName = `rctest-full-${process.pid}`;
  let lv: LibvirtClient | null = null;
  const client = async () => (lv ??= await LibvirtClient.connect(uri));
  const pool = async () => (await (await client()).call(P.storagePoolLookupByName, { name: poolName })).pool;
  return scenario("libvirt", {
    nsPid: pid,
    vmSubdir: "pool",
    poolName,
    config: (vmDir) => ({ libvirt: { uri, storage_pool_name: poolName, storage_pool_path: vmDir, domain_type: "qemu" } }),
    refresh: async () => {
      await (await client()).call(P.storagePoolRefresh, { pool: await pool(), flags: 0 });
    },
    leftovers: async (name) => {
      const c = await client();
      const p = await pool();
      await c.call(P.storagePoolRefresh, { pool: p, flags: 0 });
      const vols = (await c.call(P.storagePoolListAllVolumes, { pool: p, need_results: 1, flags: 0 })).vols.map((v) => `volume ${v.name}`);
      const doms = await c.call(P.domainLookupByName, { name }).then(() => [`domain ${name}`], () => []);
      return [...vols, ...doms];
    },
    filesSubdir: ".",
    sequentialDisks: true,
    close: async () => {
      if (!lv) return;
      await removePool(lv, poolName).catch(() => {});
      await lv.close().catch(() => {});
    },
  });
}

export async function runStorageFullQemu(): Promise<StorageFullResult> {
  return scenario("qemu", {
    nsPid: null,
    vmSubdir: "state",
    poolName: null,
    config: (vmDir) => ({ driver: "qemu", qemu: { accel: "tcg", state_dir: vmDir } }),
    refresh: async () => {},
    leftovers: async () => [],
    filesSubdir: "vms",
    sequentialDisks: false,
    close: async () => {},
  });
}

async function scenario(kind: string, t: Target): Promise<StorageFullResult> {
  const r = rig();
  for (const tool of ["nsenter", "losetup", "mkfs.ext4", "mount", "umount", "fallocate"]) {
    if (Bun.spawnSync(["sh", "-c", 'command -v "$1"', "sh", tool]).exitCode !== 0) throw new Error(`${tool} missing: install util-linux and e2fsprogs (scripts/lib/install-deps.sh)`);
  }
  const pid = t.nsPid;
  const dir = join(r.rigDir, `storage-full-${kind}-${process.pid}`);
  const img = join(dir, "fs.img");
  const mnt = join(dir, "mnt");
  const vmDir = join(mnt, t.vmSubdir);
  const filler = join(mnt, "filler");
  const steps: StorageFullResult["steps"] = [];
  const problems: string[] = [];
  let orphans = 0;
  let loop: string | null = null;
  let mounted = false;
  let server: TestServer | null = null;
  const imagesDir = join(r.rigDir, `storage-full-images-${kind}-${process.pid}`);

  mkdirSync(mnt, { recursive: true });
  run(["truncate", "-s", `${FS_MIB}M`, img]);
  // -m 0: libvirtd runs as root, and root may write ext4's reserved blocks.
  run(["mkfs.ext4", "-F", "-q", "-m", "0", img]);
  try {
    loop = run(["losetup", "--find", "--show", img]).trim();
    inNs(pid, ["mount", loop, mnt]);
    mounted = true;
    inNs(pid, ["mkdir", "-p", vmDir]);

    tinyDiskImageDir(imagesDir.slice(r.rigDir.length + 1));
    const base = t.config(vmDir);
    server = await startTestServer({
      ...base,
      images: { base_images_dir: imagesDir },
      vm_defaults: { network_mode: "none", memory_mb: 128, vcpus: 1, root_disk_gb: 1, pool_reserve_mb: RESERVE_MIB },
    });
    await waitHealthy(server);
    const s = server;
    const key = makeSshKey();
    const body = (name: string) => ({ name, image: "rcloud-tiny.qcow2", ssh_public_keys: [key.publicKey], start: false, extra_disks: [{ size_gb: 100 }] });
    const vmFiles = () => inNs(pid, ["find", join(vmDir, t.filesSubdir), "-mindepth", "1"]).split("\n").filter((f) => f !== "");
    const freeBytes = () => Number(inNs(pid, ["stat", "-f", "-c", "%a*%S", mnt]).trim().split("*").reduce((a, b) => a * Number(b), 1));
    // fallocate of every free byte fails (the extent tree needs blocks too): 256 KiB short at least.
    const fill = (leaveBytes: number) => inNs(pid, ["fallocate", "-l", String(Math.max(0, freeBytes() - Math.max(leaveBytes, 256 * 1024))), filler]);
    const unfill = () => inNs(pid, ["rm", "-f", filler, `${filler}-tail`]);
    // rcloud reads a host's facts again after 2 s (src/vm/fleet.ts).
    const factsAge = () => Bun.sleep(2_500);
    const create = async (step: string, name: string) => {
      const res = await s.req("POST", "/api/v1/vms", body(name));
      steps.push({ step, status: res.status, code: res.json?.error?.code ?? null, message: res.json?.error?.message ?? null });
      return res;
    };
    const mention = [vmDir, ...(t.poolName ? [t.poolName] : [])];
    const checkRefused = async (step: string, name: string, res: { status: number; json: any; text: string }, mustMention: string[]) => {
      if (res.status !== 507 || res.json?.error?.code !== "insufficient_storage") problems.push(`${step}: expected 507 insufficient_storage, got ${res.status} ${res.text.slice(0, 300)}`);
      const msg: string = res.json?.error?.message ?? "";
      for (const m of mustMention) if (!msg.includes(m)) problems.push(`${step}: the message does not name ${m}: ${msg}`);
      const left = [...vmFiles().map((f) => `file ${f}`), ...(await t.leftovers(name))];
      orphans += left.length;
      if (left.length) problems.push(`${step}: left behind ${left.join(", ")}`);
    };
    /** A create whose write must fail: the facts were read before the file system was filled (tried again if they expired first). */
    const expectWriteFails = async (step: string, name: string, leaveBytes: number) => {
      for (let attempt = 1; ; attempt++) {
        unfill();
        await t.refresh();
        await factsAge();
        await s.req("GET", "/api/v1/hosts"); // facts read now: the file system roomy
        fill(leaveBytes);
        // with nothing to leave, the last blocks are filled by writing until ENOSPC.
        if (leaveBytes === 0) Bun.spawnSync([...(pid === null ? [] : ["nsenter", "-t", String(pid), "-m", "--"]), "dd", "if=/dev/zero", `of=${filler}-tail`, "bs=4096"], { stderr: "pipe" });
        const res = await create(step, `${name}-${attempt}`);
        if (res.status === 507 && !viaWrite(res.json?.error?.message ?? "") && attempt < 3) {
          steps.pop(); // refused up front: the facts were older than the fill; again
          continue;
        }
        if (!viaWrite(res.json?.error?.message ?? "")) problems.push(`${step}: not a failed write: ${res.text.slice(0, 300)}`);
        await checkRefused(step, `${name}-${attempt}`, res, mention);
        return res.json?.error?.message ?? "";
      }
    };
    const expectFits = async (step: string, name: string) => {
      const res = await create(step, name);
      if (res.status !== 201) {
        problems.push(`${step}: expected 201, got ${res.status} ${res.text.slice(0, 300)}`);
        return;
      }
      const del = await s.req("DELETE", `/api/v1/vms/${res.json.id}`);
      if (del.status !== 200) problems.push(`${step}: delete answered ${del.status} ${del.text.slice(0, 200)}`);
      const left = vmFiles();
      if (left.length) problems.push(`${step}: after the delete there is still ${left.join(", ")}`);
    };

    // 1. Roomy to the hypervisor and to rcloud, full on disk.
    await expectWriteFails("write fails (ENOSPC)", `rctest-full-a-${process.pid}`, 0);
    // 1b. Room for the root overlay but not for everything: the volumes made before the
    // failing one are removed.
    const midway = await expectWriteFails("write fails midway (ENOSPC)", `rctest-full-m-${process.pid}`, MIDWAY_FREE_BYTES);
    if (t.sequentialDisks && midway.includes("root.qcow2")) problems.push(`write fails midway: the root overlay was the write that failed, nothing to roll back: ${midway}`);

    // 2. The filler gone: the same request fits.
    unfill();
    await t.refresh();
    await factsAge();
    await expectFits("fits after ENOSPC", `rctest-full-b-${process.pid}`);

    // 3. Nearly full, and the hypervisor knows: refused before anything is written.
    fill((RESERVE_MIB * MiB) / 2);
    await t.refresh();
    await factsAge();
    await checkRefused("refused up front", `rctest-full-c-${process.pid}`, await create("refused up front", `rctest-full-c-${process.pid}`), [...mention, "MiB free", "writes"]);

    // 4. Room again.
    unfill();
    await t.refresh();
    await factsAge();
    await expectFits("fits again", `rctest-full-d-${process.pid}`);
  } catch (e) {
    problems.push(`scenario failed: ${(e as Error).message}`);
  } finally {
    await server?.stop().catch(() => {});
    await t.close();
    if (mounted) {
      try {
        inNs(pid, ["umount", mnt]);
      } catch (e) {
        problems.push(`cleanup: ${(e as Error).message}`);
      }
    }
    if (loop) {
      try {
        run(["losetup", "-d", loop]);
      } catch (e) {
        problems.push(`cleanup: ${(e as Error).message}`);
      }
    }
    rmSync(dir, { recursive: true, force: true });
    rmSync(imagesDir, { recursive: true, force: true });
  }
  const ok = problems.length === 0;
  return { ok, orphans, detail: ok ? `${steps.length} creates as expected on a ${FS_MIB} MiB ${kind} pool` : problems.join("; "), steps };
}

if (import.meta.main) {
  const libvirt = await runStorageFull();
  const qemu = await runStorageFullQemu();
  console.log(JSON.stringify({ ok: libvirt.ok && qemu.ok, orphans: libvirt.orphans + qemu.orphans, libvirt, qemu }));
  process.exit(libvirt.ok && qemu.ok ? 0 : 1);
}
