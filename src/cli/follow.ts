/** `tail -n N -f` for a local file: prints its last lines, then what is appended, until aborted. */
import { closeSync, fstatSync, openSync, readSync, statSync } from "node:fs";

const CHUNK = 64 * 1024;

function readRange(fd: number, from: number, to: number, write: (b: Uint8Array) => void): void {
  let pos = from;
  while (pos < to) {
    const buf = new Uint8Array(Math.min(CHUNK, to - pos));
    const n = readSync(fd, buf, 0, buf.length, pos);
    if (n <= 0) break;
    write(buf.subarray(0, n));
    pos += n;
  }
}

/** Byte offset where the last `lines` lines of the file start (looks at most 1 MiB back). */
export function tailOffset(fd: number, size: number, lines: number): number {
  if (lines <= 0) return size;
  const start = Math.max(0, size - 1024 * 1024);
  const buf = new Uint8Array(size - start);
  readSync(fd, buf, 0, buf.length, start);
  let seen = 0;
  // A final newline ends the last line rather than starting a new one.
  for (let i = buf.length - (buf[buf.length - 1] === 10 ? 2 : 1); i >= 0; i--) {
    if (buf[i] === 10 && ++seen === lines) return start + i + 1;
  }
  return start;
}

export interface FollowOptions {
  lines: number;
  signal: AbortSignal;
  pollMs?: number;
}

/**
 * Follows `path` like `tail -F`: survives truncation (starts over) and replacement
 * (reopens the new file). Resolves when `signal` aborts.
 */
export async function followFile(path: string, write: (b: Uint8Array) => void, opts: FollowOptions): Promise<void> {
  let fd = openSync(path, "r");
  let ino = fstatSync(fd).ino;
  let pos = tailOffset(fd, fstatSync(fd).size, opts.lines);
  try {
    while (!opts.signal.aborted) {
      const size = fstatSync(fd).size;
      if (size < pos) pos = 0; // truncated
      if (size > pos) {
        readRange(fd, pos, size, write);
        pos = size;
      }
      try {
        const st = statSync(path);
        if (st.ino !== ino) {
          // replaced (log rotation): drain the old file, then start on the new one
          readRange(fd, pos, fstatSync(fd).size, write);
          closeSync(fd);
          fd = openSync(path, "r");
          ino = fstatSync(fd).ino;
          pos = 0;
          continue;
        }
      } catch {
        // gone for a moment; keep the old descriptor
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, opts.pollMs ?? 200);
        opts.signal.addEventListener("abort", () => {
          clearTimeout(t);
          resolve();
        }, { once: true });
      });
    }
  } finally {
    closeSync(fd);
  }
}
