/**
 * Access to the test rig started by scripts/test (scripts/lib/rig.sh up): isolated
 * libvirtd instances and a tiny bootable guest. Tests fail loudly when it is missing.
 */
import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { remoteProcedures as P, type LibvirtClient } from "../../src/libvirt/index.ts";

export interface RigInstance {
  socket: string | null;
  tcpPort: number;
  libvirtdPid: number;
  virtlogdPid: number;
  logFile: string;
}

export type HostTransport = "tls" | "ssh" | "tcp";
export type HostDir = "pool" | "images" | "kernels";

/** A fleet host: its own mount and UTS namespace, reached over TLS, SSH and TCP (scripts/lib/rig.sh). */
export interface RigHost {
  hostname: string;
  /** The transport of `uri` (hosta tls, hostb ssh, hostc tcp). */
  transport: HostTransport;
  uri: string;
  uris: Record<HostTransport, string>;
  tcpPort: number;
  tlsPort: number;
  sshPort: number;
  libvirtdPid: number;
  virtlogdPid: number;
  sshdPid: number;
  logFile: string;
  sshdLogFile: string;
  /** As the host's libvirtd sees them (/srv/rcloud/…); they do not exist outside its namespace. */
  paths: Record<HostDir, string>;
  /** The same directories as seen from outside (rig-private). */
  rigPaths: Record<HostDir, string>;
  /** The test kernel and initrd inside the host's kernels directory. */
  guest: { kernel: string; initrd: string };
  /** Files the images directory started with. */
  images: string[];
}

export interface Rig {
  rigDir: string;
  instances: { main: RigInstance; remote: RigInstance; fault: RigInstance };
  hosts: { hosta: RigHost; hostb: RigHost; hostc: RigHost };
  /** pkipath= directories: the good client, a CA the hosts do not use, a client cert that CA signed, no client cert. */
  tls: { caFile: string; pkipath: string; rogueCaPkipath: string; rogueClientPkipath: string; noClientPkipath: string };
  ssh: { user: string; keyfile: string; knownHosts: string; emptyKnownHosts: string };
  guest: { kernel: string; initrd: string };
}

const repo = resolve(import.meta.dir, "../..");
const rigDir = process.env.RCLOUD_RIG_DIR ?? "/tmp/rcloud-rig";

export function rig(): Rig {
  const file = join(rigDir, "env.json");
  if (!existsSync(file)) {
    throw new Error(
      `test rig not running (${file} missing). Run the suite with ./scripts/test, or start the rig with ` +
        `scripts/lib/rig.sh up (needs root and the packages from scripts/lib/install-deps.sh).`,
    );
  }
  return JSON.parse(readFileSync(file, "utf8")) as Rig;
}

export type InstanceName = keyof Rig["instances"];
export type HostName = keyof Rig["hosts"];
export const HOST_NAMES: HostName[] = ["hosta", "hostb", "hostc"];

export function unixUri(driver: "qemu" | "test", name: InstanceName = "main"): string {
  const inst = rig().instances[name];
  if (!inst.socket) throw new Error(`rig instance ${name} has no unix socket`);
  return driver === "qemu" ? `qemu+unix:///system?socket=${inst.socket}` : `test+unix:///default?socket=${inst.socket}`;
}

export function tcpUri(driver: "qemu" | "test", name: InstanceName): string {
  const port = rig().instances[name].tcpPort;
  return driver === "qemu" ? `qemu+tcp://127.0.0.1:${port}/system` : `test+tcp://127.0.0.1:${port}/default`;
}

/** Runs a rig.sh subcommand (stop-instance, start-instance, …) and returns the fresh rig. */
export function rigCommand(...args: string[]): Rig {
  const r = Bun.spawnSync(["bash", join(repo, "scripts/lib/rig.sh"), ...args], { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`rig.sh ${args.join(" ")} failed: ${r.stderr.toString()}`);
  return rig();
}

/** `libvirtd --version` → "9.0.0": the daemon the rig runs, whatever this machine installed. */
export function installedLibvirtVersion(): string {
  const r = Bun.spawnSync(["libvirtd", "--version"], { stdout: "pipe", stderr: "pipe" });
  const v = /(\d+\.\d+\.\d+)\s*$/.exec(r.stdout.toString().trim())?.[1];
  if (r.exitCode !== 0 || !v) throw new Error(`libvirtd --version failed (install libvirt-daemon): ${r.stderr.toString()}${r.stdout.toString()}`);
  return v;
}

/** A name unique to this test run, so parallel or leftover objects never collide. */
export function uniqueName(prefix: string): string {
  return `rctest-${prefix}-${process.pid}-${Math.floor(Math.random() * 1e6)}`;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `fn` until it returns a truthy value or the deadline passes. */
export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | null | false> | T | undefined | null | false, timeoutMs = 20_000, stepMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await sleep(stepMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ""}`);
}

/**
 * Stops and forgets a storage pool a test created (no error if it never existed), and the
 * pools rcloud derived from its name for the host's images and kernels (`-images`, `-kernels`).
 * The directories and files stay.
 */
export async function removePool(lv: LibvirtClient, name: string): Promise<void> {
  for (const n of [name, `${name}-images`, `${name}-kernels`]) {
    try {
      const { pool } = await lv.call(P.storagePoolLookupByName, { name: n });
      await lv.call(P.storagePoolDestroy, { pool }).catch(() => {});
      await lv.call(P.storagePoolUndefine, { pool }).catch(() => {});
    } catch {
      // never created, or already gone
    }
  }
}
