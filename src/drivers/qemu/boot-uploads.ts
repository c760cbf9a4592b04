/**
 * Uploaded kernels and initrds of a QEMU-driver VM: files `<kind>-<seq>` in the VM's state
 * directory (shared/boot-uploads.ts). An upload is written to `<name>.part`, synced and
 * renamed into place, so the previous upload stays whole until the new one is complete.
 */
import { closeSync, fsyncSync, openSync, readdirSync, renameSync, rmSync, statSync, writeSync } from "node:fs";
import { join } from "node:path";
import { type BootUploadKind, currentUpload, nextUploadSeq, uploadName } from "../shared/boot-uploads.ts";
import { copyExactly } from "../shared/image-files.ts";
import type { UploadedBootFile } from "../types.ts";

const PART_SUFFIX = ".part";

/** The current upload of `kind` in `dir`; null when there is none. */
export function localUpload(dir: string, kind: BootUploadKind): UploadedBootFile | null {
  const { current } = currentUpload(readdirSync(dir), kind, false);
  if (current === null) return null;
  const path = join(dir, current);
  return { kind, path, sizeBytes: statSync(path).size };
}

/**
 * Writes `data` as the new upload of `kind` in `dir`; then deletes the older uploads and
 * leftovers of that kind except the files in `keep` (what the VM's definition boots from).
 * `own` hands the file to the user QEMU runs as.
 */
export async function storeLocalUpload(
  dir: string,
  kind: BootUploadKind,
  sizeBytes: number,
  data: ReadableStream<Uint8Array>,
  keep: ReadonlySet<string>,
  own: (path: string) => void,
): Promise<UploadedBootFile> {
  const path = join(dir, uploadName(kind, nextUploadSeq()));
  const part = path + PART_SUFFIX;
  const reader = data.getReader();
  try {
    const fd = openSync(part, "wx", 0o640);
    try {
      await copyExactly(reader, sizeBytes, async (chunk) => {
        let off = 0;
        while (off < chunk.byteLength) off += writeSync(fd, chunk, off);
      });
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    own(part);
    renameSync(part, path);
  } catch (e) {
    await reader.cancel(e).catch(() => {});
    rmSync(part, { force: true });
    throw e;
  }
  for (const name of readdirSync(dir)) {
    const file = join(dir, name);
    const leftover = name.startsWith(`${kind}-`) && name.endsWith(PART_SUFFIX);
    if ((leftover || currentUpload([name], kind, false).current === name) && file !== path && !keep.has(file)) rmSync(file, { force: true });
  }
  return { kind, path, sizeBytes };
}
