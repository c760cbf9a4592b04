/**
 * PATCH /vms/{id} with `restart: true` on the direct QEMU driver when the guest ignores the
 * ACPI power button (an image with nothing to boot): the graceful stop lasts
 * vm_defaults.stop_timeout_s and no longer, then QEMU is stopped by force, the pending
 * change is applied and the VM runs again on a new QEMU with it.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { uniqueName } from "../helpers/rig.ts";
import { startTestServer, waitHealthy, type TestServer } from "../helpers/server.ts";
import { blankImage, cleanupState, qemuPids, tempDir } from "./helpers.ts";

const STOP_TIMEOUT_S = 3;
const root = tempDir("updrs");
const stateDir = join(root, "state");
let server: TestServer;

beforeAll(async () => {
  const images = join(root, "images");
  mkdirSync(images);
  blankImage(images, "nothing-to-boot");
  server = await startTestServer({
    driver: "qemu",
    qemu: { accel: "tcg", state_dir: stateDir },
    images: { base_images_dir: images },
    vm_defaults: { network_mode: "none", memory_mb: 128, vcpus: 1, root_disk_gb: 1, stop_timeout_s: STOP_TIMEOUT_S },
  });
  await waitHealthy(server);
});

afterAll(async () => {
  await server?.stop();
  await cleanupState(root);
});

/** The command line of the VM's QEMU, as its arguments. */
function qemuArgs(pid: number): string[] {
  return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
}

test("restart: true on a guest that ignores ACPI: graceful stop bounded by stop_timeout_s, forced, changed, running", async () => {
  const name = uniqueName("updrs").slice(0, 40);
  const made = await server.req("POST", "/api/v1/vms", { name, image: "nothing-to-boot", vcpus: 1, max_vcpus: 1, memory_mb: 128, max_memory_mb: 128 });
  expect({ status: made.status, error: made.json?.error }).toEqual({ status: 201, error: undefined });
  const vmDir = join(stateDir, "vms", made.json.id);
  try {
    const [before] = qemuPids(vmDir);
    expect(before).toBeGreaterThan(1);
    // Beyond its maximums: pending while it runs.
    const set = await server.req("PATCH", `/api/v1/vms/${name}`, { vcpus: 2, memory_mb: 192 });
    expect(set.status).toBe(200);
    expect({ restart: set.json.restart_required, pending: set.json.pending }).toMatchObject({ restart: true, pending: { vcpus: 2, memory_mb: 192 } });

    const t0 = performance.now();
    const r = await server.req("PATCH", `/api/v1/vms/${name}`, { restart: true });
    const elapsedS = (performance.now() - t0) / 1000;
    expect(r.status).toBe(200);
    // It waited for the guest as long as stop_timeout_s allows, and not much longer
    // (the default stop_timeout_s is far above this bound).
    expect(elapsedS).toBeGreaterThanOrEqual(STOP_TIMEOUT_S);
    expect(elapsedS).toBeLessThan(STOP_TIMEOUT_S + 20);
    expect({ state: r.json.state, vcpus: r.json.vcpus, memory: r.json.memory_mb, pending: r.json.pending, restart: r.json.restart_required }).toEqual({
      state: "running",
      vcpus: 2,
      memory: 192,
      pending: null,
      restart: false,
    });
    // A new QEMU, started with the change.
    const after = qemuPids(vmDir);
    expect(after).toHaveLength(1);
    expect(after[0]).not.toBe(before);
    const args = qemuArgs(after[0] as number);
    expect(args[args.indexOf("-smp") + 1]).toStartWith("2,");
    expect(args[args.indexOf("-m") + 1]).toBe("192");
  } finally {
    await server.req("DELETE", `/api/v1/vms/${name}?force=true`);
  }
}, 120_000);
