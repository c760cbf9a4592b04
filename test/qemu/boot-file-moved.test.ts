/**
 * QEMU driver: a direct-boot kernel from vm_defaults.kernel_dir is checked again at every
 * start, not only at create. A file swapped for a symbolic link to one outside kernel_dir is
 * refused (409 invalid_state, the VM stays stopped); a kernel rebuilt in place (the same path,
 * new contents) starts as before.
 */
import { afterAll, expect, test } from "bun:test";
import { chmodSync, copyFileSync, mkdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { uniqueName } from "../helpers/rig.ts";
import { startTestServer, waitHealthy, type TestServer } from "../helpers/server.ts";
import { cleanupState, GUEST, tempDir } from "./helpers.ts";

const kernelDir = tempDir("bootmv-kernel");
const outside = tempDir("bootmv-outside");
const images = tempDir("bootmv-images");
const state = tempDir("bootmv-state");
for (const d of [kernelDir, outside, images]) chmodSync(d, 0o755);
copyFileSync(GUEST.kernel, join(kernelDir, "vmlinuz"));
copyFileSync(GUEST.initrd, join(kernelDir, "initrd.img"));
copyFileSync(GUEST.kernel, join(outside, "vmlinuz"));
writeFileSync(join(images, "img.raw"), new Uint8Array(1024 * 1024));

let server: TestServer | null = null;
afterAll(async () => {
  await server?.stop();
  await cleanupState(state);
  for (const d of [kernelDir, outside, images]) rmSync(d, { recursive: true, force: true });
});

test("a kernel swapped for a link outside kernel_dir is refused at start; one rebuilt in place starts", async () => {
  mkdirSync(state, { recursive: true });
  server = await startTestServer({
    driver: "qemu",
    qemu: { accel: "tcg", state_dir: state },
    images: { base_images_dir: images },
    vm_defaults: { network_mode: "none", memory_mb: 128, vcpus: 1, root_disk_gb: 1, kernel_dir: kernelDir },
  });
  await waitHealthy(server);
  const kernel = join(kernelDir, "vmlinuz");
  const created = await server.req("POST", "/api/v1/vms", {
    name: uniqueName("bootmv").slice(0, 40),
    image: "img",
    start: false,
    kernel,
    initrd: join(kernelDir, "initrd.img"),
    cmdline: "console=ttyS0 panic=-1 quiet",
    network: { mode: "none" },
  });
  expect({ status: created.status, error: created.json?.error ?? null }).toEqual({ status: 201, error: null });
  const id = created.json.id;
  try {
    renameSync(kernel, `${kernel}.real`);
    symlinkSync(join(outside, "vmlinuz"), kernel);
    const refused = await server.req("POST", `/api/v1/vms/${id}/start`);
    expect({ status: refused.status, code: refused.json?.error?.code }).toEqual({ status: 409, code: "invalid_state" });
    expect(refused.json.error.message).toContain("no longer leads to a file inside vm_defaults.kernel_dir");
    expect((await server.req("GET", `/api/v1/vms/${id}`)).json.state).toBe("stopped");

    // A rebuilt kernel: a new file at the same path inside kernel_dir.
    rmSync(kernel);
    copyFileSync(`${kernel}.real`, kernel);
    const started = await server.req("POST", `/api/v1/vms/${id}/start`);
    expect({ status: started.status, error: started.json?.error ?? null, state: started.json?.state }).toEqual({ status: 200, error: null, state: "running" });
  } finally {
    expect((await server.req("DELETE", `/api/v1/vms/${id}`)).status).toBe(200);
  }
}, 120_000);
