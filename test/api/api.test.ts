/**
 * The REST API against a real libvirtd through its test driver (fast breadth): the shared
 * cases of test/api/cases.ts (every endpoint, status code and error path, kdevops
 * compatibility, concurrency, rollback, restart of rcloud, 503 while libvirt is unreachable).
 * test/qemu/api.test.ts runs the same cases on the direct QEMU driver.
 */
import { describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LibvirtClient, remoteProcedures as P } from "../../src/libvirt/index.ts";
import { installedLibvirtVersion, removePool, uniqueName, unixUri } from "../helpers/rig.ts";
import { mirrorToTestDriver, startTestServer, testDriverConfig, waitHealthy } from "../helpers/server.ts";
import { apiSuite, type SuiteDirs } from "./cases.ts";

const poolName = `rctest-pool-${process.pid}`;
let lv: LibvirtClient; // keeps the test driver's state alive and lets us look behind rcloud

function config(dirs: SuiteDirs, extra: Record<string, unknown> = {}) {
  return {
    libvirt: { uri: unixUri("test"), storage_pool_name: poolName, storage_pool_path: `/rctest/${poolName}` },
    images: { base_images_dir: dirs.imagesDir },
    vm_defaults: { network_mode: "bridge", network_bridge: "default", memory_mb: 256, vcpus: 1, root_disk_gb: 2, kernel_dir: dirs.kernelDir },
    ...extra,
  };
}

async function poolVolumes(): Promise<string[]> {
  const { pool } = await lv.call(P.storagePoolLookupByName, { name: poolName });
  const { vols } = await lv.call(P.storagePoolListAllVolumes, { pool, need_results: 1, flags: 0 });
  return vols.map((v) => v.name);
}

apiSuite("libvirt", config, {
  driver: "libvirt",
  setup: async (dirs) => {
    lv = await LibvirtClient.connect(unixUri("test"));
    await mirrorToTestDriver(poolName, dirs); // what the driver lists through its pools
  },
  teardown: async () => {
    await removePool(lv, poolName);
    await lv.close();
  },
  artifacts: poolVolumes,
  guest: null,
  vmExtras: () => ({}),
  memoryMb: 256,
  lifecycleNetwork: { request: undefined, expect: { mode: "bridge", bridge: "default" }, mac: true },
  checkStatus: (json) => {
    // The version of the rig's libvirtd, whatever this machine installed; the driver type is fixed.
    expect(json.libvirt_version).toMatch(/^\d+\.\d+\.\d+$/);
    expect(json.libvirt_version).toBe(installedLibvirtVersion());
    expect(json.hypervisor).toBe("TEST");
    expect(json.storage.pool).toBe(poolName);
  },
  broken: (dirs) => {
    // An operator's template with an element libvirt's schema does not know: only schema
    // validation (done for custom templates) rejects it, after the volumes were made.
    const dir = mkdtempSync(join(tmpdir(), "rcloud-tpl-"));
    const broken = join(dir, "broken.xml.liquid");
    writeFileSync(broken, readFileSync(join(import.meta.dir, "../../templates/vm-q35.xml.liquid"), "utf8").replace("<memballoon model='virtio'/>", "<memballoon model='virtio'/><rcloud-no-such-device/>"));
    return {
      config: config(dirs, { vm_defaults: { network_mode: "bridge", network_bridge: "default", memory_mb: 256, vcpus: 1, root_disk_gb: 2, template: broken } }),
      artifacts: poolVolumes,
    };
  },
  unreachable: (dirs) =>
    config(dirs, { libvirt: { uri: "test+unix:///default?socket=/nonexistent/rcloud-test.sock", storage_pool_name: poolName, storage_pool_path: "/rctest/x" } }),
  exclusiveState: false,
  sshKeys: false,
});

describe("libvirt: vm_defaults.vcpu_overcommit", () => {
  test("bounds a VM's vCPUs per host CPU", async () => {
    const pool = `rctest-overcommit-${process.pid}`;
    const server = await startTestServer(await testDriverConfig(pool, { network_mode: "none", memory_mb: 256, root_disk_gb: 2, vcpu_overcommit: 1 }));
    try {
      await waitHealthy(server);
      const cpus = (await server.req("GET", "/api/v1/status")).json.cpus as number;
      expect(cpus).toBeGreaterThan(0);
      const name = uniqueName("overcommit").slice(0, 40);
      const over = await server.req("POST", "/api/v1/vms", { name, image: "debian13", vcpus: cpus + 1 });
      expect(over.status).toBe(422);
      expect(over.json.error.code).toBe("capacity_exceeded");
      expect(over.json.error.message).toContain("vm_defaults.vcpu_overcommit");
      const ok = await server.req("POST", "/api/v1/vms", { name, image: "debian13", vcpus: cpus });
      expect(ok.status).toBe(201);
      await server.req("DELETE", `/api/v1/vms/${name}`);
    } finally {
      await server.stop();
      const lv = await LibvirtClient.connect(unixUri("test"));
      await removePool(lv, pool);
      await lv.close();
    }
  });
});

describe("libvirt: NVMe disks and operators' templates", () => {
  test("a template without the nvme_disks block refuses NVMe disks clearly and leaves no volume", async () => {
    const pool = `rctest-nvmetpl-${process.pid}`;
    const dir = mkdtempSync(join(tmpdir(), "rcloud-tpl-"));
    const old = join(dir, "old.xml.liquid");
    // what an operator's copy of the template looked like before NVMe disks
    const embedded = readFileSync(join(import.meta.dir, "../../templates/vm-q35.xml.liquid"), "utf8");
    const stripped = embedded.replace(/\{%- for disk in nvme_disks %\}[\s\S]*?\{%- endfor %\}/g, "").replace(" or nvme_disks.size > 0", "");
    expect(stripped).not.toMatch(/for disk in nvme_disks|nvme_disks\.size/);
    writeFileSync(old, stripped);
    const server = await startTestServer(await testDriverConfig(pool, { network_mode: "none", memory_mb: 256, root_disk_gb: 2, template: old }));
    const lv = await LibvirtClient.connect(unixUri("test"));
    try {
      await waitHealthy(server);
      const name = uniqueName("nvmetpl").slice(0, 40);
      const r = await server.req("POST", "/api/v1/vms", { name, image: "debian13", extra_disks: [{ size_gb: 1 }, { size_gb: 1, type: "nvme" }] });
      expect(r.status).toBe(501);
      expect(r.json.error.code).toBe("unsupported");
      expect(r.json.error.message).toContain("nvme_disks");
      expect(r.json.error.message).toContain("kdevops1");
      const { pool: p } = await lv.call(P.storagePoolLookupByName, { name: pool });
      expect((await lv.call(P.storagePoolListAllVolumes, { pool: p, need_results: 1, flags: 0 })).vols).toEqual([]);
      // the same VM without NVMe is fine with that template
      const ok = await server.req("POST", "/api/v1/vms", { name, image: "debian13", extra_disks: [{ size_gb: 1 }] });
      expect(ok.status).toBe(201);
      await server.req("DELETE", `/api/v1/vms/${name}`);
    } finally {
      await server.stop();
      await removePool(lv, pool);
      await lv.close();
    }
  });
});
