/**
 * Shares on the direct QEMU driver (TCG guest, rcloud as root, QEMU as rcloud-qemu): the
 * refusals, then virtiofs (a virtiofsd per share that rcloud starts and stops by PID) and 9p
 * both ways on one guest (test/helpers/share-scenario.ts). Read-only virtiofs is enforced on the
 * host (a read-only bind mount under virtiofsd), read-only 9p by QEMU: a guest remounting them
 * read-write still gets EROFS.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { copyFileSync, existsSync, mkdirSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { VIRTIOFSD } from "../../src/drivers/qemu/virtiofsd.ts";
import { makeShareDirs, shareRedirected, shareRefusals, shareRoundTrip, type ShareDirs } from "../helpers/share-scenario.ts";
import { startTestServer, waitHealthy, type TestServer } from "../helpers/server.ts";
import { cleanupState, DISK_IMAGE, tempDir } from "./helpers.ts";

const root = tempDir("shr");
const stateDir = join(root, "state");
let server: TestServer;
let dirs: ShareDirs;

beforeAll(async () => {
  if (!existsSync(DISK_IMAGE)) throw new Error(`${DISK_IMAGE} missing: run scripts/lib/disk-image.sh (scripts/test does)`);
  if (!existsSync(VIRTIOFSD)) throw new Error(`${VIRTIOFSD} missing: install qemu-system-common (scripts/lib/install-deps.sh)`);
  if (process.getuid?.() !== 0) throw new Error("virtiofsd's sandbox and the read-only bind mount need root: run the test as root");
  const images = join(root, "images");
  mkdirSync(images);
  copyFileSync(DISK_IMAGE, join(images, "rcloud-tiny.qcow2"));
  dirs = makeShareDirs(join(root, "data"));
  server = await startTestServer({
    driver: "qemu",
    qemu: { accel: "tcg", state_dir: stateDir },
    images: { base_images_dir: images },
    vm_defaults: { network_mode: "user", user_network_restrict: true, memory_mb: 256, vcpus: 1, root_disk_gb: 1, stop_timeout_s: 30, share_dirs: [dirs.root] },
  });
  await waitHealthy(server);
});

afterAll(async () => {
  await server.stop();
  await cleanupState(root);
});

test("refusals: outside share_dirs, symlink escape, '..', missing, not a directory, duplicate tag, long 9p tag", async () => {
  await shareRefusals(server, dirs, "rcloud-tiny");
  expect(existsSync(join(stateDir, "vms")) ? readdirSync(join(stateDir, "vms")) : []).toEqual([]);
}, 60_000);

test("a share redirected on the host after create (a directory on its way swapped for a symbolic link) is refused at start", async () => {
  await shareRedirected(server, dirs, "rcloud-tiny");
}, 120_000);

test("virtiofs and 9p, read-write and read-only, both ways; virtiofsd gone after delete", async () => {
  await shareRoundTrip(server, dirs, "rcloud-tiny", { hostEnforcesReadOnly: ["ref", "p9ro"] });
  expect(readdirSync(join(stateDir, "vms"))).toEqual([]);
}, 400_000);
