/**
 * PATCH /vms/{id} on qemu:///system (the rig's libvirtd, TCG guests): the shared scenario of
 * test/helpers/update-scenario.ts — data disks attached and detached live (virtio on spare
 * PCIe root ports, SCSI on a virtio-scsi controller attached for it), block resize of the root
 * disk, the balloon and vCPU hot-plug, refusals, a change failing midway, pending changes and
 * `restart: true` — each checked inside the guest; then the domain's definition and the pool.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { parseDomainXml } from "../../src/drivers/libvirt/domain-xml.ts";
import { LibvirtClient, remoteProcedures as P } from "../../src/libvirt/index.ts";
import { tinyDiskImageDir } from "../helpers/guest.ts";
import { removePool, rig, uniqueName, unixUri } from "../helpers/rig.ts";
import { startTestServer, waitHealthy, type TestServer } from "../helpers/server.ts";
import { GuestUnderTest, scenarioVm, updateScenario } from "../helpers/update-scenario.ts";

const poolName = `rctest-update-${process.pid}`;
let server: TestServer;
let lv: LibvirtClient;

beforeAll(async () => {
  lv = await LibvirtClient.connect(unixUri("qemu"));
  server = await startTestServer({
    libvirt: { uri: unixUri("qemu"), storage_pool_name: poolName, storage_pool_path: join(rig().rigDir, "pools", poolName), domain_type: "qemu" },
    images: { base_images_dir: tinyDiskImageDir("update-images") },
    vm_defaults: { network_mode: "user", user_network_restrict: true, memory_mb: 256, vcpus: 1, root_disk_gb: 1, stop_timeout_s: 60, vcpu_overcommit: 4 },
  });
  await waitHealthy(server);
});

afterAll(async () => {
  if (server) {
    for (const vm of (await server.req("GET", "/api/v1/vms")).json?.vms ?? []) await server.req("DELETE", `/api/v1/vms/${vm.id}`);
    await server.stop();
  }
  await removePool(lv, poolName);
  await lv?.close();
});

test("a running VM changed in place: disks, root disk, memory, vCPUs; pending; restart", async () => {
  const g = await GuestUnderTest.create(server, scenarioVm(uniqueName("upd").slice(0, 40)));
  const { pool } = await lv.call(P.storagePoolLookupByName, { name: poolName });
  const volumes = async () => (await lv.call(P.storagePoolListAllVolumes, { pool, need_results: 1, flags: 0 })).vols.map((v) => v.name).filter((n) => n.startsWith(`${g.vm.id}-data`));
  await updateScenario(g, async (serial) => {
    // A volume of that name made by someone else: the driver must neither use nor delete it.
    const name = `${g.vm.id}-${serial.replace("kdevops", "data")}.qcow2`;
    await lv.call(P.storageVolCreateXml, { pool, xml: `<volume><name>${name}</name><capacity unit='M'>1</capacity><target><format type='qcow2'/></target></volume>`, flags: 0 });
  });
  // The definition (next start) matches what runs; the removed and the rolled-back volumes are gone.
  const { dom } = await lv.call(P.domainLookupByName, { name: g.vm.name });
  const def = parseDomainXml((await lv.call(P.domainGetXmlDesc, { dom, flags: 2 })).xml);
  expect({ vcpus: def.vcpus, memory: def.memoryMb, serials: def.disks.filter((d) => d.type === "data").map((d) => [d.serial, d.driver]) }).toEqual({
    vcpus: 3,
    memory: 512,
    serials: [
      ["kdevops0", "virtio"],
      ["kdevops2", "scsi"],
    ],
  });
  expect((await volumes()).sort()).toEqual([`${g.vm.id}-data0.qcow2`, `${g.vm.id}-data2.qcow2`, `${g.vm.id}-data4.qcow2`]);
  await g.delete();
}, 600_000);
