/**
 * A volume upload/download round trip through libvirt streams on a dir pool: several MiB
 * each way (the write queue and drain path), the bytes back are the bytes sent, an aborted
 * upload leaves the connection usable. Shared by the unix/TCP and the TLS/SSH tests.
 */
import { expect } from "bun:test";
import { mkdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { createHash, randomBytes } from "node:crypto";
import { LibvirtError, remoteProcedures as P, type LibvirtClient, type LibvirtPool } from "../../src/libvirt/index.ts";
import type { RemoteNonnullStoragePool } from "../../src/codecs/generated/remote.ts";
import { uniqueName } from "./rig.ts";

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/**
 * A transient dir pool in `localDir`/<name>, which the daemon sees as `daemonDir`/<name>
 * (the same directory unless the daemon lives in another mount namespace).
 */
export async function withDirPool(
  client: LibvirtClient | LibvirtPool,
  dirs: { localDir: string; daemonDir: string },
  cleanup: (() => Promise<void>)[],
): Promise<{ pool: RemoteNonnullStoragePool; dir: string }> {
  const name = uniqueName("vpool");
  const dir = join(dirs.localDir, name);
  mkdirSync(dir, { recursive: true });
  const { pool } = await client.call(P.storagePoolCreateXml, {
    xml: `<pool type='dir'><name>${name}</name><target><path>${join(dirs.daemonDir, name)}</path></target></pool>`,
    flags: 0,
  });
  cleanup.push(async () => {
    await client.call(P.storagePoolDestroy, { pool }).catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  });
  return { pool, dir };
}

export async function volumeRoundTrip(client: LibvirtClient, dirs: { localDir: string; daemonDir: string }, cleanup: (() => Promise<void>)[]): Promise<void> {
  const { pool, dir } = await withDirPool(client, dirs, cleanup);
  const size = 5 * 1024 * 1024 + 12345; // not a multiple of the packet size
  const { vol } = await client.call(P.storageVolCreateXml, {
    pool,
    xml: `<volume><name>blob.raw</name><capacity unit='bytes'>${size}</capacity><target><format type='raw'/></target></volume>`,
    flags: 0,
  });
  const data = new Uint8Array(randomBytes(size));

  const up = await client.openStream(P.storageVolUpload, { vol, offset: 0n, length: BigInt(size), flags: 0 });
  const writer = up.writable.getWriter();
  for (let off = 0; off < size; off += 700_000) await writer.write(data.subarray(off, Math.min(off + 700_000, size)));
  await writer.close();
  expect(up.status).toBe("closed");
  expect(sha(new Uint8Array(readFileSync(join(dir, "blob.raw"))))).toBe(sha(data));

  // Other calls keep working on the same connection while a stream is open.
  const down = await client.openStream(P.storageVolDownload, { vol, offset: 0n, length: 0n, flags: 0 });
  const info = await client.call(P.storageVolGetInfo, { vol });
  expect(info.capacity).toBe(BigInt(size));
  const chunks: Uint8Array[] = [];
  for await (const c of down.readable) chunks.push(c);
  await down.done;
  const back = new Uint8Array(Buffer.concat(chunks));
  expect(back.byteLength).toBe(size);
  expect(sha(back)).toBe(sha(data));

  // Aborting an upload midway is confirmed by the daemon and leaves the connection usable.
  const partial = await client.openStream(P.storageVolUpload, { vol, offset: 0n, length: BigInt(size), flags: 0 });
  await partial.write(data.subarray(0, 100_000));
  await partial.abort();
  expect(partial.status).toBe("closed");

  await client.call(P.storageVolDelete, { vol, flags: 0 });
  const gone = await client.call(P.storageVolLookupByName, { pool, name: "blob.raw" }).catch((e) => e);
  expect(gone).toBeInstanceOf(LibvirtError);
}
