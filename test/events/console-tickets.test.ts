/**
 * Console tickets for browsers (POST /api/v1/vms/{id}/console) with auth on, on a real TCG
 * guest (direct kernel boot of the rig's initramfs, a shell on ttyS0): a ticket opens the
 * console websocket without an Authorization header and talks to the guest; reused, expired,
 * foreign-origin and other-VM tickets are refused; the CLI's bearer header keeps working;
 * a project token gets no ticket for another project's VM.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { chmodSync, copyFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createToken } from "../../src/auth/index.ts";
import { uniqueName } from "../helpers/rig.ts";
import { startTestServer, waitHealthy, type TestServer } from "../helpers/server.ts";
import { cleanupState, GUEST, tempDir } from "../qemu/helpers.ts";

const root = tempDir("tickets");
const tokensFile = join(root, "tokens.json");
let server: TestServer;
let admin = "";
let other = "";
const vm = uniqueName("tkt").slice(0, 40);
const vm2 = uniqueName("tkt2").slice(0, 40);

beforeAll(async () => {
  const kernelDir = join(root, "kernel");
  const images = join(root, "images");
  for (const d of [kernelDir, images]) {
    Bun.spawnSync(["mkdir", "-p", d]);
    chmodSync(d, 0o755);
  }
  copyFileSync(GUEST.kernel, join(kernelDir, "vmlinuz"));
  copyFileSync(GUEST.initrd, join(kernelDir, "initrd.img"));
  writeFileSync(join(images, "img.raw"), new Uint8Array(1024 * 1024));
  admin = createToken(tokensFile, { name: "admin", role: "admin", project: null }).token;
  other = createToken(tokensFile, { name: "other", role: "user", project: "tktother" }).token;
  server = await startTestServer({
    driver: "qemu",
    qemu: { accel: "tcg", state_dir: join(root, "state") },
    images: { base_images_dir: images },
    vm_defaults: { network_mode: "none", memory_mb: 128, vcpus: 1, root_disk_gb: 1, kernel_dir: kernelDir },
    auth: { enabled: true, tokens_file: tokensFile },
  });
  await waitHealthy(server, 60_000);
  for (const [name, project] of [[vm, "tktmain"], [vm2, "tktmain"]] as const) {
    const res = await api("POST", "/vms", { name, image: "img", project, kernel: join(kernelDir, "vmlinuz"), initrd: join(kernelDir, "initrd.img"), cmdline: "console=ttyS0 panic=-1 quiet" });
    expect(res.status).toBe(201);
  }
}, 120_000);

afterAll(async () => {
  for (const name of [vm, vm2]) await api("DELETE", `/vms/${name}`).catch(() => {});
  await server?.stop();
  await cleanupState(root);
});

async function api(method: string, path: string, body?: unknown, token = admin, headers: Record<string, string> = {}) {
  const res = await fetch(`${server.url}/api/v1${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { "content-type": "application/json" } : {}), ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, json: (await res.json()) as any };
}

const ticket = async (name = vm) => {
  const t = await api("POST", `/vms/${name}/console`);
  expect(t.status).toBe(200);
  return t.json as { url: string; ticket: string; expires_at: string };
};

/** Opens a websocket and collects what it says until it closes or `until` shows up. */
function attach(url: string, headers?: Record<string, string>) {
  const ws = new WebSocket(url, headers ? ({ headers } as unknown as string[]) : undefined);
  ws.binaryType = "arraybuffer";
  let text = "";
  let frames = "";
  const opened = new Promise<boolean>((r) => {
    ws.onopen = () => r(true);
    ws.onerror = () => r(false);
  });
  const closed = new Promise<{ code: number; reason: string }>((r) => (ws.onclose = (ev) => r({ code: ev.code, reason: ev.reason })));
  ws.onmessage = (ev) => {
    if (typeof ev.data === "string") frames += ev.data;
    else text += new TextDecoder().decode(new Uint8Array(ev.data as ArrayBuffer));
  };
  return { ws, opened, closed, text: () => text, frames: () => frames };
}

