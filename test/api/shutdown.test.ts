/**
 * Graceful shutdown: SIGTERM while a create is in flight. The create completes (201 and
 * the VM exists) or is rolled back (no VM, no volumes); the process exits 0 promptly.
 */
import { expect, test } from "bun:test";
import { mkdtempSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { stringify } from "yaml";
import { LibvirtClient, remoteProcedures as P } from "../../src/libvirt/index.ts";
import { removePool, uniqueName, unixUri } from "../helpers/rig.ts";
import { mirrorToTestDriver } from "../helpers/server.ts";

test("SIGTERM during a create: completed or rolled back, clean exit", async () => {
  const dir = mkdtempSync(join(tmpdir(), "rcloud-shutdown-"));
  writeFileSync(join(dir, "debian-13.raw"), "");
  truncateSync(join(dir, "debian-13.raw"), 1024 ** 3);
  const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = probe.port;
  probe.stop(true);
  const poolName = `rctest-shutdown-${process.pid}`;
  const cfg = join(dir, "rcloud.yaml");
  writeFileSync(
    cfg,
    stringify({
      server: { bind_address: `127.0.0.1:${port}` },
      libvirt: { uri: unixUri("test"), storage_pool_name: poolName, storage_pool_path: `/rctest/${poolName}` },
      images: { base_images_dir: dir },
      vm_defaults: { network_mode: "bridge", network_bridge: "default", memory_mb: 256, vcpus: 1, root_disk_gb: 2 },
      logging: { level: "info", format: "json" },
    }),
  );
  const lv = await LibvirtClient.connect(unixUri("test")); // keeps the test driver's state alive
  await mirrorToTestDriver(poolName, { imagesDir: dir });
  const child = Bun.spawn([process.execPath, resolve(import.meta.dir, "../../src/main.ts"), "serve", "--config", cfg], { stdout: "pipe", stderr: "pipe" });
  try {
    const base = `http://127.0.0.1:${port}/api/v1`;
    let up = false;
    for (let i = 0; i < 100 && !up; i++) {
      up = await fetch(`${base}/health`).then((r) => r.ok, () => false);
      if (!up) await Bun.sleep(100);
    }
    expect(up).toBe(true);
    const name = uniqueName("sigterm").slice(0, 40);
    const pending = fetch(`${base}/vms`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-request-id": "sigterm-create-1" },
      body: JSON.stringify({ name, image: "debian-13", extra_disks: [{ size_gb: 1 }] }),
    })
      .then((r) => r.status)
      .catch(() => 0);
    await Bun.sleep(5);
    const t0 = Date.now();
    child.kill("SIGTERM");
    const status = await pending;
    const code = await child.exited;
    expect(code).toBe(0);
    expect(Date.now() - t0).toBeLessThan(15_000);
    const exists = await lv.call(P.domainLookupByName, { name }).then(() => true, () => false);
    if (status === 201) {
      expect(exists).toBe(true);
    } else {
      expect(exists).toBe(false);
    }
    // Either way, no volume without a VM.
    const { pool } = await lv.call(P.storagePoolLookupByName, { name: poolName });
    const vols = (await lv.call(P.storagePoolListAllVolumes, { pool, need_results: 1, flags: 0 })).vols.map((v) => v.name);
    if (!exists) expect(vols).toEqual([]);
    if (exists) {
      const { dom } = await lv.call(P.domainLookupByName, { name });
      await lv.call(P.domainDestroy, { dom }).catch(() => {});
      await lv.call(P.domainUndefine, { dom });
      for (const v of (await lv.call(P.storagePoolListAllVolumes, { pool, need_results: 1, flags: 0 })).vols) await lv.call(P.storageVolDelete, { vol: v, flags: 0 });
    }
    const log = await new Response(child.stderr).text();
    expect(log).toContain('"msg":"rcloud stopped"');
    // The operation's own log line carries the id of the request that started it.
    if (status === 201) expect(log).toMatch(/"msg":"vm operation","op":"create","outcome":"ok","duration_ms":\d+,"request_id":"sigterm-create-1"/);
  } finally {
    if (child.exitCode === null) child.kill("SIGKILL");
    await removePool(lv, poolName);
    await lv.close();
  }
}, 60_000);
