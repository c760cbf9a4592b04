/**
 * The base-image catalog: the raw and qcow2 files of the kdevops base-image directory
 * (scanned by src/drivers/shared/image-files.ts, whose naming rules the drivers share).
 * id = file stem; an image is also found by its file name and by a short alias
 * (`debian-13-generic-amd64-daily.raw` → `debian13`). Lookups never leave the directory.
 */
import { scanImageDir } from "../drivers/shared/image-files.ts";
import type { ImageInfo } from "../drivers/types.ts";

export class ImageCatalog {
  constructor(readonly dir: string) {}

  /** Every usable image, sorted by id. A missing directory is an empty catalog. */
  list(): ImageInfo[] {
    return scanImageDir(this.dir);
  }

  /** Finds by id, file name or alias. Anything with a path separator is never an image. */
  find(ref: string): ImageInfo | null {
    if (!ref || ref.includes("/") || ref.includes("\\") || ref.includes("\0") || ref === "." || ref === "..") return null;
    const all = this.list();
    return all.find((i) => i.id === ref) ?? all.find((i) => i.fileName === ref) ?? all.find((i) => i.alias === ref) ?? null;
  }
}
