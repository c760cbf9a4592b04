/**
 * Data disks on every bus next to the cloud-init seed CD-ROM, on qemu:///system with TCG: the
 * VMs are defined and started by libvirt, an SSH client logs in with the key from the seed,
 * and the guest sees each data disk on its bus with its serial kdevopsN. One VM has a disk of
 * each bus (virtio, nvme, scsi, ide = SATA); the other takes its disks' bus from
 * vm_defaults.disk_driver: scsi (the seed and the first SCSI disk once both got sda).
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { LibvirtClient, remoteProcedures as P } from "../../src/libvirt/index.ts";
import { BLOCK_SERIAL_LINES, tinyDiskImageDir } from "../helpers/guest.ts";
import { removePool, rig, uniqueName, unixUri } from "../helpers/rig.ts";
import { startTestServer, waitHealthy, type TestServer } from "../helpers/server.ts";
import { makeSshKey, waitForSsh } from "../helpers/ssh.ts";

const poolName = `rctest-buses-${process.pid}`;
let mixed: TestServer;
let scsiDefault: TestServer;
let lv: LibvirtClient;

function serverConfig(base: string, diskDriver: string) {
  return {
    libvirt: { uri: unixUri("qemu"), storage_pool_name: poolName, storage_pool_path: join(rig().rigDir, "pools", poolName), domain_type: "qemu" },
    images: { base_images_dir: base },
    vm_defaults: { network_mode: "user", user_network_restrict: true, memory_mb: 256, vcpus: 1, root_disk_gb: 1, disk_driver: diskDriver },
  };
}

beforeAll(async () => {
  const base = tinyDiskImageDir("bus-images");
  lv = await LibvirtClient.connect(unixUri("qemu"));
  // One after the other: the first one defines the shared storage pool.
  mixed = await startTestServer(serverConfig(base, "virtio"));
  await waitHealthy(mixed);
  scsiDefault = await startTestServer(serverConfig(base, "scsi"));
  await waitHealthy(scsiDefault);
});

afterAll(async () => {
  for (const s of [mixed, scsiDefault]) {
    if (!s) continue;
    for (const vm of (await s.req("GET", "/api/v1/vms")).json?.vms ?? []) await s.req("DELETE", `/api/v1/vms/${vm.id}`);
    await s.stop();
  }
  await removePool(lv, poolName);
  await lv?.close();
});

/** Every block device of the guest as "name serial sysfs-path" (the serial as BLOCK_SERIAL_LINES find it). */
const PROBE = ["for d in /sys/block/*; do", "  n=${d##*/}", ...BLOCK_SERIAL_LINES, "  echo \"$n $(echo $s) $(readlink -f $d)\"", "done"].join("\n");

interface GuestDisk {
  name: string;
  path: string;
}

/** The guest's disks by serial. */
function bySerial(out: string): Map<string, GuestDisk> {
  const m = new Map<string, GuestDisk>();
  for (const line of out.trim().split("\n")) {
    const [name, serial, path] = line.trim().split(/\s+/);
    if (name && serial && path) m.set(serial, { name, path });
  }
  return m;
}

async function createAndProbe(server: TestServer, body: Record<string, unknown>) {
  const key = makeSshKey();
  const created = await server.req("POST", "/api/v1/vms", { image: "rcloud-tiny", ssh_public_key: key.publicKey, network: { mode: "user", restrict: true }, ...body });
  expect({ status: created.status, error: created.json?.error }).toEqual({ status: 201, error: undefined });
  const vm = created.json;
  expect(vm.state).toBe("running");
  const out = await waitForSsh({ port: vm.ssh_port, user: "kdevops", key: key.privateKey }, PROBE);
  return { vm, disks: bySerial(out), out };
}

test("a key and one data disk on each bus: the guest sees every disk on its bus with its serial", async () => {
  const extra_disks = [
    { size_gb: 1, type: "virtio" },
    { size_gb: 1, type: "nvme" },
    { size_gb: 1, type: "scsi" },
    { size_gb: 1, type: "ide" },
  ];
  const name = uniqueName("buses").slice(0, 40);
  const [{ vm, disks, out }, scsi] = await Promise.all([
    createAndProbe(mixed, { name, extra_disks }),
    // Both disks take the default bus, scsi: with the seed that once made two sda targets.
    createAndProbe(scsiDefault, { name: `${name}-s`, extra_disks: [{ size_gb: 1 }, { size_gb: 1 }] }),
  ]);

  const expected = [
    ["virtio", null],
    ["virtio", "kdevops0"],
    ["nvme", "kdevops1"],
    ["scsi", "kdevops2"],
    ["sata", "kdevops3"],
  ];
  expect(vm.disks.map((d: { driver: string; serial: string | null }) => [d.driver, d.serial])).toEqual(expected);
  // read back from libvirt's domain XML as well, not only from the create's answer
  const shown = await mixed.req("GET", `/api/v1/vms/${vm.id}`);
  expect(shown.json.disks.map((d: { driver: string; serial: string | null }) => [d.driver, d.serial])).toEqual(expected);

  const guest = (serial: string) => {
    const d = disks.get(serial);
    if (!d) throw new Error(`the guest has no disk with serial ${serial}:\n${out}`);
    return d;
  };
  expect(guest("kdevops0").name).toMatch(/^vd[b-z]$/);
  expect(guest("kdevops1").name).toMatch(/^nvme\d+n1$/);
  // SCSI: a disk behind the virtio-scsi controller (libvirt's default would be lsilogic)
  expect(guest("kdevops2").name).toMatch(/^sd[a-z]$/);
  expect(guest("kdevops2").path).toMatch(/\/virtio\d+\/host\d+\//);
  // SATA: a disk on an ATA port of the AHCI controller
  expect(guest("kdevops3").name).toMatch(/^sd[a-z]$/);
  expect(guest("kdevops3").path).toMatch(/\/ata\d+\/host\d+\//);

  expect(scsi.vm.disks.map((d: { driver: string; serial: string | null }) => [d.driver, d.serial])).toEqual([
    ["virtio", null],
    ["scsi", "kdevops0"],
    ["scsi", "kdevops1"],
  ]);
  for (const serial of ["kdevops0", "kdevops1"]) {
    const d = scsi.disks.get(serial);
    if (!d) throw new Error(`the scsi-default guest has no disk with serial ${serial}:\n${scsi.out}`);
    expect(d.path).toMatch(/\/virtio\d+\/host\d+\//);
  }

  // The seed volume was uploaded and both VMs are gone with all their volumes after delete.
  const { pool } = await lv.call(P.storagePoolLookupByName, { name: poolName });
  const vols = async () => (await lv.call(P.storagePoolListAllVolumes, { pool, need_results: 1, flags: 0 })).vols.map((v) => v.name);
  expect(await vols()).toEqual(expect.arrayContaining([`${vm.id}-seed.iso`, `${scsi.vm.id}-seed.iso`]));
  expect((await mixed.req("DELETE", `/api/v1/vms/${vm.id}`)).status).toBe(200);
  expect((await scsiDefault.req("DELETE", `/api/v1/vms/${scsi.vm.id}`)).status).toBe(200);
  await lv.call(P.storagePoolRefresh, { pool, flags: 0 });
  expect((await vols()).filter((v) => v.startsWith(vm.id) || v.startsWith(scsi.vm.id))).toEqual([]);
}, 300_000);
