/**
 * Shares on libvirt (qemu:///system of the rig's main daemon, TCG guest): the refusals, then
 * virtiofs (libvirt's own virtiofsd per share, memfd shared memory) and 9p both ways on one guest
 * (test/helpers/share-scenario.ts), the shares read back from the domain's metadata, no
 * virtiofsd left after delete. Read-only 9p is enforced by QEMU (<readonly/>); read-only
 * virtiofs only by the guest's `ro` mount (libvirt 9.0 and the C virtiofsd have no read-only
 * export), so only 9p is checked against a guest remounting it read-write. Shares on a remote
 * host (hostc over TCP) are refused: rcloud cannot resolve paths there.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { chmodSync, mkdtempSync, rmSync } from "node:fs";
import { LibvirtClient } from "../../src/libvirt/index.ts";
import { tinyDiskImageDir } from "../helpers/guest.ts";
import { removePool, rig, uniqueName, unixUri } from "../helpers/rig.ts";
import { makeShareDirs, shareRedirected, shareRefusals, shareRoundTrip, type ShareDirs } from "../helpers/share-scenario.ts";
import { startTestServer, waitHealthy, type TestServer } from "../helpers/server.ts";

const poolName = `rctest-shr-${process.pid}`;
const base = mkdtempSync("/tmp/rcs-");
let server: TestServer;
let lv: LibvirtClient;
let dirs: ShareDirs;

beforeAll(async () => {
  chmodSync(base, 0o711); // QEMU (libvirt's user) opens the 9p directories below it
  const images = tinyDiskImageDir("shares-images");
  dirs = makeShareDirs(join(base, "data"));
  lv = await LibvirtClient.connect(unixUri("qemu"));
  server = await startTestServer({
    libvirt: { uri: unixUri("qemu"), storage_pool_name: poolName, storage_pool_path: join(rig().rigDir, "pools", poolName), domain_type: "qemu" },
    images: { base_images_dir: images },
    vm_defaults: { network_mode: "user", user_network_restrict: true, memory_mb: 256, vcpus: 1, root_disk_gb: 1, stop_timeout_s: 20, share_dirs: [dirs.root] },
  });
  await waitHealthy(server);
});

afterAll(async () => {
  await server?.stop();
  await removePool(lv, poolName);
  await lv?.close();
  rmSync(base, { recursive: true, force: true });
});

test("refusals: outside share_dirs, symlink escape, '..', missing, not a directory, duplicate tag, long 9p tag", async () => {
  await shareRefusals(server, dirs, "rcloud-tiny");
}, 60_000);

test("a share redirected on the host after create (a directory on its way swapped for a symbolic link) is refused at start", async () => {
  await shareRedirected(server, dirs, "rcloud-tiny");
}, 120_000);

test("virtiofs and 9p, read-write and read-only, both ways; libvirt's virtiofsd gone after delete", async () => {
  await shareRoundTrip(server, dirs, "rcloud-tiny", { hostEnforcesReadOnly: ["p9ro"] });
}, 400_000);

test("a remote libvirt host refuses shares (its paths cannot be checked from here)", async () => {
  const hosta = rig().hosts.hosta;
  const remote = await startTestServer({
    driver: "libvirt",
    hosts: [{ name: "hosta", uri: hosta.uris.tcp }],
    libvirt: { storage_pool_name: `${poolName}-r`, storage_pool_path: hosta.paths.pool, domain_type: "qemu" },
    images: { base_images_dir: hosta.paths.images },
    vm_defaults: { network_mode: "none", memory_mb: 128, vcpus: 1, root_disk_gb: 1, share_dirs: [dirs.root] },
  });
  try {
    await waitHealthy(remote);
    const r = await remote.req("POST", "/api/v1/vms", { name: uniqueName("shr").slice(0, 40), image: "rcloud-tiny", shares: [{ host_path: join(dirs.root, "linux"), tag: "linux" }] });
    expect({ status: r.status, code: r.json?.error?.code, field: r.json?.error?.field }).toEqual({ status: 501, code: "unsupported", field: "shares[0].host_path" });
    expect(r.json.error.message).toMatch(/remote libvirt host/);
  } finally {
    await remote.stop();
    const c = await LibvirtClient.connect(hosta.uris.tcp);
    await removePool(c, `${poolName}-r`);
    await c.close();
  }
}, 120_000);
