/**
 * "Boot a kernel I just built" on the direct QEMU driver (TCG): the test disk's kernel and
 * initramfs uploaded through PUT /vms/{id}/kernel|initrd, POST /boot restarts the VM on them
 * (a real SSH login reads uname -r and the command line we gave), the lifecycle events of the
 * restart are on the stream, a new upload replaces the previous one while an interrupted one
 * does not, every refusal has its code, `kernel: "image"` boots the disk again, `rcloud vm
 * boot --wait` does it all from the CLI and prints uname -r, and delete leaves nothing.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { copyFileSync, existsSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { runCliProcess } from "../helpers/cli.ts";
import { bootUploaded, DISK_INITRD, DISK_KERNEL, diskKernelRelease, requireDiskKernel, upload } from "../helpers/kernel-boot.ts";
import { uniqueName } from "../helpers/rig.ts";
import { startTestServer, waitHealthy, type TestServer } from "../helpers/server.ts";
import { makeSshKey, waitForSsh } from "../helpers/ssh.ts";
import { cleanupState, DISK_IMAGE, tempDir } from "./helpers.ts";

const root = tempDir("kboot");
const stateDir = join(root, "state");
const MAX_KERNEL = 9 * 1024 * 1024; // the test kernel (8 MiB) fits, 10 MiB does not
let server: TestServer;

beforeAll(async () => {
  if (!existsSync(DISK_IMAGE)) throw new Error(`${DISK_IMAGE} missing: run scripts/lib/disk-image.sh (scripts/test does)`);
  requireDiskKernel();
  const images = join(root, "images");
  mkdirSync(images);
  copyFileSync(DISK_IMAGE, join(images, "rcloud-tiny.qcow2"));
  server = await startTestServer({
    driver: "qemu",
    qemu: { accel: "tcg", state_dir: stateDir },
    images: { base_images_dir: images },
    vm_defaults: { network_mode: "user", user_network_restrict: true, memory_mb: 256, vcpus: 1, root_disk_gb: 1, stop_timeout_s: 30, max_kernel_bytes: MAX_KERNEL },
  });
  await waitHealthy(server);
});

afterAll(async () => {
  await server?.stop();
  await cleanupState(root);
});

const uploadsOf = (id: string) => readdirSync(join(stateDir, "vms", id)).filter((f) => /^(kernel|initrd)-/.test(f)).sort();

/** Sends a PUT whose body stops after `sent` of `declared` bytes, then drops the connection. */
async function interruptedUpload(id: string, declared: number, sent: Uint8Array): Promise<void> {
  const url = new URL(server.url);
  await new Promise<void>((resolve, reject) => {
    const s = connect(Number(url.port), url.hostname, () => {
      s.write(`PUT /api/v1/vms/${id}/kernel HTTP/1.1\r\nHost: ${url.host}\r\nContent-Type: application/octet-stream\r\nContent-Length: ${declared}\r\n\r\n`);
      s.write(sent, () => setTimeout(() => s.destroy(), 500));
    });
    s.on("close", () => resolve());
    s.on("error", reject);
  });
}

