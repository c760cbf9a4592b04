/**
 * Uploaded kernels and initrds of a libvirt VM: raw volumes `<id>-<kind>-<seq>` in rcloud's
 * pool on the VM's host, written through a volume upload stream (so remote hosts work), each
 * followed by a zero-length `<name>.complete` marker volume once all its bytes are in
 * (shared/boot-uploads.ts): libvirt cannot rename a volume, and the marker is what makes an
 * upload replace the previous one all at once. The volumes are named after the VM id, so the
 * VM's delete removes them with its disks.
 */
import { type LibvirtClient, remoteProcedures as P } from "../../libvirt/index.ts";
import type { RemoteNonnullStorageVol } from "../../libvirt/index.ts";
import { type BootUploadKind, COMPLETE_SUFFIX, currentUpload, nextUploadSeq, uploadName } from "../shared/boot-uploads.ts";
import type { UploadedBootFile } from "../types.ts";
import type { Sessions, VmStorage } from "./storage.ts";
import { uploadVolume } from "./volume-streams.ts";

export class BootUploads {
  constructor(
    private readonly sessions: Sessions,
    private readonly storage: VmStorage,
    /** A connection of its own for one transfer (volume-streams.ts). */
    private readonly transferSession: () => Promise<LibvirtClient>,
  ) {}

  /** The VM's volumes by name without the `<id>-` prefix (no pool refresh: libvirt made them all). */
  private async volumesOf(id: string): Promise<Map<string, RemoteNonnullStorageVol>> {
    const vols = await this.storage.volumes("none");
    return new Map(vols.filter((v) => v.name.startsWith(`${id}-`)).map((v) => [v.name.slice(id.length + 1), v]));
  }

  async current(id: string, kind: BootUploadKind): Promise<UploadedBootFile | null> {
    const vols = await this.volumesOf(id);
    const { current } = currentUpload([...vols.keys()], kind, true);
    const vol = current === null ? undefined : vols.get(current);
    if (!vol) return null;
    const info = await this.sessions().call(P.storageVolGetInfo, { vol });
    return { kind, path: await this.storage.pathOf(vol), sizeBytes: Number(info.capacity) };
  }

  /**
   * Uploads `data` as VM `id`'s new `kind`; then deletes older uploads of that kind (and
   * leftovers of interrupted ones) whose paths are not in `keep`.
   */
  async store(id: string, kind: BootUploadKind, sizeBytes: number, data: ReadableStream<Uint8Array>, keep: ReadonlySet<string>): Promise<UploadedBootFile> {
    const name = `${id}-${uploadName(kind, nextUploadSeq())}`;
    let vol: RemoteNonnullStorageVol | null = null;
    let session: LibvirtClient | null = null;
    let path: string;
    try {
      const pool = await this.storage.pool();
      ({ vol, path } = await this.storage.create({ name, capacityBytes: sizeBytes, format: "raw" }, pool));
      session = await this.transferSession();
      await uploadVolume(session, vol, sizeBytes, data);
      await this.storage.create({ name: name + COMPLETE_SUFFIX, capacityBytes: 0, format: "raw" }, pool);
    } catch (e) {
      await data.cancel(e).catch(() => {});
      if (vol) await this.storage.delete(vol).catch(() => {});
      throw e;
    } finally {
      await session?.close().catch(() => {});
    }
    const vols = await this.volumesOf(id);
    for (const stale of currentUpload([...vols.keys()], kind, true).stale) {
      const v = vols.get(stale)!;
      if (!keep.has(await this.storage.pathOf(v))) await this.storage.delete(v);
    }
    return { kind, path, sizeBytes };
  }
}
