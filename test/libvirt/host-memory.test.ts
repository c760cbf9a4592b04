/**
 * Host memory through the real libvirtd (the rig's qemu:///system, which runs on this host):
 * GET /api/v1/status reports the host's RAM as /proc/meminfo has it. NODE_GET_INFO's figure is
 * the NUMA cells' sum, which a fresh machine reported as 4,825 of 24 GiB; rcloud reads
 * NODE_GET_MEMORY_STATS for all cells instead. The overcommit limit follows the reported
 * memory, whatever this machine has.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { LibvirtClient } from "../../src/libvirt/index.ts";
import { fakeImageDir, startTestServer, waitHealthy, type TestServer } from "../helpers/server.ts";
import { removePool, rig, unixUri } from "../helpers/rig.ts";

const poolName = `rctest-hostmem-${process.pid}`;
let server: TestServer;
let lv: LibvirtClient;

function procMeminfoMb(key: string): number {
  const m = new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(readFileSync("/proc/meminfo", "utf8"));
  if (!m) throw new Error(`no ${key} in /proc/meminfo`);
  return Number(m[1]) / 1024;
}

beforeAll(async () => {
  lv = await LibvirtClient.connect(unixUri("qemu"));
  server = await startTestServer({
    libvirt: { uri: unixUri("qemu"), storage_pool_name: poolName, storage_pool_path: join(rig().rigDir, "pools", poolName), domain_type: "qemu" },
    images: { base_images_dir: fakeImageDir() },
    vm_defaults: { network_mode: "none", memory_mb: 256, vcpus: 1, root_disk_gb: 2, memory_overcommit: 0.5 },
  });
  await waitHealthy(server);
});

afterAll(async () => {
  await server?.stop();
  if (lv) {
    await removePool(lv, poolName);
    await lv.close();
  }
});

test("status reports the host's total memory (MemTotal) and what is available (free + buffers + cached)", async () => {
  const status = (await server.req("GET", "/api/v1/status")).json;
  const total = procMeminfoMb("MemTotal");
  expect(Math.abs(status.memory_mb - total) / total).toBeLessThan(0.03);
  // Available memory moves while other work runs: within a tenth of the host's memory.
  const available = procMeminfoMb("MemFree") + procMeminfoMb("Buffers") + procMeminfoMb("Cached");
  expect(status.free_memory_mb).toBeGreaterThan(0);
  expect(status.free_memory_mb).toBeLessThanOrEqual(status.memory_mb);
  expect(Math.abs(status.free_memory_mb - available)).toBeLessThan(total / 10);
});

test("a VM above the host's memory × memory_overcommit is refused, naming the key", async () => {
  const hostMb = (await server.req("GET", "/api/v1/status")).json.memory_mb as number;
  const limit = Math.floor(hostMb * 0.5);
  const r = await server.req("POST", "/api/v1/vms", { name: "rctest-hostmem-big", image: "debian13", memory_mb: limit + 1 });
  expect(r.status).toBe(422);
  expect(r.json.error.code).toBe("capacity_exceeded");
  expect(r.json.error.message).toContain("vm_defaults.memory_overcommit");
  expect(r.json.error.message).toContain(`${limit} MiB`);
  expect((await server.req("GET", "/api/v1/vms")).json.vms).toEqual([]);
});
