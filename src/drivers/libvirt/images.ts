/**
 * A libvirt host's base images: the image files of its base_images_dir, seen through the dir
 * pool `<pool>-images` (host-dir.ts), read and written through volume streams. A copy being
 * written has a marker volume `<file>.rcloud-partial` next to it until it is complete: the
 * image is not listed meanwhile, and a marker left by a copy that never finished (rcloud or
 * libvirtd gone mid-way) is removed with its image when rcloud next connects.
 */
import { ErrorCode, LibvirtError, type LibvirtClient, remoteProcedures as P } from "../../libvirt/index.ts";
import type { RemoteNonnullStoragePool, RemoteNonnullStorageVol } from "../../libvirt/index.ts";
import { aliasOf, checkImageToWrite, dropAmbiguousAliases, IMAGE_FORMATS, imageStem, isImageFileName } from "../shared/image-files.ts";
import { DriverError, type ImageInfo, type ImageReader } from "../types.ts";
import { alreadyDone, translate } from "./errors.ts";
import { HostDir } from "./host-dir.ts";
import type { Sessions } from "./storage.ts";
import { parseVolumeXml, volumeXml } from "./storage-xml.ts";
import { downloadVolume, uploadVolume } from "./volume-streams.ts";

/** A listing rescans the directory at most this often (images dropped in by hand show within it). */
const LIST_REFRESH_MS = 10_000;
const PARTIAL_SUFFIX = ".rcloud-partial";

export class HostImages {
  readonly dir: HostDir;
  /** File names this driver is writing now (their markers are not leftovers). */
  private readonly writing = new Set<string>();

  constructor(
    private readonly sessions: Sessions,
    poolName: string,
    path: string,
    /** A connection of its own for one transfer (volume-streams.ts). */
    private readonly transferSession: () => Promise<LibvirtClient>,
  ) {
    this.dir = new HostDir(sessions, poolName, path, "base_images_dir");
  }

