/**
 * rcloud_vm's direct boot changed in place with the real `terraform`, on the QEMU driver
 * (TCG, the tiny disk, restricted user networking): a VM booted from its disk gets `kernel`,
 * `initrd` and `cmdline` (the disk's own kernel and initramfs, in vm_defaults.kernel_dir);
 * the plan is an in-place update, never a replacement; apply stops, switches and starts the
 * same VM, whose /proc/cmdline then carries our marker; a new cmdline does it again; the next
 * plan is empty.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { copyFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { serveProvider, type ProviderServer } from "../../src/terraform/plugin.ts";
import { DISK_INITRD, DISK_KERNEL, requireDiskKernel } from "../helpers/kernel-boot.ts";
import { uniqueName } from "../helpers/rig.ts";
import { startTestServer, waitHealthy, type TestServer } from "../helpers/server.ts";
import { makeSshKey, waitForSsh } from "../helpers/ssh.ts";
import { cleanupState, DISK_IMAGE, tempDir as qemuTempDir } from "../qemu/helpers.ts";
import { apply, plan, resourceValues, tempDir, workdir, writeMain } from "./harness.ts";

const root = qemuTempDir("tfkboot");
const kernels = join(root, "kernels");
let server: TestServer;
let provider: ProviderServer;
let env: Record<string, string>;

beforeAll(async () => {
  requireDiskKernel();
  const images = join(root, "images");
  mkdirSync(images);
  mkdirSync(kernels, { mode: 0o755 });
  copyFileSync(DISK_IMAGE, join(images, "rcloud-tiny.qcow2"));
  copyFileSync(DISK_KERNEL, join(kernels, "vmlinuz"));
  copyFileSync(DISK_INITRD, join(kernels, "initrd.img"));
  server = await startTestServer({
    driver: "qemu",
    qemu: { accel: "tcg", state_dir: join(root, "state") },
    images: { base_images_dir: images },
    vm_defaults: { network_mode: "user", user_network_restrict: true, memory_mb: 256, vcpus: 1, root_disk_gb: 1, stop_timeout_s: 30, kernel_dir: kernels },
  });
  await waitHealthy(server);
  provider = await serveProvider({ quiet: !process.env.RCLOUD_TF_DEBUG });
  const cli = join(tempDir("rcloud-tf-kboot-"), "empty.tfrc");
  await Bun.write(cli, "");
  env = { TF_REATTACH_PROVIDERS: provider.reattachConfig(), TF_CLI_CONFIG_FILE: cli };
});

afterAll(async () => {
  provider?.stop();
  for (const vm of (await server?.req("GET", "/api/v1/vms"))?.json?.vms ?? []) await server.req("DELETE", `/api/v1/vms/${vm.id}`);
  await server?.stop();
  await cleanupState(root);
});

test("kernel, initrd and cmdline change in place: stop, switch, start the same VM", async () => {
  const key = makeSshKey();
  const name = uniqueName("tfkb").slice(0, 40);
  const hcl = (boot: string) => `terraform {
  required_providers {
    rcloud = { source = "kdevops/rcloud" }
  }
}
provider "rcloud" {
  endpoint = "${server.url}"
  timeout  = "10m"
}
resource "rcloud_vm" "dev" {
  name           = "${name}"
  image          = "rcloud-tiny"
  network        = { mode = "user" }
  ssh_public_key = ${JSON.stringify(key.publicKey)}
${boot}
}
`;
  const dir = workdir(hcl(""));
  await apply(dir, env);
  const v1 = await resourceValues(dir, env, "rcloud_vm.dev");
  expect(v1).toMatchObject({ kernel: null, state: "running" });
  const ssh = { port: v1.ssh_port as number, user: "kdevops", key: key.privateKey };
  expect(await waitForSsh(ssh, "cat /proc/cmdline", 300_000)).not.toContain("rcloud.marker");

  const direct = (marker: string) => `  kernel  = "${join(kernels, "vmlinuz")}"\n  initrd  = "${join(kernels, "initrd.img")}"\n  cmdline = "console=ttyS0,115200 rcloud.marker=${marker}"`;
  writeMain(dir, hcl(direct("tf1")));
  const p = await plan(dir, env);
  expect(p.code).toBe(2);
  expect(p.stdout).toContain("will be updated in-place");
  expect(p.stdout).not.toContain("must be replaced");
  await apply(dir, env);
  const v2 = await resourceValues(dir, env, "rcloud_vm.dev");
  expect(v2).toMatchObject({ id: v1.id, kernel: join(kernels, "vmlinuz"), restart_required: false, state: "running" });
  expect(await waitForSsh(ssh, "cat /proc/cmdline", 300_000)).toContain("rcloud.marker=tf1");

  writeMain(dir, hcl(direct("tf2")));
  await apply(dir, env);
  expect((await resourceValues(dir, env, "rcloud_vm.dev")).id).toBe(v1.id);
  expect(await waitForSsh(ssh, "cat /proc/cmdline", 300_000)).toContain("rcloud.marker=tf2");
  expect((await plan(dir, env)).code).toBe(0);
}, 900_000);
