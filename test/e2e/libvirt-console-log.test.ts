/**
 * libvirt driver with libvirt.console_log_dir outside the storage pool (qemu:///system, TCG):
 * the serial log is written there (GET /console names it), and deleting the VM removes it, as
 * it removes the VM's volumes when the log is in the pool.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { LibvirtClient } from "../../src/libvirt/index.ts";
import { tinyDiskImageDir } from "../helpers/guest.ts";
import { removePool, rig, uniqueName, unixUri, waitFor } from "../helpers/rig.ts";
import { startTestServer, waitHealthy, type TestServer } from "../helpers/server.ts";

const poolName = `rctest-clog-${process.pid}`;
const logDir = join(rig().rigDir, `console-logs-${process.pid}`);
let server: TestServer;
let lv: LibvirtClient;

beforeAll(async () => {
  mkdirSync(logDir, { recursive: true });
  chmodSync(logDir, 0o755);
  lv = await LibvirtClient.connect(unixUri("qemu"));
  server = await startTestServer({
    libvirt: { uri: unixUri("qemu"), storage_pool_name: poolName, storage_pool_path: join(rig().rigDir, "pools", poolName), domain_type: "qemu", console_log_dir: logDir },
    images: { base_images_dir: tinyDiskImageDir("clog-images") },
    vm_defaults: { network_mode: "none", memory_mb: 128, vcpus: 1, root_disk_gb: 1 },
  });
  await waitHealthy(server);
});

afterAll(async () => {
  await server.stop();
  await removePool(lv, poolName);
  await lv.close();
  rmSync(logDir, { recursive: true, force: true });
});

test("the serial log in console_log_dir is written while the VM runs and removed with the VM", async () => {
  const created = await server.req("POST", "/api/v1/vms", { name: uniqueName("clog").slice(0, 40), base_image: "rcloud-tiny.qcow2", network: { mode: "none" } });
  expect({ status: created.status, error: created.json?.error ?? null }).toEqual({ status: 201, error: null });
  const vm = created.json;
  const logFile = join(logDir, `${vm.id}-serial.log`);
  const con = await server.req("GET", `/api/v1/vms/${vm.id}/console`);
  expect(con.json.log_file).toBe(logFile);
  await waitFor(`${logFile} to be written`, () => existsSync(logFile), 30_000);

  const del = await server.req("DELETE", `/api/v1/vms/${vm.id}`);
  expect(del.status).toBe(200);
  expect(readdirSync(logDir)).toEqual([]);
}, 120_000);
