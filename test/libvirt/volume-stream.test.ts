/**
 * Volume upload and download through libvirt streams on a real dir pool (qemu driver):
 * several MiB each way, so the write queue and drain path are exercised, and the bytes
 * that come back are the bytes that went in.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { createHash, randomBytes } from "node:crypto";
import { LibvirtClient, LibvirtError, remoteProcedures as P } from "../../src/libvirt/index.ts";
import type { RemoteNonnullStoragePool } from "../../src/codecs/generated/remote.ts";
import { rig, tcpUri, uniqueName, unixUri } from "../helpers/rig.ts";

const cleanup: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanup.reverse()) await c().catch(() => {});
});

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

async function withPool(client: LibvirtClient): Promise<{ pool: RemoteNonnullStoragePool; dir: string }> {
  const name = uniqueName("vpool");
  const dir = join(rig().rigDir, "pools", name);
  mkdirSync(dir, { recursive: true });
  const { pool } = await client.call(P.storagePoolCreateXml, {
    xml: `<pool type='dir'><name>${name}</name><target><path>${dir}</path></target></pool>`,
    flags: 0,
  });
  cleanup.push(async () => {
    await client.call(P.storagePoolDestroy, { pool }).catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  });
  return { pool, dir };
}

async function roundTrip(uri: string): Promise<void> {
  const client = await LibvirtClient.connect(uri);
  cleanup.push(() => client.close());
  const { pool, dir } = await withPool(client);
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

describe("volume streams", () => {
  test("upload and download over the unix socket", async () => {
    await roundTrip(unixUri("qemu"));
  });

  test("upload and download over TCP", async () => {
    await roundTrip(tcpUri("qemu", "remote"));
  });
});
