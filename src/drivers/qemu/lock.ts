/**
 * The state directory's lock: `<state_dir>/rcloud.lock`, held with flock(2) for as long as
 * the driver runs. The kernel decides who holds it (one open file at a time, in this process
 * or another) and drops it when the holder dies, so there are no stale locks to judge and no
 * race between two rclouds starting at once. The file's text is the holder's PID, for people.
 */
import { dlopen, FFIType, read } from "bun:ffi";
import { closeSync, fstatSync, ftruncateSync, mkdirSync, openSync, readFileSync, statSync, unlinkSync, writeSync } from "node:fs";
import { join } from "node:path";
import { DriverError } from "../types.ts";

const LOCK_EX = 2;
const LOCK_NB = 4;
const LOCK_UN = 8;
const EWOULDBLOCK = 11;

const libc = dlopen("libc.so.6", {
  flock: { args: [FFIType.i32, FFIType.i32], returns: FFIType.i32 },
  __errno_location: { args: [], returns: FFIType.ptr },
});

/** flock(fd, op): 0, or the errno it failed with. */
function flock(fd: number, op: number): number {
  if (libc.symbols.flock(fd, op) === 0) return 0;
  const errno = libc.symbols.__errno_location();
  return errno === null ? -1 : read.i32(errno, 0);
}

function lockHolder(path: string): string {
  try {
    const pid = readFileSync(path, "utf8").trim();
    return /^\d+$/.test(pid) ? `PID ${pid}` : "PID unknown";
  } catch {
    return "PID unknown";
  }
}

export class StateLock {
  private constructor(
    readonly path: string,
    private fd: number | null,
    private readonly inode: number,
  ) {}

  /** Takes `<stateDir>/rcloud.lock`, or fails with `conflict` naming the holder. */
  static acquire(stateDir: string): StateLock {
    mkdirSync(stateDir, { recursive: true });
    const path = join(stateDir, "rcloud.lock");
    for (;;) {
      const fd = openSync(path, "a+", 0o644);
      const err = flock(fd, LOCK_EX | LOCK_NB);
      if (err !== 0) {
        closeSync(fd);
        if (err !== EWOULDBLOCK) throw new DriverError("failed", `could not lock ${path}: flock failed (errno ${err})`);
        throw new DriverError(
          "conflict",
          `state directory ${stateDir} is in use by another rcloud (${lockHolder(path)}, lock file ${path}); ` +
            `stop that one first, or give this one its own qemu.state_dir (RCLOUD_STATE_DIR)`,
        );
      }
      // A holder that was releasing may have unlinked the file we opened: lock the file
      // that is at the path now.
      const inode = fstatSync(fd).ino;
      let current: number | null = null;
      try {
        current = statSync(path).ino;
      } catch {
        // unlinked meanwhile
      }
      if (current !== inode) {
        closeSync(fd);
        continue;
      }
      ftruncateSync(fd, 0);
      writeSync(fd, `${process.pid}\n`, 0);
      return new StateLock(path, fd, inode);
    }
  }

  /** Still ours (the file at the path is the one we lock)? */
  held(): boolean {
    if (this.fd === null) return false;
    try {
      return statSync(this.path).ino === this.inode;
    } catch {
      return false;
    }
  }

  release(): void {
    if (this.fd === null) return;
    try {
      if (this.held()) unlinkSync(this.path); // while still locked: the next one locks a new file
    } catch {
      // already gone
    }
    flock(this.fd, LOCK_UN);
    closeSync(this.fd);
    this.fd = null;
  }
}
