/**
 * Interactive console through the API (GET /api/v1/vms/{id}/console/attach, a websocket):
 * the boot banner arrives, typed input reaches the guest's shell and its answer comes back.
 * Runs on both drivers: the QEMU driver (serial socket) and libvirt (console stream).
 */
import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, copyFileSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { LibvirtClient } from "../../src/libvirt/index.ts";
import { removePool, rig, uniqueName, unixUri } from "../helpers/rig.ts";
import { startTestServer, waitHealthy, type TestServer } from "../helpers/server.ts";
import { cleanupState, GUEST, tempDir } from "./helpers.ts";

const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {});
});

/** Collects console text from a websocket until a pattern shows up. */
function attach(url: string): { ws: WebSocket; until(re: RegExp, ms: number): Promise<string>; closed: Promise<{ code: number; reason: string }>; text(): string } {
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  let text = "";
  const decoder = new TextDecoder();
  const waiters: { re: RegExp; resolve: (s: string) => void }[] = [];
  ws.onmessage = (ev) => {
    text += typeof ev.data === "string" ? ev.data : decoder.decode(new Uint8Array(ev.data as ArrayBuffer), { stream: true });
    for (const w of waiters.splice(0)) {
      if (w.re.test(text)) w.resolve(text);
      else waiters.push(w);
    }
  };
  const closed = new Promise<{ code: number; reason: string }>((r) => (ws.onclose = (ev) => r({ code: ev.code, reason: ev.reason })));
  return {
    ws,
    closed,
    text: () => text,
    until: (re, ms) =>
      re.test(text)
        ? Promise.resolve(text)
        : new Promise((resolve, reject) => {
            const timer = setTimeout(() => reject(new Error(`console did not show ${re} in ${ms} ms:\n${text.slice(-1500)}`)), ms);
            waiters.push({ re, resolve: (s) => (clearTimeout(timer), resolve(s)) });
          }),
  };
}

async function talkToGuest(server: TestServer): Promise<void> {
  const name = uniqueName("con").slice(0, 40);
  const created = await server.req("POST", "/api/v1/vms", { name, image: "img", kernel: join(kernelDir, "vmlinuz"), initrd: join(kernelDir, "initrd.img"), cmdline: "console=ttyS0 panic=-1 quiet", network: { mode: "none" } });
  expect(created.status).toBe(201);
  const wsUrl = `${server.url.replace(/^http/, "ws")}/api/v1/vms/${name}/console/attach`;
  const con = attach(wsUrl);
  await new Promise((r) => (con.ws.onopen = r));
  // The banner may have scrolled by before we attached: ask the shell for something fresh.
  const token = `${Math.floor(Math.random() * 1e9)}`;
  const deadline = Date.now() + 120_000;
  while (!new RegExp(`^hi-${token}\\r?$`, "m").test(con.text()) && Date.now() < deadline) {
    con.ws.send(new TextEncoder().encode(`echo hi-''${token}\r`));
    await con.until(new RegExp(`^hi-${token}\\r?$`, "m"), 5_000).catch(() => undefined);
  }
  if (!new RegExp(`^hi-${token}\\r?$`, "m").test(con.text())) throw new Error(`no answer on the console; it showed:\n${con.text().slice(-2000)}`);
  con.ws.close();
  await con.closed;
  expect((await server.req("DELETE", `/api/v1/vms/${name}`)).status).toBe(200);

  // Missing VM: an error frame, then a close with 4000 + 404.
  const missing = attach(`${server.url.replace(/^http/, "ws")}/api/v1/vms/rctest-missing/console/attach`);
  const closed = await missing.closed;
  expect(closed.code).toBe(4404);
  expect(JSON.parse(missing.text()).error.code).toBe("not_found");
}

// World-readable: libvirt's QEMU runs as its own user and must read the kernel and image.
/** `rcloud vm console NAME --attach` as a real child process: type, read, detach with Ctrl-]. */
async function cliAttach(server: TestServer): Promise<void> {
  const name = uniqueName("cli").slice(0, 40);
  const created = await server.req("POST", "/api/v1/vms", { name, image: "img", kernel: join(kernelDir, "vmlinuz"), initrd: join(kernelDir, "initrd.img"), cmdline: "console=ttyS0 panic=-1 quiet", network: { mode: "none" } });
  expect(created.status).toBe(201);
  const child = Bun.spawn([process.execPath, join(import.meta.dir, "../../src/main.ts"), "vm", "console", name, "--attach"], {
    env: { ...process.env, RCLOUD_ENDPOINT: server.url },
    stdin: "pipe",
    stdout: "pipe",
    stderr: "pipe",
  });
  let out = "";
  const reader = (async () => {
    const dec = new TextDecoder();
    for await (const chunk of child.stdout) out += dec.decode(chunk, { stream: true });
  })();
  const token = `${Math.floor(Math.random() * 1e9)}`;
  const want = new RegExp(`^cli-${token}\\r?$`, "m");
  const deadline = Date.now() + 120_000;
  while (!want.test(out) && Date.now() < deadline) {
    child.stdin.write(`echo cli-''${token}\r`);
    child.stdin.flush();
    await Bun.sleep(2_000);
  }
  child.stdin.write(new Uint8Array([0x1d])); // Ctrl-] detaches
  child.stdin.flush();
  const code = await child.exited;
  await reader;
  if (!want.test(out)) throw new Error(`no answer through rcloud vm console; stdout:\n${out.slice(-1500)}\nstderr:\n${await new Response(child.stderr).text()}`);
  expect(code).toBe(0);
  expect((await server.req("DELETE", `/api/v1/vms/${name}`)).status).toBe(200);
}

const kernelDir = tempDir("con-kernel");
chmodSync(kernelDir, 0o755);
copyFileSync(GUEST.kernel, join(kernelDir, "vmlinuz"));
copyFileSync(GUEST.initrd, join(kernelDir, "initrd.img"));
const images = tempDir("con-images");
chmodSync(images, 0o755);
writeFileSync(join(images, "img.raw"), new Uint8Array(1024 * 1024));

describe("console attach over a websocket", () => {
  test("QEMU driver: serial socket both ways", async () => {
    const state = tempDir("con-state");
    const server = await startTestServer({
      driver: "qemu",
      qemu: { accel: "tcg", state_dir: state },
      images: { base_images_dir: images },
      vm_defaults: { network_mode: "none", memory_mb: 128, vcpus: 1, root_disk_gb: 1, kernel_dir: kernelDir },
    });
    cleanups.push(async () => {
      await server.stop();
      await cleanupState(state);
    });
    await waitHealthy(server);
    await talkToGuest(server);
    await cliAttach(server);
  }, 300_000);

  test("libvirt driver: console stream both ways", async () => {
    const poolName = `rctest-con-${process.pid}`;
    const poolDir = join(rig().rigDir, "pools", poolName);
    mkdirSync(poolDir, { recursive: true });
    const server = await startTestServer({
      libvirt: { uri: unixUri("qemu"), storage_pool_name: poolName, storage_pool_path: poolDir, domain_type: "qemu" },
      images: { base_images_dir: images },
      vm_defaults: { network_mode: "none", memory_mb: 128, vcpus: 1, root_disk_gb: 1, kernel_dir: kernelDir },
    });
    cleanups.push(async () => {
      await server.stop();
      const lv = await LibvirtClient.connect(unixUri("qemu"));
      await removePool(lv, poolName);
      await lv.close();
    });
    await waitHealthy(server);
    await talkToGuest(server);
  }, 180_000);
});
