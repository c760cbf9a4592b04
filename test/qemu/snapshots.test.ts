/**
 * Snapshots on the direct QEMU driver (TCG, QEMU as rcloud-qemu): the shared scenario
 * (test/helpers/snapshot-scenario.ts) — memory snapshots through QMP's snapshot-save/-load
 * jobs, disk-only ones through qemu-img — and nothing left in the state directory after the
 * VM's delete.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { copyFileSync, existsSync, mkdirSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { snapshotScenario } from "../helpers/snapshot-scenario.ts";
import { uniqueName } from "../helpers/rig.ts";
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

// QEMU finds a snapshot by ID before name: with "base" (ID 1) and "1" (ID 2), "1" is "base".
test("all-digit snapshot names are refused (422 validation_error, saying why) in a body and a path", async () => {
  const created = await server.req("POST", "/api/v1/vms", { name: uniqueName("snapd").slice(0, 40), image: "rcloud-tiny", start: false, network: { mode: "none" } });
  expect(created.status).toBe(201);
  const id = created.json.id;
  try {
    const base = await server.req("POST", `/api/v1/vms/${id}/snapshots`, { name: "base" });
    expect({ status: base.status, id: base.json?.name }).toEqual({ status: 201, id: "base" });
    const refusals = [
      await server.req("POST", `/api/v1/vms/${id}/snapshots`, { name: "1" }),
      await server.req("POST", `/api/v1/vms/${id}/snapshots`, { name: "007" }),
      await server.req("POST", `/api/v1/vms/${id}/snapshots/1/revert`),
      await server.req("DELETE", `/api/v1/vms/${id}/snapshots/1`),
    ];
    for (const r of refusals) {
      expect({ status: r.status, code: r.json?.error?.code, field: r.json?.error?.field }).toEqual({ status: 422, code: "validation_error", field: "name" });
      expect(r.json.error.message).toMatch(/not digits only \(QEMU would take an all-digit name for another snapshot's numeric ID\)/);
    }
    // "base" is untouched, and a name with a digit and more is fine.
    expect((await server.req("POST", `/api/v1/vms/${id}/snapshots`, { name: "1.0" })).status).toBe(201);
    expect((await server.req("GET", `/api/v1/vms/${id}/snapshots`)).json.snapshots.map((s: { name: string }) => s.name)).toEqual(["base", "1.0"]);
  } finally {
    expect((await server.req("DELETE", `/api/v1/vms/${id}`)).status).toBe(200);
  }
}, 120_000);
