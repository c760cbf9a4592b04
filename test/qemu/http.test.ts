/**
 * The HTTP server's connection handling with a real QEMU guest: a VM operation may take
 * longer than server.idle_timeout_s (a graceful stop waits for the guest) and must still get
 * its answer; a second rcloud on the same port fails instead of sharing it. And what a client
 * is told of an unexpected error (a system call failing on the state directory).
 */
import { afterAll, expect, test } from "bun:test";
import { copyFileSync, mkdirSync, rmSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import { startServer } from "../../src/server.ts";
import { loadConfig } from "../../src/config/index.ts";
import { uniqueName } from "../helpers/rig.ts";
import { startTestServer, waitHealthy, type TestServer } from "../helpers/server.ts";
import { cleanupState, DISK_IMAGE, GUEST, tempDir } from "./helpers.ts";

const root = tempDir("http");
let server: TestServer | null = null;
let other: TestServer | null = null;
afterAll(async () => {
  await server?.stop();
  await other?.stop();
  await cleanupState(root);
});

test("a stop that outlasts the idle timeout still gets its answer; a second server on the port fails", async () => {
  const images = join(root, "images");
  const kernels = join(root, "kernels");
  mkdirSync(images, { recursive: true });
  mkdirSync(kernels, { recursive: true });
  copyFileSync(DISK_IMAGE, join(images, "rcloud-tiny.qcow2"));
  copyFileSync(GUEST.kernel, join(kernels, "vmlinuz"));
  copyFileSync(GUEST.initrd, join(kernels, "initrd.img"));
  const config = {
    driver: "qemu",
    server: { idle_timeout_s: 1 },
    qemu: { accel: "tcg", state_dir: join(root, "state") },
    images: { base_images_dir: images },
    vm_defaults: { network_mode: "none", memory_mb: 128, vcpus: 1, root_disk_gb: 1, kernel_dir: kernels },
  };
  server = await startTestServer(config);
  await waitHealthy(server);

  const name = uniqueName("idle").slice(0, 40);
  const created = await server.req("POST", "/api/v1/vms", {
    name,
    image: "rcloud-tiny",
    kernel: join(kernels, "vmlinuz"),
    initrd: join(kernels, "initrd.img"),
    cmdline: "console=ttyS0 quiet",
  });
  expect(created.status).toBe(201);
  // Just started, the guest kernel has no ACPI handler yet: the graceful stop waits its full
  // 10 s and then forces the VM off. Bun checks idle sockets every 4 s or so, so a 1 s idle
  // timeout closes a plain request after 4-8 s.
  const t0 = performance.now();
  const stopped = await server.req("POST", `/api/v1/vms/${name}/stop?timeout=10`);
  const seconds = (performance.now() - t0) / 1000;
  expect(stopped.status).toBe(200);
  expect(stopped.json.state).toBe("stopped");
  expect(seconds).toBeGreaterThan(9); // the request really outlasted the idle timeout
  expect((await server.req("DELETE", `/api/v1/vms/${name}`)).status).toBe(200);

  // Same port, second server: refused (no SO_REUSEPORT sharing).
  const file = join(root, "second.yaml");
  await Bun.write(file, JSON.stringify({ ...config, qemu: { ...config.qemu, state_dir: join(root, "state2") }, logging: { level: "error" } }));
  const err = await startServer({ config: loadConfig({ file, env: {} }), port: server.port }).then(
    async (s) => {
      await s.stop();
      return null;
    },
    (e: Error) => e,
  );
  expect(err?.message ?? "started").toMatch(/in use|EADDRINUSE|Failed to start/i);
});

test("an unexpected error answers 500 with the request id, not its text; the server log has the text", async () => {
  const images = join(root, "images-500");
  mkdirSync(images, { recursive: true });
  copyFileSync(DISK_IMAGE, join(images, "rcloud-tiny.qcow2"));
  const stateDir = join(root, "state-500");
  other = await startTestServer({
    driver: "qemu",
    qemu: { accel: "tcg", state_dir: stateDir },
    images: { base_images_dir: images },
    vm_defaults: { network_mode: "none", memory_mb: 128, vcpus: 1, root_disk_gb: 1 },
  });
  await waitHealthy(other);
  const name = uniqueName("oops").slice(0, 40);
  const created = await other.req("POST", "/api/v1/vms", { name, image: "rcloud-tiny", start: false });
  expect(created.status).toBe(201);
  // The serial log a link to itself: opening it fails with ELOOP, naming the path.
  const log = join(stateDir, "vms", created.json.id, "serial.log");
  rmSync(log, { force: true });
  symlinkSync(log, log);
  const lines: string[] = [];
  const write = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((chunk: string | Uint8Array) => {
    lines.push(String(chunk));
    return true;
  }) as typeof process.stderr.write;
  let res: Response;
  try {
    res = await fetch(`${other.url}/api/v1/vms/${name}/console/log`, { headers: { "x-request-id": "oops-42" } });
  } finally {
    process.stderr.write = write;
  }
  const body = (await res.json()) as { error: { code: string; message: string } };
  expect(res.status).toBe(500);
  expect(res.headers.get("x-request-id")).toBe("oops-42");
  expect(body.error.code).toBe("internal_error");
  expect(body.error.message).toBe("internal error (request id oops-42): the server could not complete the request; its log has the details under request_id oops-42");
  expect(JSON.stringify(body)).not.toContain(stateDir);
  const logged = lines.join("");
  expect(logged).toContain("ELOOP");
  expect(logged).toContain(log);
  expect(logged).toContain("oops-42");
  // A deliberate refusal keeps its own words.
  const missing = await other.req("GET", "/api/v1/vms/no-such-vm/console/log");
  expect(missing.json.error).toMatchObject({ code: "not_found", message: "no VM with id or name 'no-such-vm'" });
  rmSync(log);
  expect((await other.req("DELETE", `/api/v1/vms/${name}`)).status).toBe(200);
});
