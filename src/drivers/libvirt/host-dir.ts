/**
 * A directory of a libvirt host seen through a dir storage pool (base images, kernels): rcloud
 * never assumes it shares a file system with the host, so files there are volumes, listed,
 * read and written over RPC. The pool is named after the VM pool (`<pool>-images`,
 * `<pool>-kernels`) and defined on first use; an existing pool at the same directory under
 * another name is used as it is (libvirt allows one pool per directory). A pool of rcloud's
 * name at another directory is refused, never redefined: someone made it on purpose.
 * libvirt learns about files it did not write only on a pool refresh, which scans the
 * directory: refreshes are spaced out (`fresh(maxAgeMs)`) and shared by concurrent callers.
 */
import { posix } from "node:path";
import { ErrorCode, LibvirtError, remoteProcedures as P } from "../../libvirt/index.ts";
import type { RemoteNonnullStoragePool, RemoteNonnullStorageVol } from "../../libvirt/index.ts";
import { DriverError } from "../types.ts";
import { type Sessions, startPool } from "./storage.ts";
import { poolTargetPath, poolXml } from "./storage-xml.ts";

/** `/a/b/` and `/a//b` → `/a/b`: how libvirt stores a pool's target path. */
export function normalDir(path: string): string {
  const n = posix.normalize(path);
  return n.length > 1 && n.endsWith("/") ? n.slice(0, -1) : n;
}

export class HostDir {
  readonly path: string;
  /** The pool in use: rcloud's name, or the operator's pool at the same directory. */
  private poolName: string;
  /** The pool as of the last refresh, and when that refresh started. */
  private pool: RemoteNonnullStoragePool | null = null;
  private refreshedAt = 0;
  private refreshing: Promise<RemoteNonnullStoragePool> | null = null;
  private refreshingSince = 0;

  /** `setting` names the directory in messages (e.g. "base_images_dir"). */
  constructor(
    private readonly sessions: Sessions,
    readonly name: string,
    path: string,
    private readonly setting: string,
  ) {
    this.path = normalDir(path);
    this.poolName = name;
  }

  /**
   * The pool, refreshed unless that was done less than `maxAgeMs` ago; 0 = a refresh that
   * starts now (a refresh already running may have scanned the directory too early).
   */
  async fresh(maxAgeMs: number): Promise<RemoteNonnullStoragePool> {
    const since = Date.now() - maxAgeMs; // a refresh started at or after this will do
    while (this.refreshing) {
      if (this.refreshingSince >= since) return this.refreshing;
      await this.refreshing.catch(() => {});
    }
    if (this.pool && maxAgeMs > 0 && this.refreshedAt >= since) return this.pool;
    const started = Date.now();
    this.refreshingSince = started;
    this.refreshing = (async () => {
      const pool = await this.ensure();
      await this.sessions().call(P.storagePoolRefresh, { pool, flags: 0 });
      this.pool = pool;
      this.refreshedAt = started;
      return pool;
    })().finally(() => (this.refreshing = null));
    return this.refreshing;
  }

  /** Forget the pool: the next use looks it up (and refreshes) again. */
  forget(): void {
    this.pool = null;
    this.refreshedAt = 0;
  }

  /** Every volume of the pool as libvirt knows it (see fresh for how recent that is). */
  async volumes(maxAgeMs: number): Promise<{ pool: RemoteNonnullStoragePool; vols: RemoteNonnullStorageVol[] }> {
    const list = async (pool: RemoteNonnullStoragePool) => ({ pool, vols: (await this.sessions().call(P.storagePoolListAllVolumes, { pool, need_results: 1, flags: 0 })).vols });
    try {
      return await list(await this.fresh(maxAgeMs));
    } catch (e) {
      // The remembered pool may be gone or stopped (libvirtd restarted, an operator's virsh): once more from scratch.
      if (!(e instanceof LibvirtError) || maxAgeMs === 0) throw e;
      this.forget();
      return list(await this.fresh(0));
    }
  }

  /** The pool if it exists already (nothing is defined); null otherwise. */
  async existing(): Promise<RemoteNonnullStoragePool | null> {
    try {
      return (await this.sessions().call(P.storagePoolLookupByName, { name: this.poolName })).pool;
    } catch (e) {
      if (e instanceof LibvirtError && e.code === ErrorCode.NO_STORAGE_POOL) return null;
      throw e;
    }
  }

  /** The pool at this directory, defined and started as needed. */
  async ensure(): Promise<RemoteNonnullStoragePool> {
    const c = this.sessions();
    let pool = await this.existing();
    if (pool) await this.checkTarget(pool);
    else pool = (await this.poolAtPath()) ?? (await this.define());
    const { active } = await c.call(P.storagePoolIsActive, { pool });
    if (!active) {
      await c.call(P.storagePoolBuild, { pool, flags: 0 }).catch(() => {}); // its directory may have gone
      await startPool(c, pool);
    }
    return pool;
  }

  private async checkTarget(pool: RemoteNonnullStoragePool): Promise<void> {
    const { xml } = await this.sessions().call(P.storagePoolGetXmlDesc, { pool, flags: 0 });
    const at = poolTargetPath(xml);
    if (at !== null && normalDir(at) === this.path) return;
    throw new DriverError(
      "conflict",
      `the libvirt storage pool ${pool.name} is at ${at ?? "no directory"}, not at ${this.path} (${this.setting}); ` +
        `remove it (virsh pool-destroy ${pool.name}; virsh pool-undefine ${pool.name}) or set ${this.setting} to its directory`,
    );
  }

  /** An existing pool of any name over this directory (libvirt refuses a second one). */
  private async poolAtPath(): Promise<RemoteNonnullStoragePool | null> {
    const c = this.sessions();
    const { pools } = await c.call(P.connectListAllStoragePools, { need_results: 1, flags: 0 });
    for (const pool of pools) {
      const { xml } = await c.call(P.storagePoolGetXmlDesc, { pool, flags: 0 }).catch(() => ({ xml: "<pool/>" }));
      const at = poolTargetPath(xml);
      if (at !== null && normalDir(at) === this.path) {
        this.poolName = pool.name;
        return pool;
      }
    }
    return null;
  }

  private async define(): Promise<RemoteNonnullStoragePool> {
    const c = this.sessions();
    const { pool } = await c.call(P.storagePoolDefineXml, { xml: poolXml(this.name, this.path), flags: 0 });
    // Makes the directory when it is missing (an empty one lists nothing); leaves an existing one as it is.
    await c.call(P.storagePoolBuild, { pool, flags: 0 }).catch(() => {});
    await c.call(P.storagePoolSetAutostart, { pool, autostart: 1 }).catch(() => {});
    return pool;
  }
}
