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
 * `bun bench/storage-full.ts` runs it alone (needs the rig: RCLOUD_RIG_DIR) and prints one JSON
 * line; `bun run chaos` calls runStorageFull(). Every mount, loop device and file it makes is
 * removed at the end, by what it made (the loop device by its path).
 */
import { mkdirSync, rmSync, truncateSync } from "node:fs";
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
/** Free space left for step 1b: a root overlay (qemu-img writes about 200 KiB) fits, the data disk's too, the seed not. */
const MIDWAY_FREE_BYTES = 384 * 1024;

export interface StorageFullResult {
  ok: boolean;
  /** Volumes, files and domains left behind by refused creates (must be 0). */
  orphans: number;
  detail: string;
  /** What each step answered, for the report. */
  steps: { step: string; status: number; code: string | null; message: string | null }[];
}

function run(argv: string[]): string {
  const r = Bun.spawnSync(argv, { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${argv.join(" ")} failed (exit ${r.exitCode}): ${r.stderr.toString().trim()}`);
  return r.stdout.toString();
}

/** A command inside the libvirtd's mount namespace (where the file system is mounted). */
const inNs = (pid: number, argv: string[]) => run(["nsenter", "-t", String(pid), "-m", "--", ...argv]);

export async function runStorageFull(opts: { libvirtdPid?: number; uri?: string } = {}): Promise<StorageFullResult> {
  const r = rig();
  const pid = opts.libvirtdPid ?? r.instances.main.libvirtdPid;
  const uri = opts.uri ?? unixUri("qemu");
  for (const tool of ["nsenter", "losetup", "mkfs.ext4", "mount", "umount", "fallocate"]) {
    if (Bun.spawnSync(["sh", "-c", 'command -v "$1"', "sh", tool]).exitCode !== 0) throw new Error(`${tool} missing: install util-linux and e2fsprogs (scripts/lib/install-deps.sh)`);
  }
  const dir = join(r.rigDir, `storage-full-${process.pid}`);
  const img = join(dir, "fs.img");
  const mnt = join(dir, "mnt");
  const poolPath = join(mnt, "pool");
  const filler = join(mnt, "filler");
  const poolName = `rctest-full-${process.pid}`;
  const steps: StorageFullResult["steps"] = [];
  const problems: string[] = [];
  let orphans = 0;
  let loop: string | null = null;
  let mounted = false;
  let server: TestServer | null = null;
  let lv: LibvirtClient | null = null;

  mkdirSync(mnt, { recursive: true });
  try {
    truncateSync(img, 0);
  } catch {
    /* not there yet */
  }
  run(["truncate", "-s", `${FS_MIB}M`, img]);
  // -m 0: libvirtd runs as root, and root may write ext4's reserved blocks.
  run(["mkfs.ext4", "-F", "-q", "-m", "0", img]);
  try {
    loop = run(["losetup", "--find", "--show", img]).trim();
    inNs(pid, ["mount", loop, mnt]);
    mounted = true;

    lv = await LibvirtClient.connect(uri);
    const imagesDir = tinyDiskImageDir(`storage-full-images-${process.pid}`);
    server = await startTestServer({
      libvirt: { uri, storage_pool_name: poolName, storage_pool_path: poolPath, domain_type: "qemu" },
      images: { base_images_dir: imagesDir },
      vm_defaults: { network_mode: "none", memory_mb: 128, vcpus: 1, root_disk_gb: 1, pool_reserve_mb: RESERVE_MIB },
    });
    await waitHealthy(server);
    const s = server;
    const key = makeSshKey();
    const body = (name: string) => ({ name, image: "rcloud-tiny.qcow2", ssh_public_keys: [key.publicKey], start: false, extra_disks: [{ size_gb: 100 }] });
    const poolFiles = () => inNs(pid, ["ls", "-A", poolPath]).split("\n").filter((f) => f !== "");
    const refreshPool = async () => {
      const { pool } = await lv!.call(P.storagePoolLookupByName, { name: poolName });
      await lv!.call(P.storagePoolRefresh, { pool, flags: 0 });
    };
    const freeBytes = () => Number(inNs(pid, ["stat", "-f", "-c", "%a*%S", mnt]).trim().split("*").reduce((a, b) => a * Number(b), 1));
    // rcloud reads a host's facts again after 2 s (src/vm/fleet.ts).
    const factsAge = () => Bun.sleep(2_500);
    /** What a refused create left: pool files, libvirt volumes and domains named after it. */
    const leftovers = async (name: string): Promise<string[]> => {
      const left = poolFiles();
      const { pool } = await lv!.call(P.storagePoolLookupByName, { name: poolName });
      await lv!.call(P.storagePoolRefresh, { pool, flags: 0 });
      const vols = (await lv!.call(P.storagePoolListAllVolumes, { pool, need_results: 1, flags: 0 })).vols.map((v) => `volume ${v.name}`);
      const doms = await lv!.call(P.domainLookupByName, { name }).then(() => [`domain ${name}`], () => []);
      return [...left.map((f) => `file ${f}`), ...vols, ...doms];
    };
    const create = async (step: string, name: string) => {
      const res = await s.req("POST", "/api/v1/vms", body(name));
      steps.push({ step, status: res.status, code: res.json?.error?.code ?? null, message: res.json?.error?.message ?? null });
      return res;
    };
    const expectRefused = async (step: string, name: string, mustMention: string[]) => {
      const res = await create(step, name);
      if (res.status !== 507 || res.json?.error?.code !== "insufficient_storage") problems.push(`${step}: expected 507 insufficient_storage, got ${res.status} ${res.text.slice(0, 300)}`);
      const msg: string = res.json?.error?.message ?? "";
      for (const m of mustMention) if (!msg.includes(m)) problems.push(`${step}: the message does not name ${m}: ${msg}`);
      const left = await leftovers(name);
      orphans += left.length;
      if (left.length) problems.push(`${step}: left behind ${left.join(", ")}`);
    };
    const expectFits = async (step: string, name: string) => {
      const res = await create(step, name);
      if (res.status !== 201) {
        problems.push(`${step}: expected 201, got ${res.status} ${res.text.slice(0, 300)}`);
        return;
      }
      const del = await s.req("DELETE", `/api/v1/vms/${res.json.id}`);
      if (del.status !== 200) problems.push(`${step}: delete answered ${del.status} ${del.text.slice(0, 200)}`);
      const left = poolFiles();
      if (left.length) problems.push(`${step}: after the delete the pool still holds ${left.join(", ")}`);
    };

    // 1. Roomy to libvirt (refreshed while empty) and to rcloud, full on disk.
    await refreshPool();
    await s.req("GET", "/api/v1/hosts");
    inNs(pid, ["fallocate", "-l", String(Math.max(0, freeBytes() - 256 * 1024)), filler]);
    // fallocate may leave a few blocks; fill them too so the first write fails.
    Bun.spawnSync(["nsenter", "-t", String(pid), "-m", "--", "dd", "if=/dev/zero", `of=${filler}-tail`, "bs=4096"], { stderr: "pipe" });
    await expectRefused("write fails (ENOSPC)", `rctest-full-a-${process.pid}`, [poolName, poolPath]);

    // 1b. Room for the root overlay but not for everything: the volumes made before the
    // failing one are rolled back.
    inNs(pid, ["rm", "-f", filler, `${filler}-tail`]);
    inNs(pid, ["fallocate", "-l", String(Math.max(0, freeBytes() - MIDWAY_FREE_BYTES)), filler]);
    await expectRefused("write fails midway (ENOSPC)", `rctest-full-m-${process.pid}`, [poolName, poolPath]);
    const midway = steps.at(-1)?.message ?? "";
    if (midway.includes("-root.qcow2")) problems.push(`write fails midway: the root overlay was the write that failed, nothing to roll back: ${midway}`);

    // 2. The filler gone: the same request fits.
    inNs(pid, ["rm", "-f", filler, `${filler}-tail`]);
    await refreshPool();
    await factsAge();
    await expectFits("fits after ENOSPC", `rctest-full-b-${process.pid}`);

    // 3. Nearly full, and libvirt knows: refused before anything is written.
    inNs(pid, ["fallocate", "-l", String(Math.max(0, freeBytes() - (RESERVE_MIB * MiB) / 2)), filler]);
    await refreshPool();
    await factsAge();
    await expectRefused("refused up front", `rctest-full-c-${process.pid}`, [poolName, poolPath, "MiB free", "writes"]);

    // 4. Room again.
    inNs(pid, ["rm", "-f", filler]);
    await refreshPool();
    await factsAge();
    await expectFits("fits again", `rctest-full-d-${process.pid}`);
  } catch (e) {
    problems.push(`scenario failed: ${(e as Error).message}`);
  } finally {
    await server?.stop().catch(() => {});
    if (lv) {
      await removePool(lv, poolName).catch(() => {});
      await lv.close().catch(() => {});
    }
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
    rmSync(join(r.rigDir, `storage-full-images-${process.pid}`), { recursive: true, force: true });
  }
  const ok = problems.length === 0;
  return { ok, orphans, detail: ok ? `${steps.length} creates as expected on a ${FS_MIB} MiB pool` : problems.join("; "), steps };
}

if (import.meta.main) {
  const result = await runStorageFull();
  console.log(JSON.stringify(result));
  process.exit(result.ok ? 0 : 1);
}
