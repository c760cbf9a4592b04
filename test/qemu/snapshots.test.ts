/**
 * Snapshots on the direct QEMU driver (TCG, QEMU as rcloud-qemu): the shared scenario
 * (test/helpers/snapshot-scenario.ts) — memory snapshots through QMP's snapshot-save/-load
 * jobs, disk-only ones through qemu-img — and nothing left in the state directory after the
 * VM's delete.
 */
import { afterAll, beforeAll, test } from "bun:test";
import { copyFileSync, existsSync, mkdirSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { snapshotScenario } from "../helpers/snapshot-scenario.ts";
import { startTestServer, waitHealthy, type TestServer } from "../helpers/server.ts";
import { cleanupState, DISK_IMAGE, tempDir } from "./helpers.ts";

const root = tempDir("snapshots");
const stateDir = join(root, "state");
let server: TestServer;

beforeAll(async () => {
  if (!existsSync(DISK_IMAGE)) throw new Error(`${DISK_IMAGE} missing: run scripts/lib/disk-image.sh (scripts/test does)`);
  const images = join(root, "images");
  mkdirSync(images);
  copyFileSync(DISK_IMAGE, join(images, "rcloud-tiny.qcow2"));
  server = await startTestServer({
    driver: "qemu",
    qemu: { accel: "tcg", state_dir: stateDir },
    images: { base_images_dir: images },
    vm_defaults: { network_mode: "user", user_network_restrict: true, memory_mb: 256, vcpus: 1, root_disk_gb: 1, stop_timeout_s: 30 },
  });
  await waitHealthy(server);
});

afterAll(async () => {
  await server.stop();
  await cleanupState(root);
});

test("memory and disk-only snapshots: taken, listed, reverted, refused, deleted with the VM", async () => {
  await snapshotScenario(server, async () => readdirSync(join(stateDir, "vms")));
}, 900_000);
