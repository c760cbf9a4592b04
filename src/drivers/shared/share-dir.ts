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

/** The share directory itself, when `path` leads to it (containedPath counts only what lies below). */
function sameDir(dir: string, path: string): string | null {
  try {
    const root = realpathSync(dir);
    return resolveLoosely(path) === root ? root : null;
  } catch {
    return null;
  }
}
