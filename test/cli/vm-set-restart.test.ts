/**
 * `rcloud vm set NAME --restart` (the CLI as a child process) against a real rcloud on the
 * direct QEMU driver: a change that waits as pending on a running VM is applied by the
 * restart — the VM is stopped, changed and started, and its pending is gone.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type CliRun, runCliProcess } from "../helpers/cli.ts";
import { uniqueName } from "../helpers/rig.ts";
import { startTestServer, waitHealthy, type TestServer } from "../helpers/server.ts";
import { cleanupState, DISK_IMAGE, tempDir } from "../qemu/helpers.ts";

const root = tempDir("cliset");
let server: TestServer;
let home: string;

function cli(args: string[]): Promise<CliRun> {
  return runCliProcess(args, { RCLOUD_ENDPOINT: server.url, HOME: home, RCLOUD_TOKEN: undefined });
}

beforeAll(async () => {
  if (!existsSync(DISK_IMAGE)) throw new Error(`${DISK_IMAGE} missing: run scripts/lib/disk-image.sh (scripts/test does)`);
  home = mkdtempSync(join(tmpdir(), "rcloud-cli-home-"));
  const images = join(root, "images");
  mkdirSync(images);
  copyFileSync(DISK_IMAGE, join(images, "rcloud-tiny.qcow2"));
  server = await startTestServer({
    driver: "qemu",
    qemu: { accel: "tcg", state_dir: join(root, "state") },
    images: { base_images_dir: images },
    // A short graceful stop: the restart does not wait on a guest still booting.
    vm_defaults: { network_mode: "none", memory_mb: 128, vcpus: 1, root_disk_gb: 1, stop_timeout_s: 3 },
  });
  await waitHealthy(server);
});

afterAll(async () => {
  await server?.stop();
  await cleanupState(root);
});

test("vm set --restart applies what is pending on a running VM and runs it again", async () => {
  const name = uniqueName("cliset").slice(0, 40);
  const made = await server.req("POST", "/api/v1/vms", { name, image: "rcloud-tiny", vcpus: 1, max_vcpus: 1, memory_mb: 128, max_memory_mb: 128 });
  expect({ status: made.status, error: made.json?.error }).toEqual({ status: 201, error: undefined });
  try {
    // More than its maximums: waits for the next stop and start.
    const set = await cli(["vm", "set", name, "--vcpus", "2", "--memory", "192M", "-o", "json"]);
    expect({ code: set.code, stderr: set.stderr }).toEqual({ code: 0, stderr: "" });
    const pending = JSON.parse(set.stdout);
    expect({ vcpus: pending.vcpus, memory: pending.memory_mb, restart: pending.restart_required, state: pending.state }).toEqual({ vcpus: 1, memory: 128, restart: true, state: "running" });
    expect(pending.pending).toMatchObject({ vcpus: 2, memory_mb: 192 });

    const r = await cli(["vm", "set", name, "--restart"]);
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: "" });
    expect(r.stdout).toBe(`Changed VM ${name}: 2 vCPUs, 192M memory, running\n`);
    const vm = (await server.req("GET", `/api/v1/vms/${name}`)).json;
    expect({ vcpus: vm.vcpus, memory: vm.memory_mb, state: vm.state, pending: vm.pending ?? null, restart: vm.restart_required }).toEqual({
      vcpus: 2,
      memory: 192,
      state: "running",
      pending: null,
      restart: false,
    });
  } finally {
    await server.req("DELETE", `/api/v1/vms/${name}?force=true`);
  }
}, 300_000);
