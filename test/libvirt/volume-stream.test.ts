/**
 * Volume upload and download through libvirt streams on a real dir pool (qemu driver):
 * several MiB each way, so the write queue and drain path are exercised, and the bytes
 * that come back are the bytes that went in (test/helpers/volumes.ts; the TLS and SSH
 * transports run the same round trip in transports.test.ts).
 */
import { afterAll, describe, test } from "bun:test";
import { join } from "node:path";
import { LibvirtClient } from "../../src/libvirt/index.ts";
import { rig, tcpUri, unixUri } from "../helpers/rig.ts";
import { volumeRoundTrip } from "../helpers/volumes.ts";

const cleanup: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanup.reverse()) await c().catch(() => {});
});

async function roundTrip(uri: string): Promise<void> {
  const client = await LibvirtClient.connect(uri);
  cleanup.push(() => client.close());
  const pools = join(rig().rigDir, "pools");
  await volumeRoundTrip(client, { localDir: pools, daemonDir: pools }, cleanup);
}

describe("volume streams", () => {
  test("upload and download over the unix socket", async () => {
    await roundTrip(unixUri("qemu"));
  });

  test("upload and download over TCP", async () => {
    await roundTrip(tcpUri("qemu", "remote"));
  });
});
