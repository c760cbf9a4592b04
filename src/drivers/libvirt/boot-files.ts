/**
 * Direct-boot files (kernel, initrd) on a libvirt host: the files of its kernel_dir, seen
 * through the dir pool `<pool>-kernels` (host-dir.ts). A path is accepted only when it names a
 * volume of that pool, and the volume's own path is what QEMU gets; nothing outside the
 * directory is ever looked up, so the answer for every path outside it is the same. libvirt
 * lists what the directory holds, symbolic links included (it follows them, as QEMU would):
 * the operator decides what is in kernel_dir.
 */
import { isAbsolute, posix } from "node:path";
import { ErrorCode, LibvirtError, remoteProcedures as P } from "../../libvirt/index.ts";
import { DriverError } from "../types.ts";
import { HostDir } from "./host-dir.ts";
import type { Sessions } from "./storage.ts";
import { parseVolumeXml } from "./storage-xml.ts";

/** The directory is rescanned for a lookup at most this often (a kernel just copied there shows within it). */
const LOOKUP_REFRESH_MS = 1_000;

export class BootFiles {
  private readonly dir: HostDir | null;

  constructor(
    private readonly sessions: Sessions,
    poolName: string,
    kernelDir: string | null,
  ) {
    this.dir = kernelDir ? new HostDir(sessions, poolName, kernelDir, "kernel_dir") : null;
  }

  /** The host path of a kernel or initrd, after checking it is a file of the kernel directory. */
  async resolve(path: string): Promise<string> {
    const dir = this.dir;
    if (!dir) throw new DriverError("unsupported", "direct kernel boot is disabled on this host (it has no kernel_dir)");
    const outside = () => new DriverError("not_found", `must be a file inside ${dir.path} (kernel_dir)`);
    if (typeof path !== "string" || !isAbsolute(path) || path.includes("\0")) throw new DriverError("not_found", `must be an absolute path inside ${dir.path} (kernel_dir)`);
    // Decided on the text alone: libvirt is asked only about names directly in the directory.
    const wanted = posix.normalize(path);
    if (posix.dirname(wanted) !== dir.path) throw outside();
    const pool = await dir.fresh(LOOKUP_REFRESH_MS);
    const c = this.sessions();
    let vol;
    try {
      vol = (await c.call(P.storageVolLookupByPath, { path: wanted })).vol;
    } catch (e) {
      if (e instanceof LibvirtError && e.code === ErrorCode.NO_STORAGE_VOL) throw new DriverError("not_found", `${path} does not exist in ${dir.path}`);
      throw e;
    }
    // Another pool may list the same path (libvirt's test driver allows it): only ours counts.
    const owner = (await c.call(P.storagePoolLookupByVolume, { vol })).pool;
    if (owner.name !== pool.name) throw outside();
    const v = parseVolumeXml((await c.call(P.storageVolGetXmlDesc, { vol, flags: 0 })).xml);
    if (v.type !== "file") throw new DriverError("not_found", `must be a regular file inside ${dir.path}`);
    return v.path;
  }
}
