/**
 * Atomic file replacement: a new temp file next to the target, written whole and fsynced, then
 * renamed over it, so a reader (or a crash) sees the old file or the new one, never part of one.
 * The qemu driver's vm.json and the API tokens file are written this way.
 */
import { randomBytes } from "node:crypto";
import { chmodSync, chownSync, closeSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from "node:fs";

export interface AtomicWriteOptions {
  /** Mode the temp file is created with (through the umask); default 0o644. */
  mode?: number;
  /** Mode set exactly (chmod, no umask) before the rename. */
  chmod?: number;
  /** Owner given to the file (chown) before the rename. */
  owner?: { uid: number; gid: number };
}

/** Writes `path` atomically: a temp file in the same directory, every byte written, fsync, rename. */
export function writeAtomic(path: string, data: string | Uint8Array, opts: AtomicWriteOptions = {}): void {
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
  const fd = openSync(tmp, "wx", opts.mode ?? 0o644);
  try {
    try {
      const buf = typeof data === "string" ? Buffer.from(data) : data;
      let off = 0;
      while (off < buf.byteLength) off += writeSync(fd, buf, off);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    if (opts.chmod !== undefined) chmodSync(tmp, opts.chmod);
    if (opts.owner) chownSync(tmp, opts.owner.uid, opts.owner.gid);
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}