test("upload → boot to SSH → replace → refusals → back to the image → delete", async () => {
  const key = makeSshKey();
  const name = uniqueName("kboot").slice(0, 40);
  const created = await server.req("POST", "/api/v1/vms", { name, image: "rcloud-tiny", ssh_public_key: key.publicKey, network: { mode: "user", restrict: true } });
  expect(created.status).toBe(201);
  const vm = created.json;
  const ssh = { port: async () => vm.ssh_port as number, user: "kdevops", key: key.privateKey };

  // Nothing uploaded yet: a stable code, and the VM is not touched.
  const nothing = await server.req("POST", `/api/v1/vms/${name}/boot`, {});
  expect(nothing.status).toBe(409);
  expect(nothing.json.error.code).toBe("nothing_uploaded");
  expect((await server.req("GET", `/api/v1/vms/${name}`)).json.state).toBe("running");

  // Refusals, each before anything is stored.
  const tooBig = await upload(server.url, vm.id, "kernel", new Uint8Array(10 * 1024 * 1024));
  expect(tooBig.status).toBe(413);
  expect(tooBig.json.error.code).toBe("payload_too_large");
  expect(tooBig.json.error.message).toContain("vm_defaults.max_kernel_bytes");
  const empty = await upload(server.url, vm.id, "kernel", new Uint8Array(0));
  expect(empty.status).toBe(422);
  expect(empty.json.error).toMatchObject({ code: "validation_error", field: "body" });
  const notKernel = await upload(server.url, vm.id, "kernel", new TextEncoder().encode("<html>404 Not Found</html>".repeat(100)));
  expect(notKernel.status).toBe(422);
  expect(notKernel.json.error.message).toContain("not a kernel image");
  const notInitrd = await upload(server.url, vm.id, "initrd", Bun.file(DISK_KERNEL));
  expect(notInitrd.status).toBe(422);
  expect(notInitrd.json.error.message).toContain("not an initramfs");
  const badId = await upload(server.url, "vm-doesnotexist", "kernel", Bun.file(DISK_KERNEL));
  expect(badId.status).toBe(404);
  expect(badId.json.error.code).toBe("not_found");
  // A body larger than server.max_body_bytes (1 MiB) is fine on these routes.
  const chunked = await fetch(`${server.url}/api/v1/vms/${vm.id}/kernel`, {
    method: "PUT",
    body: new ReadableStream({ start: (c) => (c.enqueue(new Uint8Array(1024)), c.close()) }),
  });
  expect(chunked.status).toBe(411);
  expect(((await chunked.json()) as { error: { code: string } }).error.code).toBe("length_required");
  expect(uploadsOf(vm.id)).toEqual([]);
  const badCmdline = await server.req("POST", `/api/v1/vms/${name}/boot`, { cmdline: "console=ttyS0\nrw" });
  expect(badCmdline.status).toBe(422);
  expect(badCmdline.json.error.field).toBe("cmdline");
  const longCmdline = await server.req("POST", `/api/v1/vms/${name}/boot`, { cmdline: "x".repeat(4097) });
  expect(longCmdline.status).toBe(422);
  const imageWithCmdline = await server.req("POST", `/api/v1/vms/${name}/boot`, { kernel: "image", cmdline: "quiet" });
  expect(imageWithCmdline.status).toBe(422);
  const badKind = await server.req("POST", `/api/v1/vms/${name}/boot`, { kernel: "/boot/vmlinuz" });
  expect(badKind.status).toBe(422);

  // Events of the boot, read back from the stream afterwards.
  const since = (await (await fetch(`${server.url}/api/v1/events?follow=false`)).text()).trim().split("\n").map((l) => JSON.parse(l)).filter((e) => e.id !== null).at(-1)?.id ?? 0;

  const first = await bootUploaded(server.url, server.req, vm, ssh, "first");
  expect(first.release).toBe(diskKernelRelease());
  expect(first.cmdline).toContain("rcloud.marker=first");
  expect(first.kernel.path.startsWith(join(stateDir, "vms", vm.id) + "/")).toBe(true);
  const events = (await (await fetch(`${server.url}/api/v1/events?follow=false&vm=${name}&since=${since}`)).text()).trim().split("\n").map((l) => JSON.parse(l));
  const lifecycle = events.filter((e) => e.type === "lifecycle").map((e) => e.action);
  expect(lifecycle).toContain("vm-stopped");
  expect(lifecycle.lastIndexOf("vm-started")).toBeGreaterThan(lifecycle.indexOf("vm-stopped"));

  // An upload cut off midway leaves the previous one in place (and no partial file).
  const kernelBytes = new Uint8Array(await Bun.file(DISK_KERNEL).arrayBuffer());
  await interruptedUpload(vm.id, kernelBytes.byteLength, kernelBytes.subarray(0, 3 * 1024 * 1024));
  const deadline = Date.now() + 30_000;
  while (readdirSync(join(stateDir, "vms", vm.id)).some((f) => f.endsWith(".part")) && Date.now() < deadline) await Bun.sleep(200);
  expect(uploadsOf(vm.id)).toEqual([first.kernel.path, first.initrd.path].map((p) => p.split("/").at(-1)).sort());

  // A new kernel replaces the previous upload; the one the VM boots stays until it boots another.
  const again = await upload(server.url, vm.id, "kernel", Bun.file(DISK_KERNEL));
  expect(again.status).toBe(200);
  expect(again.json.path).not.toBe(first.kernel.path);
  expect(uploadsOf(vm.id)).toContain(first.kernel.path.split("/").at(-1));
  const second = await server.req("POST", `/api/v1/vms/${name}/boot`, { cmdline: "console=ttyS0,115200 rcloud.marker=second", force: true });
  expect(second.status).toBe(200);
  expect(second.json.kernel).toBe(again.json.path);
  const out = await waitForSsh({ port: vm.ssh_port, user: "kdevops", key: key.privateKey }, "cat /proc/cmdline", 300_000);
  expect(out).toContain("rcloud.marker=second");

  // Back to the image's own kernel: booted from the disk, no marker.
  const disk = await server.req("POST", `/api/v1/vms/${name}/boot`, { kernel: "image", force: true });
  expect(disk.status).toBe(200);
  expect(disk.json).toMatchObject({ state: "running", kernel: null, initrd: null, cmdline: null });
  const fromDisk = await waitForSsh({ port: vm.ssh_port, user: "kdevops", key: key.privateKey }, "cat /proc/cmdline", 300_000);
  expect(fromDisk).not.toContain("rcloud.marker");

  const del = await server.req("DELETE", `/api/v1/vms/${vm.id}`);
  expect(del.status).toBe(200);
  expect(existsSync(join(stateDir, "vms", vm.id))).toBe(false);
}, 900_000);

