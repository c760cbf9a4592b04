/**
 * Directories shared with guests, on a host whose file system rcloud sees (the QEMU driver's,
 * and a libvirt host on this machine): a directory inside one of vm_defaults.share_dirs,
 * judged by where the path really leads (symbolic links and ".." followed as realpath(3)
 * does), with one answer for every path outside them so a caller cannot probe the host.
 */
import { existsSync, realpathSync, statSync } from "node:fs";
import { isAbsolute } from "node:path";
import { containedPath, resolveLoosely } from "../../util/contained-path.ts";
import { DriverError } from "../types.ts";

/**
 * The real path of `path` when it is a directory inside one of `dirs`. DriverError
 * "not_found" when outside every one of them (or there are none: sharing is off),
 * "invalid_state" when inside but missing or not a directory.
 */
export function localShareDir(dirs: readonly string[], path: string): string {
  if (dirs.length === 0) throw new DriverError("not_found", "sharing host directories is off on this host (an operator enables it by listing directories in vm_defaults.share_dirs)");
  if (typeof path !== "string" || !isAbsolute(path) || path.includes("\0")) throw new DriverError("not_found", "must be an absolute path");
  for (const dir of dirs) {
    const real = containedPath(dir, path) ?? sameDir(dir, path);
    if (real === null) continue;
    if (!existsSync(real)) throw new DriverError("invalid_state", `${path} does not exist in ${dir}`);
    if (!statSync(real).isDirectory()) throw new DriverError("invalid_state", `${path} is not a directory`);
    return real;
  }
  throw new DriverError("not_found", `must be a directory inside ${dirs.join(", ")} (vm_defaults.share_dirs)`);
}

/**
 * Before each launch of a VM (a start, a revert that starts it): every share must still lead
 * to the directory resolved at create, and that directory must still be inside `dirs`. A
 * directory on the way may have changed since: another guest sharing a parent read-write can
 * replace it with a symbolic link to anywhere on the host, which virtiofsd and QEMU would
 * follow. DriverError("share_not_allowed") naming the share otherwise; nothing is started.
 */
export function checkSharesUnmoved(dirs: readonly string[], vm: string, shares: readonly { hostPath: string; tag: string }[]): void {
  for (const s of shares) {
    let real: string | null = null;
    let why = "";
    try {
      real = localShareDir(dirs, s.hostPath);
    } catch (e) {
      if (!(e instanceof DriverError)) throw e;
      // Outside share_dirs: one answer, whatever the path now leads to (no probing the host).
      why = e.code === "not_found" ? "no longer leads to a directory inside vm_defaults.share_dirs" : e.message;
    }
    if (real === s.hostPath) continue;
    if (real !== null) why = `now leads to ${real}, not to the directory shared at create`;
    throw new DriverError(
      "share_not_allowed",
      `${vm} was not started: its share ${s.tag} (${s.hostPath}) ${why} (a directory on its way was replaced, by a symbolic link for instance, or share_dirs changed); put the directory back on the host, or delete the VM and create it with a share that is allowed`,
    );
  }
}

/** The share directory itself, when `path` leads to it (containedPath counts only what lies below). */
function sameDir(dir: string, path: string): string | null {
  try {
    const root = realpathSync(dir);
    return resolveLoosely(path) === root ? root : null;
  } catch {
    return null;
  }
}
