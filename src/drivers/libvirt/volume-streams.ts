/**
 * A volume's bytes in and out through libvirt streams, each on a connection of its own: a
 * download holds the daemon back by TCP when its reader is slow (LibvirtStream's read
 * backpressure stops the whole connection, which must not hold up VM calls), and an upload
 * waits for the socket to drain. Neither ever holds more than a few MiB of the image.
 */
import { type LibvirtClient, remoteProcedures as P } from "../../libvirt/index.ts";
import type { RemoteNonnullStorageVol } from "../../libvirt/index.ts";
import { copyExactly } from "../shared/image-files.ts";

/** Bytes of a download held unread before the daemon is made to wait. */
const DOWNLOAD_BUFFER_BYTES = 4 * 1024 * 1024;

/**
 * The volume's bytes from `offset` as a stream that delivers exactly `sizeBytes` (or fails).
 * `session` is the connection's own and is closed when the stream ends, fails or is cancelled.
 */
export async function downloadVolume(session: LibvirtClient, vol: RemoteNonnullStorageVol, sizeBytes: number, offset = 0): Promise<ReadableStream<Uint8Array>> {
  let down;
  try {
    // From `offset`, the whole rest (length 0) or, for a part, just that many bytes.
    const length = offset > 0 ? BigInt(sizeBytes) : 0n;
    down = await session.openStream(P.storageVolDownload, { vol, offset: BigInt(offset), length, flags: 0 }, { readHighWaterMark: DOWNLOAD_BUFFER_BYTES });
  } catch (e) {
    await session.close();
    throw e;
  }
  const stream = down;
  const reader = stream.readable.getReader();
  let seen = 0;
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        try {
          const { value, done } = await reader.read();
          if (done) {
            await stream.done;
            if (seen !== sizeBytes) throw new Error(`${vol.name} ended after ${seen} of ${sizeBytes} bytes (changed while being read?)`);
            controller.close();
            await session.close();
            return;
          }
          seen += value.byteLength;
          if (seen > sizeBytes) throw new Error(`${vol.name} is longer than its ${sizeBytes} bytes (changed while being read?)`);
          controller.enqueue(value);
        } catch (e) {
          controller.error(e);
          await stream.abort();
          await session.close();
        }
      },
      async cancel(reason) {
        await reader.cancel(reason).catch(() => {});
        await session.close();
      },
    },
    { highWaterMark: 0 }, // read from libvirt only when our reader asks
  );
}

/**
 * Writes `data` into a volume from its start: exactly `sizeBytes`, or it fails (and cancels
 * `data`). `session` is the connection's own; the caller closes it.
 */
export async function uploadVolume(session: LibvirtClient, vol: RemoteNonnullStorageVol, sizeBytes: number, data: ReadableStream<Uint8Array>): Promise<void> {
  const reader = data.getReader();
  let up;
  try {
    up = await session.openStream(P.storageVolUpload, { vol, offset: 0n, length: BigInt(sizeBytes), flags: 0 });
  } catch (e) {
    await reader.cancel(e).catch(() => {});
    throw e;
  }
  try {
    await copyExactly(reader, sizeBytes, (chunk) => up.write(chunk));
    await up.finish();
  } catch (e) {
    await reader.cancel(e).catch(() => {});
    await up.abort();
    throw e;
  }
}
