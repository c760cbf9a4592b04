/**
 * libvirtd killed while VMs are being created (qemu driver on the rig's `fault` daemon):
 * the API answers 503 while it is down, recovers by itself when it is back, and no
 * half-created VM or volume remains — every create either fully exists or left nothing.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { LibvirtClient, remoteProcedures as P } from "../../src/libvirt/index.ts";
import { rig, rigCommand, uniqueName, unixUri, waitFor } from "../helpers/rig.ts";
import { faultDaemonServer, waitHealthy, type TestServer } from "../helpers/server.ts";

const poolName = `rctest-fault-${process.pid}`;
let server: TestServer;
let stopServer: () => Promise<void>;

beforeAll(async () => {
  ({ server, stop: stopServer } = await faultDaemonServer(poolName));
  await waitHealthy(server);
});

afterAll(async () => {
  if (!rig().instances.fault.libvirtdPid) rigCommand("start-instance", "fault");
  await waitHealthy(server, 20_000).catch(() => {});
  await stopServer();
});

test("libvirtd killed during creates: 503 meanwhile, recovery, nothing half-created", async () => {
  const names = Array.from({ length: 6 }, (_, i) => `${uniqueName("flt").slice(0, 30)}-${i}`);
  const body = (name: string) => ({ name, image: "rcloud-tiny", start: false, extra_disks: [{ size_gb: 1 }, { size_gb: 1 }] });
  const pending = names.map((n) => server.req("POST", "/api/v1/vms", body(n)));
  await Bun.sleep(40); // let some creates get halfway
  process.kill(rig().instances.fault.libvirtdPid, "SIGKILL");
  const results = await Promise.all(pending);
  for (const r of results) {
    expect([201, 503]).toContain(r.status);
    if (r.status === 503) expect(r.json.error.code).toBe("hypervisor_unavailable");
  }

  // While it is down: clear 503s, never a hang.
  const t0 = Date.now();
  const down = await server.req("GET", "/api/v1/vms");
  expect(down.status).toBe(503);
  expect((await server.req("GET", "/api/v1/health")).status).toBe(503);
  expect((await server.req("POST", "/api/v1/vms", body("while-down"))).status).toBe(503);
  expect(Date.now() - t0).toBeLessThan(5_000);

  rigCommand("start-instance", "fault");
  await waitHealthy(server, 30_000);

  // After recovery: VMs that got 201 exist whole; the rest left no domain and no volume.
  const lv = await LibvirtClient.connect(unixUri("qemu", "fault"));
  try {
    const created = new Set(results.flatMap((r) => (r.status === 201 ? [r.json.id as string] : [])));
    await waitFor(
      "orphans to be cleaned up",
      async () => {
        const vms = (await server.req("GET", "/api/v1/vms")).json.vms as { id: string; name: string; disks: unknown[] }[];
        const { pool } = await lv.call(P.storagePoolLookupByName, { name: poolName });
        await lv.call(P.storagePoolRefresh, { pool, flags: 0 });
        const vols = (await lv.call(P.storagePoolListAllVolumes, { pool, need_results: 1, flags: 0 })).vols.map((v) => v.name);
        const ids = new Set(vms.map((v) => v.id));
        const orphans = vols.filter((v) => !ids.has(v.slice(0, 11)));
        const allCreatedWhole = [...created].every((id) => ["root.qcow2", "data0.qcow2", "data1.qcow2"].every((s) => vols.includes(`${id}-${s}`)));
        const noStrays = vms.every((v) => created.has(v.id));
        return orphans.length === 0 && allCreatedWhole && noStrays;
      },
      20_000,
      250,
    );
    // The reconnects are counted for Prometheus. The sessions reconnect in the background
    // (backoff up to 2 s), possibly after the cleanup above, which new sessions can do.
    await waitFor(
      "a reconnect to be counted",
      async () => Number(/rcloud_hypervisor_reconnects_total (\d+)/.exec(await (await fetch(`${server.url}/metrics`)).text())?.[1] ?? 0) >= 1,
      20_000,
      250,
    );
    // And the service works normally again.
    const again = await server.req("POST", "/api/v1/vms", body(`${names[0]!.slice(0, 30)}-ok`));
    expect(again.status).toBe(201);
  } finally {
    await lv.close();
  }
}, 120_000);