/** Types `echo` lines until the guest's shell answers (it may still be booting). */
async function talk(con: ReturnType<typeof attach>, tag: string): Promise<void> {
  const token = `${tag}-${Math.floor(Math.random() * 1e9)}`;
  const want = new RegExp(`^${token}\\r?$`, "m");
  const deadline = Date.now() + 120_000;
  while (!want.test(con.text()) && Date.now() < deadline) {
    con.ws.send(new TextEncoder().encode(`echo ${token.replace("-", "''-")}\r`));
    await Bun.sleep(2_000);
  }
  if (!want.test(con.text())) throw new Error(`the guest did not answer; console:\n${con.text().slice(-1500)}`);
}

test("a ticket opens the console without a header, once; the answer says where and until when", async () => {
  const t = await ticket();
  expect(t.url).toBe(`${server.url.replace(/^http/, "ws")}/api/v1/vms/${(await api("GET", `/vms/${vm}`)).json.id}/console/attach?ticket=${t.ticket}`);
  const expires = Date.parse(t.expires_at) - Date.now();
  expect(expires).toBeGreaterThan(25_000);
  expect(expires).toBeLessThanOrEqual(30_000);
  const con = attach(t.url);
  expect(await con.opened).toBe(true);
  await talk(con, "tkt");
  con.ws.close();
  await con.closed;

  // The same ticket again: an error frame in the API's words, then close 4401.
  const again = attach(t.url);
  const closed = await again.closed;
  expect(closed.code).toBe(4401);
  expect(JSON.parse(again.frames()).error).toMatchObject({ code: "unauthorized", message: expect.stringContaining("already used") });
}, 180_000);

test("a ticket for one VM does not open another's console", async () => {
  const t = await ticket(vm);
  const con = attach(t.url.replace(/\/vms\/[^/]+\/console/, `/vms/${vm2}/console`));
  expect((await con.closed).code).toBe(4401);
  expect(JSON.parse(con.frames()).error.message).toContain(`is for VM ${vm}`);
});

test("a page of another origin is refused before the ticket is looked at", async () => {
  const t = await ticket();
  const res = await fetch(t.url.replace(/^ws/, "http"), {
    headers: { upgrade: "websocket", connection: "Upgrade", "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==", "sec-websocket-version": "13", origin: "http://evil.example" },
  });
  expect(res.status).toBe(403);
  expect(((await res.json()) as any).error.code).toBe("forbidden_origin");
  // The browser's own origin is fine (and the ticket was not used up by the refusal).
  const own = attach(t.url, { origin: server.url });
  expect(await own.opened).toBe(true);
  own.ws.close();
  await own.closed;
});

test("no ticket and no header: 401 before any upgrade; the CLI's bearer header still works", async () => {
  const url = `${server.url}/api/v1/vms/${vm}/console/attach`;
  const res = await fetch(url, { headers: { upgrade: "websocket", connection: "Upgrade", "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==", "sec-websocket-version": "13" } });
  expect(res.status).toBe(401);
  const cli = attach(url.replace(/^http/, "ws"), { authorization: `Bearer ${admin}` });
  expect(await cli.opened).toBe(true);
  await talk(cli, "hdr");
  cli.ws.close();
  await cli.closed;
}, 180_000);

test("a project token gets no ticket for another project's VM", async () => {
  const res = await api("POST", `/vms/${vm}/console`, undefined, other);
  expect(res.status).toBe(403);
  expect(res.json.error.code).toBe("forbidden");
});

test("an expired ticket is refused", async () => {
  const t = await ticket();
  await Bun.sleep(31_000);
  const con = attach(t.url);
  expect((await con.closed).code).toBe(4401);
  expect(JSON.parse(con.frames()).error.message).toContain("expired");
}, 60_000);
