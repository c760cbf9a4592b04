/** Streams and assertions the image tests of both drivers share. */
import { expect } from "bun:test";
import { createHash } from "node:crypto";
import { DriverError } from "../../src/drivers/types.ts";

/** A stream of `bytes` in chunks that fails after `failAfter` bytes (null: never); `cancelled` says whether it was cancelled. */
export function byteSource(bytes: Uint8Array, failAfter: number | null = null, chunk = 256 * 1024): { stream: ReadableStream<Uint8Array>; cancelled: () => boolean } {
  let off = 0;
  let cancelled = false;
  const stream = new ReadableStream<Uint8Array>({
    pull(c) {
      if (failAfter !== null && off >= failAfter) return c.error(new Error("source host went away"));
      if (off >= bytes.byteLength) return c.close();
      const n = Math.min(chunk, bytes.byteLength - off);
      c.enqueue(bytes.subarray(off, off + n));
      off += n;
    },
    cancel() {
      cancelled = true;
    },
  });
  return { stream, cancelled: () => cancelled };
}

export const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/** sha256 and length of a stream, read chunk by chunk (never held whole). */
export async function digest(data: ReadableStream<Uint8Array>): Promise<{ sha: string; bytes: number }> {
  const h = createHash("sha256");
  let bytes = 0;
  for await (const chunk of data) {
    h.update(chunk);
    bytes += chunk.byteLength;
  }
  return { sha: h.digest("hex"), bytes };
}

/** The DriverError a driver call fails with (the test fails if it succeeds or fails otherwise). */
export async function driverRejection(p: Promise<unknown>): Promise<DriverError> {
  const e = await p.then(() => null, (x) => x);
  expect(e).toBeInstanceOf(DriverError);
  return e as DriverError;
}
