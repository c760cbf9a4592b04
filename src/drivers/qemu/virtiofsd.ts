/**
 * One virtiofsd per virtiofs share of a running VM: started before its QEMU (which connects
 * to the socket at start), recorded by PID in the VM's directory, stopped with the VM by PID
 * after checking the process is still the one serving that socket. virtiofsd runs as rcloud's
 * user (root: its namespace sandbox needs it), never through a shell with caller text pasted in.
 *
 * Read-only: Debian bookworm's C virtiofsd (QEMU 7.2) has no read-only option, so a read-only
 * share is exported from a read-only bind mount of the directory made in a mount namespace of
 * virtiofsd's own (util-linux unshare + mount): the host kernel refuses writes (EROFS) whatever
 * the guest does. The guest also mounts it `ro`.
 */
import { closeSync, existsSync, openSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { DriverError } from "../types.ts";
import { pidAlive, readPidfile, waitUntil } from "./process.ts";
import type { StoredShare, VmPaths } from "./state.ts";

export const VIRTIOFSD = "/usr/lib/qemu/virtiofsd";

/** fuse's -o list is split at commas; a backslash escapes the next character. */
export function fuseOptValue(v: string): string {
  return v.replace(/[\\,]/g, (c) => `\\${c}`);
}

/**
 * The command that serves `share` on `socket`. A read-only share goes through a private mount
 * namespace: sh gets the directory and the rest of the command as arguments ("$1", "$@"), not
 * spliced into its script.
 */
export function virtiofsdArgv(share: StoredShare, socket: string, binary = VIRTIOFSD): string[] {
  const daemon = [binary, `--socket-path=${socket}`, "-o", `source=${fuseOptValue(share.host_path)}`, "-o", "cache=auto", "-o", "sandbox=namespace"];
  if (!share.readonly) return daemon;
  const script = 'mount --bind -- "$1" "$1" && mount -o remount,bind,ro -- "$1" "$1" && shift && exec "$@"';
  return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "rcloud-virtiofsd-ro", share.host_path, ...daemon];
}

/** `pid` is alive and serves `socket` (a PID reused by another program is not ours). */
export function isOurVirtiofsd(pid: number, socket: string): boolean {
  if (!pidAlive(pid)) return false;
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").includes(`--socket-path=${socket}`);
  } catch {
    return false;
  }
}

/** The live virtiofsd PIDs of a VM's shares (from their pidfiles). */
export function runningVirtiofsds(shares: readonly StoredShare[], p: VmPaths): number[] {
  const pids: number[] = [];
  shares.forEach((s, i) => {
    if (s.transport !== "virtiofs") return;
    const { pidfile, socket } = p.share(i);
    const pid = readPidfile(pidfile);
    if (pid !== null && isOurVirtiofsd(pid, socket)) pids.push(pid);
  });
  return pids;
}

/**
 * Starts the virtiofsd of every virtiofs share (detached, in `prefix(i)`: a systemd scope of
 * its own when there is one) and waits for each socket; `own` hands a socket to the user QEMU
 * runs as. On failure the ones started are stopped and the error says what virtiofsd said.
 */
export async function startVirtiofsds(
  shares: readonly StoredShare[],
  p: VmPaths,
  opts: { prefix: (i: number) => string[]; own: (path: string) => void; binary?: string; timeoutMs?: number },
): Promise<void> {
  for (const [i, share] of shares.entries()) {
    if (share.transport !== "virtiofs") continue;
    const f = p.share(i);
    rmSync(f.socket, { force: true });
    rmSync(f.pidfile, { force: true });
    if (!existsSync(share.host_path)) {
      await stopVirtiofsds(shares, p);
      throw new DriverError("failed", `shared directory ${share.host_path} (tag ${share.tag}) no longer exists`);
    }
    const logFd = openSync(f.log, "a", 0o640);
    const logStart = statSync(f.log).size;
    let proc;
    try {
      proc = Bun.spawn([...opts.prefix(i), ...virtiofsdArgv(share, f.socket, opts.binary)], { stdin: "ignore", stdout: logFd, stderr: logFd, detached: true });
    } catch (e) {
      await stopVirtiofsds(shares, p);
      throw new DriverError("unavailable", `cannot run virtiofsd for share ${share.tag}: ${(e as Error).message} (install qemu-system-common, which has ${VIRTIOFSD})`, { cause: e });
    } finally {
      closeSync(logFd);
    }
    writeFileSync(f.pidfile, `${proc.pid}\n`);
    let exited = false;
    void proc.exited.then(() => void (exited = true));
    const isSocket = () => {
      try {
        return statSync(f.socket).isSocket();
      } catch {
        return false;
      }
    };
    const ready = await waitUntil(() => exited || isSocket(), opts.timeoutMs ?? 30_000, 20);
    if (!ready || exited) {
      proc.kill("SIGKILL");
      await stopVirtiofsds(shares, p);
      const said = readFileSync(f.log).subarray(logStart).toString("utf8").trim().split("\n").slice(-3).join("; ");
      throw new DriverError("failed", `virtiofsd for share ${share.tag} (${share.host_path}) ${exited ? "exited" : "did not open its socket"}: ${said || "no message"}`);
    }
    proc.unref(); // it lives as long as the VM, which may outlive rcloud
    opts.own(f.socket);
  }
}

/** Stops every virtiofsd of the VM by PID (SIGTERM, then SIGKILL) and waits until they are gone. */
export async function stopVirtiofsds(shares: readonly StoredShare[], p: VmPaths): Promise<void> {
  const pids = runningVirtiofsds(shares, p);
  const alive = () => pids.filter((pid) => pidAlive(pid));
  for (const pid of pids) signal(pid, "SIGTERM");
  if (!(await waitUntil(() => alive().length === 0, 3_000))) for (const pid of alive()) signal(pid, "SIGKILL");
  if (!(await waitUntil(() => alive().length === 0, 10_000))) throw new DriverError("failed", `virtiofsd (PID ${alive().join(", ")}) survived SIGKILL`);
  shares.forEach((_, i) => {
    rmSync(p.share(i).socket, { force: true });
    rmSync(p.share(i).pidfile, { force: true });
  });
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // gone meanwhile
  }
}
