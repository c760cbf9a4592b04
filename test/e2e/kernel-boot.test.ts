/**
 * "Boot a kernel I just built" on libvirt, on a host reached over qemu+tls (the rig's hosta,
 * whose pool directory rcloud cannot see): the test disk's kernel and initramfs are uploaded
 * through the API into volumes of the VM's pool on that host (a libvirt upload stream), the
 * VM is restarted on them and a real SSH login reads uname -r and our command line; an ELF
 * file QEMU cannot boot leaves the VM stopped, set to it, and `kernel: "image"` brings it
 * back from its disk; a new upload replaces the previous one; delete removes every upload.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LibvirtClient, remoteProcedures as P } from "../../src/libvirt/index.ts";
import { bootUploaded, DISK_KERNEL, diskKernelRelease, requireDiskKernel, upload } from "../helpers/kernel-boot.ts";
import { removePool, rig, uniqueName, waitFor } from "../helpers/rig.ts";
import { startTestServer, type TestServer, waitHealthy } from "../helpers/server.ts";
import { makeSshKey, waitForSsh } from "../helpers/ssh.ts";

const pool = `rctest-kboot-${process.pid}`;
const stateDir = mkdtempSync(join(tmpdir(), "rcloud-kboot-state-"));
let server: TestServer;

async function onHosta<T>(fn: (lv: LibvirtClient) => Promise<T>): Promise<T> {
  const lv = await LibvirtClient.connect(rig().hosts.hosta.uris.tcp);
  try {
    return await fn(lv);
  } finally {
    await lv.close();
  }
}

/** The names of the pool's volumes on hosta that belong to VM `id`, as libvirt there lists them. */
async function volumesOf(id: string): Promise<string[]> {
  return onHosta(async (lv) => {
    const { pool: p } = await lv.call(P.storagePoolLookupByName, { name: pool });
    const { vols } = await lv.call(P.storagePoolListAllVolumes, { pool: p, need_results: 1, flags: 0 });
    return vols.map((v) => v.name).filter((n) => n.startsWith(`${id}-`)).sort();
  });
}

beforeAll(async () => {
  requireDiskKernel();
  const h = rig().hosts.hosta;
  server = await startTestServer({
    driver: "libvirt",
    server: { state_dir: stateDir },
    hosts: [{ name: "hosta", uri: h.uri, storage_pool_path: h.paths.pool, base_images_dir: h.paths.images, kernel_dir: h.paths.kernels }],
    libvirt: { storage_pool_name: pool, domain_type: "qemu" },
    vm_defaults: { network_mode: "user", user_network_restrict: true, memory_mb: 256, vcpus: 1, root_disk_gb: 1, stop_timeout_s: 20 },
  });
  await waitHealthy(server, 60_000);
  await waitFor("hosta online", async () => (await server.req("GET", "/api/v1/hosts")).json.hosts?.[0]?.state === "online", 60_000, 250);
});

afterAll(async () => {
  const vms = (await server.req("GET", "/api/v1/vms")).json?.vms ?? [];
  await Promise.all(vms.map((vm: { id: string }) => server.req("DELETE", `/api/v1/vms/${vm.id}`)));
  await server.stop();
  await onHosta((lv) => removePool(lv, pool)).catch(() => {});
  rmSync(stateDir, { recursive: true, force: true });
});

test("upload over TLS → boot to SSH → a kernel QEMU cannot load → back to the image → replace → delete", async () => {
  expect(rig().hosts.hosta.uri).toStartWith("qemu+tls://");
  const key = makeSshKey();
  const name = uniqueName("kboot").slice(0, 40);
  const created = await server.req("POST", "/api/v1/vms", { name, image: "rcloud-tiny", ssh_public_key: key.publicKey });
  expect(created.status).toBe(201);
  const vm = created.json;
  const login = { port: vm.ssh_port as number, user: "kdevops", key: key.privateKey };

  const nothing = await server.req("POST", `/api/v1/vms/${vm.id}/boot`, { cmdline: "console=ttyS0" });
  expect(nothing.status).toBe(409);
  expect(nothing.json.error.code).toBe("nothing_uploaded");

  const first = await bootUploaded(server.url, server.req, vm, { port: async () => vm.ssh_port, user: "kdevops", key: key.privateKey }, "tls");
  expect(first.release).toBe(diskKernelRelease());
  expect(first.cmdline).toContain("rcloud.marker=tls");
  // Stored on hosta, in the VM's pool there, each with its completion marker.
  expect(first.kernel.path.startsWith(`${rig().hosts.hosta.paths.pool}/${vm.id}-kernel-`)).toBe(true);
  const kernelVol = first.kernel.path.split("/").at(-1)!;
  const initrdVol = first.initrd.path.split("/").at(-1)!;
  expect(await volumesOf(vm.id)).toEqual(expect.arrayContaining([kernelVol, `${kernelVol}.complete`, initrdVol, `${initrdVol}.complete`]));

  // An ELF file QEMU cannot boot passes the upload's check, and the boot fails: the VM is left
  // stopped and set to that kernel, and the image's kernel takes it back.
  const elf = await upload(server.url, vm.id, "kernel", Bun.file("/bin/true"));
  expect(elf.status).toBe(200);
  const bad = await server.req("POST", `/api/v1/vms/${vm.id}/boot`, { force: true });
  expect(bad.status).toBe(422);
  expect(bad.json.error.code).toBe("boot_failed");
  expect(bad.json.error.message).toContain('{"kernel": "image"}');
  const after = (await server.req("GET", `/api/v1/vms/${vm.id}`)).json;
  expect(after).toMatchObject({ state: "stopped", kernel: elf.json.path });
  const back = await server.req("POST", `/api/v1/vms/${vm.id}/boot`, { kernel: "image" });
  expect(back.status).toBe(200);
  expect(back.json).toMatchObject({ state: "running", kernel: null, initrd: null, cmdline: null });
  expect(await waitForSsh(login, "cat /proc/cmdline", 300_000)).not.toContain("rcloud.marker");

  // A good kernel replaces the bad one; the first upload (no longer booted) is gone.
  const good = await upload(server.url, vm.id, "kernel", Bun.file(DISK_KERNEL));
  expect(good.status).toBe(200);
  const vols = await volumesOf(vm.id);
  expect(vols).toContain(good.json.path.split("/").at(-1));
  expect(vols).not.toContain(kernelVol);
  expect(vols).not.toContain(elf.json.path.split("/").at(-1));
  const again = await server.req("POST", `/api/v1/vms/${vm.id}/boot`, { cmdline: "console=ttyS0,115200 rcloud.marker=again", force: true });
  expect(again.status).toBe(200);
  expect(again.json.kernel).toBe(good.json.path);
  expect(await waitForSsh(login, "cat /proc/cmdline", 300_000)).toContain("rcloud.marker=again");

  expect((await server.req("DELETE", `/api/v1/vms/${vm.id}`)).status).toBe(200);
  expect(await volumesOf(vm.id)).toEqual([]);
}, 900_000);
