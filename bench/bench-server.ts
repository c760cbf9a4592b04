/** Shared by the QEMU-driver benchmarks (boot, kernel, revert): the test disk, a work directory with an SSH key, and an in-process rcloud on it. */
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { stringify } from "yaml";
import { loadConfig } from "../src/config/index.ts";
import { startServer } from "../src/server.ts";

const repo = resolve(import.meta.dir, "..");

/** Runs `cmd` in the repository; its stdout. */
export function sh(cmd: string[]): string {
  const r = Bun.spawnSync(cmd, { cwd: repo, stdout: "pipe", stderr: "inherit" });
  if (r.exitCode !== 0) throw new Error(`${cmd.join(" ")} failed (${r.exitCode})`);
  return r.stdout.toString();
}

/** The small bootable disk image (scripts/lib/disk-image.sh), or $RCLOUD_TEST_DISK_IMAGE. */
export function benchDisk(): string {
  const disk = process.env.RCLOUD_TEST_DISK_IMAGE ?? sh(["bash", "scripts/lib/disk-image.sh"]).trim().split("\n")[0]!;
  if (!existsSync(disk)) throw new Error(`${disk} missing: run scripts/lib/disk-image.sh`);
  return disk;
}

export interface BenchServer {
  /** The work directory (removed by stop). */
  work: string;
  /** rcloud's base images directory: the disk as rcloud-tiny.qcow2. */
  images: string;
  keyFile: string;
  publicKey: string;
  url: string;
  /** One API call; throws on a status other than 2xx. */
  api(method: string, path: string, body?: unknown): Promise<any>;
  /** Stops rcloud, kills QEMUs it left running (VMs outlive rcloud by design) and removes the work directory. */
  stop(): Promise<void>;
}

/** rcloud on the direct QEMU driver under TCG, user networking, guests of `memoryMb`; healthy when this returns. */
export async function startBenchServer(opts: { prefix: string; disk: string; memoryMb: number }): Promise<BenchServer> {
  const work = mkdtempSync(opts.prefix);
  chmodSync(work, 0o711); // QEMU runs as qemu.run_as (rcloud-qemu) when this runs as root: it must reach the state directory
  const images = join(work, "images");
  mkdirSync(images);
  copyFileSync(opts.disk, join(images, "rcloud-tiny.qcow2"));
  const keyFile = join(work, "id_ed25519");
  sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "rcloud-bench", "-f", keyFile]);
  const publicKey = readFileSync(`${keyFile}.pub`, "utf8").trim();
  const cfgFile = join(work, "rcloud.yaml");
  writeFileSync(
    cfgFile,
    stringify({
      driver: "qemu",
      logging: { level: "error", format: "text" },
      qemu: { accel: "tcg", state_dir: join(work, "state") },
      images: { base_images_dir: images },
      vm_defaults: { network_mode: "user", user_network_restrict: true, memory_mb: opts.memoryMb, vcpus: 1, root_disk_gb: 1, stop_timeout_s: 5 },
    }),
  );
  const server = await startServer({ config: loadConfig({ file: cfgFile, env: {} }), port: 0 });
  const stop = async () => {
    await server.stop();
    // Anything still running from a failed round: QEMUs of ours, found by their pidfiles.
    for (const f of new Bun.Glob("state/vms/*/qemu.pid").scanSync({ cwd: work })) {
      const pid = Number(readFileSync(join(work, f), "utf8").trim());
      try {
        if (readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(work)) process.kill(pid, "SIGKILL");
      } catch {
        // gone
      }
    }
    rmSync(work, { recursive: true, force: true });
  };
  try {
    for (let i = 0; ; i++) {
      const health = await fetch(`${server.url}/api/v1/health`);
      if (health.status === 200) break;
      if (i > 600) throw new Error(`rcloud did not become healthy within 60 s: ${await health.text()}`);
      await Bun.sleep(100);
    }
  } catch (e) {
    await stop();
    throw e;
  }
  const api = async (method: string, path: string, body?: unknown): Promise<any> => {
    const res = await fetch(`${server.url}/api/v1${path}`, { method, headers: body ? { "content-type": "application/json" } : {}, body: body ? JSON.stringify(body) : undefined });
    const json = (await res.json()) as any;
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
    return json;
  };
  return { work, images, keyFile, publicKey, url: server.url, api, stop };
}
