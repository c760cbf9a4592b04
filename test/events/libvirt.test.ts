/**
 * GET /api/v1/events on the libvirt driver (the rig's qemu:///system daemon, a TCG guest
 * from the bootable test disk): create, stop and delete through the API, and a reset and a
 * destroy done behind rcloud's back by a bare libvirt client (what `virsh reset` and `virsh
 * destroy` do), each seen on the stream in order. Those two need libvirt's domain events
 * (LibvirtDriver.subscribe): rcloud's own operations alone cannot see them.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { LibvirtClient, remoteProcedures as P } from "../../src/libvirt/index.ts";
import { EventCollector } from "../helpers/events.ts";
import { tinyDiskImageDir } from "../helpers/guest.ts";
import { removePool, rig, uniqueName, unixUri } from "../helpers/rig.ts";
import { startTestServer, waitHealthy, type TestServer } from "../helpers/server.ts";

const poolName = `rctest-events-${process.pid}`;
let server: TestServer;
let lv: LibvirtClient;

beforeAll(async () => {
  const poolDir = join(rig().rigDir, "pools", poolName);
  mkdirSync(poolDir, { recursive: true });
  server = await startTestServer({
    libvirt: { uri: unixUri("qemu"), storage_pool_name: poolName, storage_pool_path: poolDir, domain_type: "qemu" },
    images: { base_images_dir: tinyDiskImageDir(`${poolName}-images`) },
    vm_defaults: { network_mode: "none", memory_mb: 128, vcpus: 1, root_disk_gb: 1 },
  });
  await waitHealthy(server, 30_000);
  lv = await LibvirtClient.connect(unixUri("qemu"));
});

afterAll(async () => {
  const list = await server.req("GET", "/api/v1/vms").catch(() => null);
  for (const vm of list?.json?.vms ?? []) await server.req("DELETE", `/api/v1/vms/${vm.id}`).catch(() => {});
  await server.stop();
  await removePool(lv, poolName).catch(() => {});
  await lv.close();
});

/** The actions that matter here (a start may also be reported as resumed by libvirt). */
const KEPT = new Set(["vm-created", "vm-started", "vm-rebooted", "vm-stopped", "vm-deleted"]);

test("create, stop, start, a reset and a destroy behind rcloud's back, delete: each on the stream, in order", async () => {
  const ev = await EventCollector.open(`${server.url}/api/v1/events`);
  const name = uniqueName("evl").slice(0, 40);
  const steps = (n: number) => ev.until((es) => es.filter((e) => e.vm?.name === name && KEPT.has(e.action)).length >= n, 20_000, `${n} events of ${name}`);

  const res = await fetch(`${server.url}/api/v1/vms`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ name, image: "rcloud-tiny" }) });
  expect(res.status).toBe(201);
  const created = { json: (await res.json()) as { id: string }, requestId: res.headers.get("x-request-id") };
  await steps(2);
  expect((await server.req("POST", `/api/v1/vms/${name}/stop?force=true`)).status).toBe(200);
  await steps(3);
  expect((await server.req("POST", `/api/v1/vms/${name}/start`)).status).toBe(200);
  await steps(4);

  // Behind rcloud's back: a bare libvirt client resets the domain, then destroys it.
  const { dom } = await lv.call(P.domainLookupByName, { name });
  await lv.call(P.domainReset, { dom, flags: 0 });
  await steps(5).catch((e: Error) => {
    throw new Error(`a reset behind rcloud's back was not seen as vm-rebooted: ${e.message}`);
  });
  await lv.call(P.domainDestroy, { dom });
  await steps(6).catch((e: Error) => {
    const hint = server.service.driver.subscribe ? "" : " (the libvirt driver reports no domain events: LibvirtDriver.subscribe is missing)";
    throw new Error(`a destroy behind rcloud's back was not seen${hint}: ${e.message}`);
  });
  expect((await server.req("GET", `/api/v1/vms/${name}`)).json.state).toBe("stopped");

  const deleted = await fetch(`${server.url}/api/v1/vms/${name}`, { method: "DELETE" });
  expect(deleted.status).toBe(200);
  await steps(7);

  const kept = ev.events.filter((e) => e.vm?.name === name && KEPT.has(e.action));
  expect(kept.map((e) => e.action)).toEqual(["vm-created", "vm-started", "vm-stopped", "vm-started", "vm-rebooted", "vm-stopped", "vm-deleted"]);
  expect(kept[4]).toMatchObject({ type: "lifecycle", detail: "reboot", request_id: null, vm: { id: created.json.id, name } });
  expect(kept[5]).toMatchObject({ type: "lifecycle", detail: "destroyed", request_id: null, vm: { id: created.json.id, name } });
  expect(kept[0]).toMatchObject({ type: "operation", request_id: created.requestId });
  expect(kept[6]).toMatchObject({ type: "operation", request_id: deleted.headers.get("x-request-id") });
  ev.close();
}, 180_000);
