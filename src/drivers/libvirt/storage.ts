/**
 * rcloud's storage pool on a libvirt host: defined and started on first use, volumes created
 * from storage-xml.ts, a VM's volumes found by their `<id>-` prefix, sizes briefly remembered.
 */
import { ErrorCode, LibvirtError, type LibvirtPool, remoteProcedures as P } from "../../libvirt/index.ts";
import type { RemoteNonnullStoragePool, RemoteNonnullStorageVol } from "../../libvirt/index.ts";
import { alreadyDone } from "./errors.ts";
import { poolXml, type VolumeXmlOptions, volumeXml } from "./storage-xml.ts";

export const GiB = 1024 ** 3;
const VOLUME_SIZE_TTL_MS = 60_000;

/** The sessions to libvirtd; throws "unavailable" while disconnected. */
export type Sessions = () => LibvirtPool;

export class VmStorage {
  /** Disk path → size in GiB and when it was read (see sizeGb). */
  private readonly sizes = new Map<string, { gb: number; at: number }>();

  constructor(
    private readonly sessions: Sessions,
    readonly name: string,
    readonly path: string,
  ) {}

  /** The pool: defined, built and started when it is not. */
  async ensure(): Promise<RemoteNonnullStoragePool> {
    const c = this.sessions();
    let pool: RemoteNonnullStoragePool;
    try {
      pool = (await c.call(P.storagePoolLookupByName, { name: this.name })).pool;
    } catch (e) {
      if (!(e instanceof LibvirtError && e.code === ErrorCode.NO_STORAGE_POOL)) throw e;
      pool = (await c.call(P.storagePoolDefineXml, { xml: poolXml(this.name, this.path), flags: 0 })).pool;
      await c.call(P.storagePoolBuild, { pool, flags: 0 }).catch(() => {}); // the directory may exist already
      await c.call(P.storagePoolSetAutostart, { pool, autostart: 1 }).catch(() => {});
    }
    await startPool(c, pool);
    return pool;
  }

  async pool(): Promise<RemoteNonnullStoragePool> {
    try {
      return (await this.sessions().call(P.storagePoolLookupByName, { name: this.name })).pool;
    } catch (e) {
      if (e instanceof LibvirtError && e.code === ErrorCode.NO_STORAGE_POOL) return this.ensure();
      throw e;
    }
  }

  async info(): Promise<{ capacityBytes: number; allocationBytes: number; availableBytes: number }> {
    const i = await this.sessions().call(P.storagePoolGetInfo, { pool: await this.pool() });
    return { capacityBytes: Number(i.capacity), allocationBytes: Number(i.allocation), availableBytes: Number(i.available) };
  }

  /** Creates a volume (in `pool` when the caller has looked it up already); returns it with its path on the host. */
  async create(volume: VolumeXmlOptions, pool?: RemoteNonnullStoragePool): Promise<{ vol: RemoteNonnullStorageVol; path: string }> {
    const c = this.sessions();
    const { vol } = await c.call(P.storageVolCreateXml, { pool: pool ?? (await this.pool()), xml: volumeXml(volume), flags: 0 });
    return { vol, path: await this.pathOf(vol) };
  }

  async pathOf(vol: RemoteNonnullStorageVol): Promise<string> {
    return (await this.sessions().call(P.storageVolGetPath, { vol })).name;
  }

  /** Writes `bytes` into a volume through a stream (works on remote hosts). */
  async upload(vol: RemoteNonnullStorageVol, bytes: Uint8Array): Promise<void> {
    const up = await this.sessions().openStream(P.storageVolUpload, { vol, offset: 0n, length: BigInt(bytes.byteLength), flags: 0 });
    await up.write(bytes);
    await up.finish();
  }

  /** Deletes a volume; one already gone counts as deleted. */
  async delete(vol: RemoteNonnullStorageVol): Promise<void> {
    await this.sessions().call(P.storageVolDelete, { vol, flags: 0 }).catch(alreadyDone(ErrorCode.NO_STORAGE_VOL));
  }

  /** Deletes the pool's volume `name`, if there is one. */
  async deleteNamed(name: string): Promise<void> {
    const pool = await this.pool();
    const found = await this.sessions().call(P.storageVolLookupByName, { pool, name }).catch(alreadyDone(ErrorCode.NO_STORAGE_VOL));
    if (found) await this.delete(found.vol);
  }

  /**
   * Every volume of the pool, after a refresh (files libvirt did not create, such as a console
   * log, appear only then). `refresh: "required"` fails when the refresh does, for callers
   * that must not miss a volume; "none" lists what libvirt knows (every volume it made).
   */
  async volumes(refresh: "required" | "best-effort" | "none"): Promise<RemoteNonnullStorageVol[]> {
    const c = this.sessions();
    const pool = await this.pool();
    if (refresh !== "none") {
      const refreshed = c.call(P.storagePoolRefresh, { pool, flags: 0 });
      await (refresh === "required" ? refreshed : refreshed.catch(() => {}));
    }
    return (await c.call(P.storagePoolListAllVolumes, { pool, need_results: 1, flags: 0 })).vols;
  }

  /** Deletes every volume of VM `id` (named `<id>-*`). */
  async deleteVolumesOf(id: string, refresh: "required" | "best-effort"): Promise<void> {
    for (const vol of (await this.volumes(refresh)).filter((v) => v.name.startsWith(`${id}-`))) await this.delete(vol);
  }

  /**
   * A disk's size from its volume (0 when it is not a pool volume). rcloud never resizes a
   * disk, so sizes are remembered for a minute: a domain's facts are read again after each of
   * its events (domain-cache.ts), and a burst of them should not ask for every size again.
   */
  async sizeGb(path: string): Promise<number> {
    const known = this.sizes.get(path);
    if (known && Date.now() - known.at < VOLUME_SIZE_TTL_MS) return known.gb;
    const c = this.sessions();
    let gb = 0;
    try {
      const { vol } = await c.call(P.storageVolLookupByPath, { path });
      const info = await c.call(P.storageVolGetInfo, { vol });
      gb = Math.round((Number(info.capacity) / GiB) * 100) / 100;
    } catch (e) {
      if (!(e instanceof LibvirtError)) return 0; // libvirt gone: not a fact to remember
    }
    if (this.sizes.size > 10_000) this.sizes.clear();
    this.sizes.set(path, { gb, at: Date.now() });
    return gb;
  }

  forgetSizes(paths: string[]): void {
    for (const p of paths) this.sizes.delete(p);
  }
}

/**
 * Starts a pool unless it runs. Another rcloud (or its other sessions) may start it at the
 * same moment: "already active" from libvirt is then success, not an error.
 */
export async function startPool(c: LibvirtPool, pool: RemoteNonnullStoragePool): Promise<void> {
  if ((await c.call(P.storagePoolIsActive, { pool })).active) return;
  try {
    await c.call(P.storagePoolCreate, { pool, flags: 0 });
  } catch (e) {
    if (e instanceof LibvirtError && e.code === ErrorCode.OPERATION_INVALID && (await c.call(P.storagePoolIsActive, { pool })).active) return;
    throw e;
  }
}
