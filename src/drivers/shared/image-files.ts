/**
 * What counts as a base image and what it is called, the same for every driver and for the
 * VM service: raw, qcow2 and img files; id = file stem; a short alias
 * (`debian-13-generic-amd64-daily.raw` → `debian13`) unless two images would share it.
 * scanImageDir reads a local directory (the QEMU driver's host, the service's catalog);
 * the libvirt driver lists a host's directory through a storage pool instead.
 */
import { closeSync, openSync, readSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { DriverError, type ImageInfo } from "../types.ts";

const IMAGE_FILE = /^[A-Za-z0-9][A-Za-z0-9._+-]*\.(raw|qcow2|img)$/;
const IMAGE_EXTENSION = /\.(raw|qcow2|img)$/;
const QCOW2_MAGIC = 0x514649fb; // "QFI\xfb"

/** Is this a base image's file name (letters, digits, `._+-`, ending .raw, .qcow2 or .img)? */
export function isImageFileName(name: string): boolean {
  return IMAGE_FILE.test(name);
}

/** `debian-13.raw` → `debian-13`: an image's id. */
export function imageStem(fileName: string): string {
  return fileName.replace(IMAGE_EXTENSION, "");
}

/** `debian-13-generic-amd64-daily` → `debian13`; `ubuntu-24.04` → `ubuntu24`; no digits → null. */
export function aliasOf(stem: string): string | null {
  const m = /^([a-z]+)-?(\d+)/i.exec(stem);
  return m ? `${m[1]!.toLowerCase()}${m[2]}` : null;
}

/** An alias shared by two images would be ambiguous: drops it from both (in place). */
export function dropAmbiguousAliases<T extends { alias: string | null }>(images: T[]): T[] {
  const counts = new Map<string, number>();
  for (const i of images) if (i.alias) counts.set(i.alias, (counts.get(i.alias) ?? 0) + 1);
  for (const i of images) if (i.alias && counts.get(i.alias)! > 1) i.alias = null;
  return images;
}

/** A local image file's format (a qcow2 header, else raw) and virtual size. */
export function probeImageFile(path: string, size: number): { format: string; virtualSize: number } {
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

/** Every usable image of a local directory, sorted by file name. A missing directory has none. */
export function scanImageDir(dir: string): ImageInfo[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const out: ImageInfo[] = [];
  for (const fileName of names.sort()) {
    if (!isImageFileName(fileName)) continue;
    const path = join(dir, fileName);
    let st;
    try {
      st = statSync(path);
    } catch {
      continue;
    }
    if (!st.isFile()) continue;
    let info;
    try {
      info = probeImageFile(path, st.size);
    } catch {
      continue; // unreadable: not offered
    }
    const id = imageStem(fileName);
    out.push({ id, fileName, alias: aliasOf(id), path, format: info.format, virtualSizeBytes: info.virtualSize, diskSizeBytes: st.blocks * 512 });
  }
  return dropAmbiguousAliases(out);
}

/** The formats an image is listed, read and written in. */
export const IMAGE_FORMATS: readonly string[] = ["raw", "qcow2"];

/** Refuses what no driver stores: a name that is not an image's, another format, no size. */
export function checkImageToWrite(fileName: string, format: string, sizeBytes: number): void {
  if (!isImageFileName(fileName)) throw new DriverError("unsupported", `${JSON.stringify(fileName)} is not an image file name (letters, digits and ._+-, ending .raw, .qcow2 or .img)`);
  if (!IMAGE_FORMATS.includes(format)) throw new DriverError("unsupported", `image format ${JSON.stringify(format)} is not one of ${IMAGE_FORMATS.join(", ")}`);
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0) throw new DriverError("unsupported", `image size ${sizeBytes} is not a positive number of bytes`);
}

/**
 * Hands every chunk of `data` to `write` (awaited: the source is read only as fast as the
 * destination takes it) and fails unless there are exactly `sizeBytes`.
 */
export async function copyExactly(data: { read(): Promise<{ done: boolean; value?: Uint8Array }> }, sizeBytes: number, write: (chunk: Uint8Array) => Promise<unknown>): Promise<void> {
  let copied = 0;
  for (;;) {
    const { value, done } = await data.read();
    if (done || value === undefined) break;
    copied += value.byteLength;
    if (copied > sizeBytes) throw new Error(`the image has more than the ${sizeBytes} bytes announced`);
    await write(value);
  }
  if (copied !== sizeBytes) throw new Error(`the image ended after ${copied} of the ${sizeBytes} bytes announced`);
}
