/**
 * End to end on qemu:///system with TCG: POST /vms with kdevops's client body from a small
 * bootable disk image with an SSH key and restricted user networking → running → a real ssh
 * client logs in with that key and runs `uname -r` → the serial console log shows the boot →
 * stop → start → delete → no domain, no volume, no ISO left.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { LibvirtClient, remoteProcedures as P } from "../../src/libvirt/index.ts";
import { tinyDiskImageDir } from "../helpers/guest.ts";
import { removePool, rig, uniqueName, unixUri } from "../helpers/rig.ts";
import { startTestServer, waitHealthy, type TestServer } from "../helpers/server.ts";
import { makeSshKey, waitForSsh } from "../helpers/ssh.ts";

const poolName = `rctest-e2e-${process.pid}`;
let server: TestServer;
let lv: LibvirtClient;

beforeAll(async () => {
  const base = tinyDiskImageDir("e2e-images");
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

test("create → SSH in → stop → start → delete leaves nothing behind", async () => {
  const key = makeSshKey();
  const name = uniqueName("ssh").slice(0, 40);
  // The data disk is far larger than the pool's free space: thin qcow2 must still work. The
  // second one is NVMe, which libvirt 9.0 has no bus for (QEMU arguments, owned by QEMU's uid).
  // kdevops's client body: base_image by file name, root_disk_gb, ssh_user, ssh_public_key.
  const created = await server.req("POST", "/api/v1/vms", {
    name,
    base_image: "rcloud-tiny.qcow2",
    root_disk_gb: 1,
    ssh_user: "kdevops",
    ssh_public_key: key.publicKey,
    network: { mode: "user", restrict: true },
    extra_disks: [{ size_gb: 4096 }, { size_gb: 2, type: "nvme" }],
  });
  expect(created.status).toBe(201);
  const vm = created.json;
  expect(vm.state).toBe("running");
  expect(vm.ssh_port).toBeGreaterThan(1023);
  expect(vm.ip_address).toBe("127.0.0.1");
  expect(vm.network.mode).toBe("user");

  // The seed ISO was uploaded into the pool next to the root overlay.
  const { pool } = await lv.call(P.storagePoolLookupByName, { name: poolName });
  const vols = (await lv.call(P.storagePoolListAllVolumes, { pool, need_results: 1, flags: 0 })).vols.map((v) => v.name).sort();
  expect(vols).toEqual([`${vm.id}-data0.qcow2`, `${vm.id}-data1.qcow2`, `${vm.id}-root.qcow2`, `${vm.id}-seed.iso`]);
  expect(vm.disks[1]).toMatchObject({ type: "data", size_gb: 4096, serial: "kdevops0", driver: "virtio" });
  expect(vm.disks[2]).toMatchObject({ type: "data", size_gb: 2, serial: "kdevops1", driver: "nvme" });
  // read back from libvirt as well, not only from the create's answer
  const shown = await server.req("GET", `/api/v1/vms/${vm.id}`);
  expect(shown.json.disks.map((d: { driver: string; serial: string | null }) => [d.driver, d.serial])).toEqual([
    ["virtio", null],
    ["virtio", "kdevops0"],
    ["nvme", "kdevops1"],
  ]);

  const probe = "uname -r; hostname; cat /sys/block/vdb/size 2>/dev/null || echo none; cat /sys/block/nvme0n1/size 2>/dev/null || echo none; cat /sys/class/nvme/nvme0/serial 2>/dev/null || echo none";
  const uname = await waitForSsh({ port: vm.ssh_port, user: "kdevops", key: key.privateKey }, probe);
  const [release, hostname, sectors, nvmeSectors, nvmeSerial] = uname.trim().split("\n");
  expect(sectors).toBe(String(4096 * 2 * 1024 * 1024)); // the guest sees a 4 TiB disk
  expect(nvmeSectors).toBe(String(2 * 2 * 1024 * 1024)); // and a 2 GiB NVMe namespace
  expect(nvmeSerial?.trim()).toBe("kdevops1"); // /dev/disk/by-id/nvme-QEMU_NVMe_Ctrl_kdevops1 on a udev guest
  expect(release).toMatch(/^\d+\.\d+\.\d+/);
  expect(hostname).toBe(name);

  const con = await server.req("GET", `/api/v1/vms/${vm.id}/console`);
  expect(con.json.ssh).toEqual({ host: "127.0.0.1", port: vm.ssh_port, user: "kdevops" });
  // The serial console is logged to a file next to the disks (virtlogd writes it).
  expect(con.json.logFile).toBe(join(rig().rigDir, "pools", poolName, `${vm.id}-serial.log`));
  expect(readFileSync(con.json.logFile, "utf8")).toContain("RCLOUD-SSH-READY");
  // The same log through the API, read by rcloud over RPC as a volume of the pool.
  const whole = await server.req("GET", `/api/v1/vms/${vm.id}/console/log`);
  const tail = await server.req("GET", `/api/v1/vms/${vm.id}/console/log?tail=64`);
  const fileAfter = readFileSync(con.json.logFile, "utf8");
  expect(whole.status).toBe(200);
  expect(whole.text).toContain("RCLOUD-DISK-BOOTED");
  expect(fileAfter.startsWith(whole.text)).toBe(true); // the file may only have grown since
  expect(tail.status).toBe(200);
  expect(Buffer.byteLength(tail.text, "latin1")).toBeLessThanOrEqual(64);
  expect(tail.text.length).toBeGreaterThan(0);
  expect(fileAfter).toContain(tail.text);

  const qmp = await server.req("POST", `/api/v1/vms/${vm.id}/qmp`, { execute: "query-status" });
  expect(qmp.status).toBe(200);
  expect(qmp.json.return.status).toBe("running");

  // Graceful stop: the guest handles the ACPI power button.
  const stopped = await server.req("POST", `/api/v1/vms/${vm.id}/stop`);
  expect(stopped.status).toBe(200);
  expect(stopped.json.state).toBe("stopped");

  const started = await server.req("POST", `/api/v1/vms/${vm.id}/start`);
  expect(started.status).toBe(200);
  expect(started.json.state).toBe("running");
  expect(started.json.ssh_port).toBe(vm.ssh_port);
  // The NVMe disk is still there after a stop and start (libvirt does not relabel it).
  const again = await waitForSsh({ port: vm.ssh_port, user: "kdevops", key: key.privateKey }, "cat /sys/block/nvme0n1/size 2>/dev/null || echo none");
  expect(again.trim()).toBe(String(2 * 2 * 1024 * 1024));

  const del = await server.req("DELETE", `/api/v1/vms/${vm.id}`);
  expect(del.status).toBe(200);
  const domains = (await lv.call(P.connectListAllDomains, { need_results: 1, flags: 0 })).domains.map((d) => d.name);
  expect(domains).not.toContain(name);
  await lv.call(P.storagePoolRefresh, { pool, flags: 0 });
  const left = (await lv.call(P.storagePoolListAllVolumes, { pool, need_results: 1, flags: 0 })).vols.map((v) => v.name);
  expect(left.filter((v) => v.startsWith(vm.id))).toEqual([]);
}, 300_000);
