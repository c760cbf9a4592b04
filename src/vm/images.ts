/**
 * The base-image catalog: the raw and qcow2 files of the kdevops base-image directory.
 * id = file stem; an image is also found by its file name and by a short alias
 * (`debian-13-generic-amd64-daily.raw` → `debian13`). Lookups never leave the directory.
 */
import { closeSync, openSync, readSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import type { ImageInfo } from "../drivers/types.ts";

const IMAGE_FILE = /^[A-Za-z0-9][A-Za-z0-9._+-]*\.(raw|qcow2|img)$/;
const QCOW2_MAGIC = 0x514649fb; // "QFI\xfb"

/** `debian-13-generic-amd64-daily` → `debian13`; `ubuntu-24.04` → `ubuntu24`; no digits → null. */
export function aliasOf(stem: string): string | null {
  const m = /^([a-z]+)-?(\d+)/i.exec(stem);
  return m ? `${m[1]!.toLowerCase()}${m[2]}` : null;
}

function probe(path: string, size: number): { format: string; virtualSize: number } {
  const fd = openSync(path, "r");
  try {
    const head = Buffer.alloc(32);
    const n = readSync(fd, head, 0, 32, 0);
    if (n >= 32 && head.readUInt32BE(0) === QCOW2_MAGIC) {
      return { format: "qcow2", virtualSize: Number(head.readBigUInt64BE(24)) };
    }
    return { format: "raw", virtualSize: size };
  } finally {
    closeSync(fd);
  }
}

export class ImageCatalog {
  constructor(readonly dir: string) {}

  /** Every usable image, sorted by id. A missing directory is an empty catalog. */
  list(): ImageInfo[] {
    let names: string[];
    try {
      names = readdirSync(this.dir);
    } catch {
      return [];
    }
    const out: ImageInfo[] = [];
    for (const fileName of names.sort()) {
      if (!IMAGE_FILE.test(fileName)) continue;
      const path = join(this.dir, fileName);
      let st;
      try {
        st = statSync(path);
      } catch {
        continue;
      }
      if (!st.isFile()) continue;
      let info;
      try {
        info = probe(path, st.size);
      } catch {
        continue; // unreadable: not offered
      }
      const stem = fileName.replace(/\.(raw|qcow2|img)$/, "");
      out.push({
        id: stem,
        fileName,
        alias: aliasOf(stem),
        path,
        format: info.format,
        virtualSizeBytes: info.virtualSize,
        diskSizeBytes: st.blocks * 512,
      });
    }
    // An alias shared by two images would be ambiguous: drop it from both.
    const counts = new Map<string, number>();
    for (const i of out) if (i.alias) counts.set(i.alias, (counts.get(i.alias) ?? 0) + 1);
    for (const i of out) if (i.alias && counts.get(i.alias)! > 1) i.alias = null;
    return out;
  }

  /** Finds by id, file name or alias. Anything with a path separator is never an image. */
  find(ref: string): ImageInfo | null {
    if (!ref || ref.includes("/") || ref.includes("\\") || ref.includes("\0") || ref === "." || ref === "..") return null;
    const all = this.list();
    return all.find((i) => i.id === ref) ?? all.find((i) => i.fileName === ref) ?? all.find((i) => i.alias === ref) ?? null;
  }
}