test("rcloud vm boot --kernel --initrd --cmdline --wait uploads from here and prints uname -r", async () => {
  const home = tempDir("kboot-home");
  mkdirSync(join(home, ".ssh"), { recursive: true });
  const key = makeSshKey();
  copyFileSync(key.privateKey, join(home, ".ssh", "id_ed25519"));
  writeFileSync(join(home, ".ssh", "id_ed25519.pub"), key.publicKey + "\n");
  const name = uniqueName("kcli").slice(0, 40);
  const env = { HOME: home, RCLOUD_ENDPOINT: server.url, RCLOUD_TOKEN: undefined };
  const created = await runCliProcess(["vm", "create", name, "--image", "rcloud-tiny", "--network", "user", "--restrict", "--no-start"], env);
  expect(created.code).toBe(0);
  const r = await runCliProcess(["vm", "boot", name, "--kernel", DISK_KERNEL, "--initrd", DISK_INITRD, "--cmdline", "console=ttyS0,115200 rcloud.marker=cli", "--wait", "--timeout", "10m"], env);
  if (r.code !== 0) throw new Error(`vm boot failed (${r.code}): ${r.stdout}\n${r.stderr}`);
  expect(r.stdout).toContain("Uploaded the kernel");
  expect(r.stdout.trim().split("\n").at(-1)).toBe(diskKernelRelease());
  const shown = await server.req("GET", `/api/v1/vms/${name}`);
  expect(shown.json.cmdline).toBe("console=ttyS0,115200 rcloud.marker=cli");
  const missing = await runCliProcess(["vm", "boot", name, "--kernel", join(home, "no-such-bzImage")], env);
  expect(missing.code).not.toBe(0);
  expect(missing.stderr).toContain("no such file");
  expect((await server.req("DELETE", `/api/v1/vms/${name}`)).status).toBe(200);
}, 900_000);
