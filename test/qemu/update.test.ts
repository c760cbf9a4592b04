/**
 * PATCH /vms/{id} on the direct QEMU driver (TCG, QEMU as rcloud-qemu under its sandbox): the
 * shared scenario of test/helpers/update-scenario.ts — data disks plugged in and out over QMP
 * (blockdev-add + device_add on spare PCIe root ports and the virtio-scsi controller),
 * block_resize of the root disk, the balloon and vCPU hot-plug, refusals, a change failing
 * midway, pending changes and `restart: true` — each checked inside the guest.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { copyFileSync, existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { uniqueName } from "../helpers/rig.ts";
import { startTestServer, waitHealthy, type TestServer } from "../helpers/server.ts";
import { GuestUnderTest, scenarioVm, updateScenario } from "../helpers/update-scenario.ts";
import { cleanupState, DISK_IMAGE, stateFiles, tempDir } from "./helpers.ts";

const root = tempDir("upd");
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
    vm_defaults: { network_mode: "user", user_network_restrict: true, memory_mb: 256, vcpus: 1, root_disk_gb: 1, stop_timeout_s: 60, vcpu_overcommit: 4 },
  });
  await waitHealthy(server);
});

afterAll(async () => {
  await server.stop();
  await cleanupState(root);
});

test("a running VM changed in place: disks, root disk, memory, vCPUs; pending; restart", async () => {
  const g = await GuestUnderTest.create(server, scenarioVm(uniqueName("upd").slice(0, 40)));
  const dir = join(stateDir, "vms", g.vm.id);
  await updateScenario(g, async (serial) => {
    // A directory where the disk's file would go: the driver never writes over what is there.
    mkdirSync(join(dir, `${serial.replace("kdevops", "data")}.qcow2`));
  });
  const json = JSON.parse(readFileSync(join(dir, "vm.json"), "utf8"));
  expect({ vcpus: json.vcpus, memory: json.memory_mb, disks: json.disks.map((d: { file: string }) => d.file) }).toEqual({
    vcpus: 3,
    memory: 512,
    disks: ["root.qcow2", "data0.qcow2", "data2.qcow2", "seed.iso"],
  });
  // The removed disk's file is gone, the rolled-back one too; the blocking directory is left alone.
  const files = stateFiles(stateDir).map((f) => f.slice(g.vm.id.length + 1));
  expect(files.filter((f) => f.startsWith("data")).sort()).toEqual(["data0.qcow2", "data2.qcow2", "data4.qcow2"]);
  await g.delete();
}, 600_000);