  /** Every complete image, sorted by file name. */
  async list(maxAgeMs = LIST_REFRESH_MS): Promise<ImageInfo[]> {
    const { vols } = await this.dir.volumes(maxAgeMs);
    const names = new Set(vols.map((v) => v.name));
    const candidates = vols.filter((v) => isImageFileName(v.name) && !names.has(v.name + PARTIAL_SUFFIX)).sort((x, y) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0));
    const images = await Promise.all(candidates.map((vol) => this.describe(vol)));
    return dropAmbiguousAliases(images.filter((i): i is ImageInfo => i !== null));
  }

  async read(id: string): Promise<ImageReader> {
    const image = (await this.list()).find((i) => i.id === id);
    if (!image) throw new DriverError("not_found", `no image ${id} in ${this.dir.path}`);
    const c = this.sessions();
    const pool = await this.dir.fresh(LIST_REFRESH_MS);
    const vol = await this.volume(pool, image.fileName);
    if (!vol) throw new DriverError("not_found", `no image ${id} in ${this.dir.path}`);
    const v = parseVolumeXml((await c.call(P.storageVolGetXmlDesc, { vol, flags: 0 })).xml);
    // A download delivers the file as it is: its length, not its virtual size (qcow2).
    const sizeBytes = v.physicalBytes ?? v.capacityBytes;
    return { image, sizeBytes, data: await downloadVolume(await this.transferSession(), vol, sizeBytes) };
  }

  /**
   * Stores `data` as `fileName` (exactly `sizeBytes`); refuses a name or id the directory has
   * already. On any failure the volume is deleted again and `data` cancelled.
   */
  async write(fileName: string, format: string, sizeBytes: number, data: ReadableStream<Uint8Array>): Promise<ImageInfo> {
    let marker: RemoteNonnullStorageVol | null = null;
    let vol: RemoteNonnullStorageVol | null = null;
    let session: LibvirtClient | null = null;
    let claimed = false;
    try {
      checkImageToWrite(fileName, format, sizeBytes);
      if (this.writing.has(fileName)) throw new DriverError("conflict", `${fileName} is being written to ${this.dir.path} already`);
      this.writing.add(fileName);
      claimed = true;
      // A fresh scan, so a file put there by hand counts too.
      const pool = await this.dir.fresh(0);
      const { vols } = await this.sessions().call(P.storagePoolListAllVolumes, { pool, need_results: 1, flags: 0 });
      const id = imageStem(fileName);
      const clash = vols.find((v) => v.name === fileName || v.name === fileName + PARTIAL_SUFFIX || (isImageFileName(v.name) && imageStem(v.name) === id));
      if (clash) throw new DriverError("conflict", `${this.dir.path} has ${clash.name} already (image ${id})`);
      // Claims the name on the host (creation fails for a second writer), then the image itself:
      // a raw container of the file's exact length (no format of its own: the bytes are the image).
      marker = await this.create(pool, { name: fileName + PARTIAL_SUFFIX, capacityBytes: 0, format: "raw" });
      vol = await this.create(pool, { name: fileName, capacityBytes: sizeBytes, format: "raw" });
      session = await this.transferSession();
      await uploadVolume(session, vol, sizeBytes, data);
      // libvirt reads the format off the new file (a qcow2 header) on a refresh.
      await this.dir.fresh(0);
      const written = await this.describe(vol);
      if (written?.format !== format) throw new DriverError("failed", `${fileName} was written as ${format} but libvirt reads it as ${written?.format ?? "no image"}`);
      await this.remove(marker);
      marker = null;
      return (await this.list()).find((i) => i.fileName === fileName) ?? written;
    } catch (e) {
      await data.cancel(e).catch(() => {}); // unused or half-read: let its source go
      if (vol) await this.remove(vol).catch(() => {});
      if (marker) await this.remove(marker).catch(() => {});
      return translate(e, `writing image ${fileName} to ${this.dir.path}`);
    } finally {
      if (claimed) this.writing.delete(fileName);
      await session?.close();
    }
  }

  /** Removes what copies that never finished left behind (markers nobody here is writing). */
  async sweep(): Promise<void> {
    const pool = await this.dir.existing();
    if (!pool) return;
    const { vols } = await this.dir.volumes(0);
    for (const m of vols.filter((v) => v.name.endsWith(PARTIAL_SUFFIX))) {
      const fileName = m.name.slice(0, -PARTIAL_SUFFIX.length);
      if (this.writing.has(fileName)) continue;
      const image = vols.find((v) => v.name === fileName);
      if (image) await this.remove(image);
      await this.remove(m);
    }
  }

  /** A volume as an image; null when it is gone or not a raw or qcow2 file. */
  private async describe(vol: RemoteNonnullStorageVol): Promise<ImageInfo | null> {
    let xml: string;
    try {
      xml = (await this.sessions().call(P.storageVolGetXmlDesc, { vol, flags: 0 })).xml;
    } catch (e) {
      if (e instanceof LibvirtError && e.code === ErrorCode.NO_STORAGE_VOL) return null; // deleted meanwhile
      throw e;
    }
    const v = parseVolumeXml(xml);
    if (v.type !== "file" || v.format === null || !IMAGE_FORMATS.includes(v.format)) return null;
    const id = imageStem(vol.name);
    return { id, fileName: vol.name, alias: aliasOf(id), path: v.path, format: v.format, virtualSizeBytes: v.capacityBytes, diskSizeBytes: v.allocationBytes };
  }

  private async volume(pool: RemoteNonnullStoragePool, name: string): Promise<RemoteNonnullStorageVol | null> {
    try {
      return (await this.sessions().call(P.storageVolLookupByName, { pool, name })).vol;
    } catch (e) {
      if (e instanceof LibvirtError && e.code === ErrorCode.NO_STORAGE_VOL) return null;
      throw e;
    }
  }

  private async create(pool: RemoteNonnullStoragePool, v: Parameters<typeof volumeXml>[0]): Promise<RemoteNonnullStorageVol> {
    try {
      return (await this.sessions().call(P.storageVolCreateXml, { pool, xml: volumeXml(v), flags: 0 })).vol;
    } catch (e) {
      if (e instanceof LibvirtError && e.code === ErrorCode.STORAGE_VOL_EXIST) throw new DriverError("conflict", `${this.dir.path} has ${v.name} already`, { cause: e });
      throw e;
    }
  }

  private async remove(vol: RemoteNonnullStorageVol): Promise<void> {
    await this.sessions().call(P.storageVolDelete, { vol, flags: 0 }).catch(alreadyDone(ErrorCode.NO_STORAGE_VOL));
  }
}
