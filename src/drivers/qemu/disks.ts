/**
 * Disk images through qemu-img (argument arrays, never a shell): qcow2 overlays on the base
 * images and empty qcow2 data disks.
 */
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { run } from "./process.ts";

/** qemu-img next to an absolute QEMU binary, else from PATH. */
export function qemuImgFor(binary: string): string {
  if (binary.startsWith("/")) {
    const beside = join(dirname(binary), "qemu-img");
    if (existsSync(beside)) return beside;
  }
  return "qemu-img";
}

/** A qcow2 overlay whose backing file is the base image (left untouched). */
export async function createOverlay(qemuImg: string, base: { path: string; format: string }, overlay: string, sizeBytes: number): Promise<void> {
  await run([qemuImg, "create", "-q", "-f", "qcow2", "-F", base.format, "-b", base.path, overlay, String(sizeBytes)], `creating ${overlay} on ${base.path}`);
}

export async function createDisk(qemuImg: string, path: string, sizeBytes: number): Promise<void> {
  await run([qemuImg, "create", "-q", "-f", "qcow2", path, String(sizeBytes)], `creating ${path}`);
}
