/**
 * The QEMU driver's base images: the image files of the local base_images_dir
 * (shared/image-files.ts), read and written for image copies between hosts. A copy is written
 * under a hidden temporary name and linked to its real name only once complete and of the
 * announced format, so an image is never listed half-written and never replaces another.
 */
import { randomBytes } from "node:crypto";
import { readdirSync, statSync, unlinkSync } from "node:fs";
import { link, open, stat, unlink } from "node:fs/promises";
import { join } from "node:path";
import { checkImageToWrite, copyExactly, imageStem, probeImageFile, scanImageDir } from "../shared/image-files.ts";
import { DriverError, type ImageInfo, type ImageReader } from "../types.ts";

const CHUNK_BYTES = 1024 * 1024;
/** Temporary files of copies in progress: hidden, and never an image name. */
const PARTIAL = /^\.rcloud-partial-[0-9a-f]{16}-/;

/** Opens image `id` of `dir` for reading: the file's bytes, exactly its length at opening, read as the reader asks. */
export async function readLocalImage(dir: string, id: string): Promise<ImageReader> {
  const image = scanImageDir(dir).find((i) => i.id === id);
  if (!image) throw new DriverError("not_found", `no image ${id} in ${dir}`);
  const file = await open(image.path, "r");
  const sizeBytes = (await file.stat()).size;
  let offset = 0;
  const data = new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        try {
          const buf = new Uint8Array(Math.min(CHUNK_BYTES, Math.max(sizeBytes - offset, 1)));
          const { bytesRead } = await file.read(buf, 0, buf.byteLength, offset);
          if (bytesRead === 0) {
            if (offset !== sizeBytes) throw new Error(`${image.fileName} ended after ${offset} of ${sizeBytes} bytes (changed while being read?)`);
            controller.close();
            await file.close();
            return;
          }
          offset += bytesRead;
          if (offset > sizeBytes) throw new Error(`${image.fileName} grew while being read`);
          controller.enqueue(buf.subarray(0, bytesRead));
        } catch (e) {
          controller.error(e);
          await file.close().catch(() => {});
        }
      },
      async cancel() {
        await file.close().catch(() => {});
      },
    },
    { highWaterMark: 0 },
  );
  return { image, sizeBytes, data };
}

/**
 * Stores `data` (exactly `sizeBytes`, of format `format`) as `fileName` in `dir`; refuses a
 * name or id the directory has already. On any failure nothing is left and `data` is cancelled.
 */
export async function writeLocalImage(dir: string, fileName: string, format: string, sizeBytes: number, data: ReadableStream<Uint8Array>): Promise<ImageInfo> {
  const temp = join(dir, `.rcloud-partial-${randomBytes(8).toString("hex")}-${fileName}`);
  let made = false;
  const reader = data.getReader();
  try {
    checkImageToWrite(fileName, format, sizeBytes);
    const id = imageStem(fileName);
    const clash = (await stat(join(dir, fileName)).then(() => fileName, () => null)) ?? scanImageDir(dir).find((i) => i.id === id)?.fileName;
    if (clash) throw new DriverError("conflict", `${dir} has ${clash} already (image ${id})`);
    const file = await open(temp, "wx", 0o644);
    made = true;
    try {
      await copyExactly(reader, sizeBytes, (chunk) => file.write(chunk));
      await file.sync();
    } finally {
      await file.close();
    }
    const found = probeImageFile(temp, sizeBytes).format;
    if (found !== format) throw new DriverError("failed", `${fileName} was sent as ${format} but its bytes are ${found}`);
    // link, unlike rename, never replaces a file that appeared meanwhile.
    await link(temp, join(dir, fileName)).catch((e: NodeJS.ErrnoException) => {
      throw e.code === "EEXIST" ? new DriverError("conflict", `${dir} has ${fileName} already`) : e;
    });
    const image = scanImageDir(dir).find((i) => i.fileName === fileName);
    if (!image) throw new DriverError("failed", `${fileName} was written to ${dir} but is not listed`);
    return image;
  } catch (e) {
    await reader.cancel(e).catch(() => {});
    if (e instanceof DriverError) throw e;
    throw new DriverError("failed", `writing image ${fileName} to ${dir}: ${(e as Error).message}`, { cause: e });
  } finally {
    if (made) await unlink(temp).catch(() => {});
  }
}

/** Removes temporary files of copies that a previous run never finished. */
export function removePartialImages(dir: string): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const name of names.filter((n) => PARTIAL.test(n))) {
    try {
      if (statSync(join(dir, name)).isFile()) unlinkSync(join(dir, name));
      removed.push(name);
    } catch {
      // gone meanwhile, or not ours to remove
    }
  }
  return removed;
}
