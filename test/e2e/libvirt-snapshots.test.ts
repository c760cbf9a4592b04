/**
 * Snapshots on qemu:///system with TCG through libvirt's snapshot API: the shared scenario
 * (test/helpers/snapshot-scenario.ts), then no domain and no volume left after the VM's delete
 * (its snapshot metadata goes with the domain, the snapshots themselves with the volumes).
 */
import { afterAll, beforeAll, test } from "bun:test";
import { join } from "node:path";
import { LibvirtClient, remoteProcedures as P } from "../../src/libvirt/index.ts";
import { tinyDiskImageDir } from "../helpers/guest.ts";
import { removePool, rig, unixUri } from "../helpers/rig.ts";
import { snapshotScenario } from "../helpers/snapshot-scenario.ts";
import { startTestServer, waitHealthy, type TestServer } from "../helpers/server.ts";

const poolName = `rctest-snap-${process.pid}`;
let server: TestServer;
let lv: LibvirtClient;

beforeAll(async () => {
  const base = tinyDiskImageDir("snap-images");
  lv = await LibvirtClient.connect(unixUri("qemu"));
  server = await startTestServer({
    libvirt: { uri: unixUri("qemu"), storage_pool_name: poolName, storage_pool_path: join(rig().rigDir, "pools", poolName), domain_type: "qemu" },
    images: { base_images_dir: base },
    vm_defaults: { network_mode: "user", user_network_restrict: true, memory_mb: 256, vcpus: 1, root_disk_gb: 1, stop_timeout_s: 20 },
  });
  await waitHealthy(server);
});

afterAll(async () => {
  await server.stop();
  await removePool(lv, poolName);
  await lv.close();
});

test("memory and disk-only snapshots: taken, listed, reverted, refused, deleted with the VM", async () => {
  await snapshotScenario(server, async (vm) => {
    const { domains } = await lv.call(P.connectListAllDomains, { need_results: 1, flags: 0 });
    const { pool } = await lv.call(P.storagePoolLookupByName, { name: poolName });
    await lv.call(P.storagePoolRefresh, { pool, flags: 0 });
    const vols = (await lv.call(P.storagePoolListAllVolumes, { pool, need_results: 1, flags: 0 })).vols.map((v) => v.name);
    return [...domains.filter((d) => d.name === vm.name).map((d) => `domain ${d.name}`), ...vols.filter((v) => v.startsWith(vm.id))];
  });
}, 900_000);
