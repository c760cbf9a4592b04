/**
 * Direct-boot files on the local host (the QEMU driver's, and the VM service's check until it
 * asks the driver of the VM's host): a regular file inside vm_defaults.kernel_dir, judged by
 * where the path really leads, with one answer for every path outside the directory so a
 * caller cannot probe which host files exist.
 */
import { existsSync, statSync } from "node:fs";
import { isAbsolute } from "node:path";
import { containedPath } from "../../util/contained-path.ts";
import { DriverError } from "../types.ts";

/**
 * The real path of a kernel or initrd inside `dir`. DriverError("unsupported") when there is
 * no kernel directory, DriverError("not_found") naming the directory otherwise; messages
 * leave the field out, for the caller to name it.
 */
export function localBootFile(dir: string | null, path: string): string {
  if (!dir) throw new DriverError("unsupported", "direct kernel boot is disabled on this server (set vm_defaults.kernel_dir)");
  if (typeof path !== "string" || !isAbsolute(path) || path.includes("\0")) throw new DriverError("not_found", "must be an absolute path");
  // Inside the directory first (by real path), with one answer for every path outside it.
  const real = containedPath(dir, path);
  if (real === null) throw new DriverError("not_found", `must be a file inside ${dir} (vm_defaults.kernel_dir)`);
  if (!existsSync(real)) throw new DriverError("not_found", `${path} does not exist in ${dir}`);
  if (!statSync(real).isFile()) throw new DriverError("not_found", `must be a regular file inside ${dir}`);
  return real;
}
