/**
 * Supervision on the direct QEMU driver, with rcloud as a child process
 * (`bun src/main.ts serve --config FILE`, RCLOUD_DRIVER=qemu): rcloud killed with SIGKILL
 * leaves its VMs running; a restarted rcloud takes over the stale lock, re-attaches to them
 * over QMP, notices the one that died meanwhile and controls them all. A second rcloud on
 * the same state directory is refused; a QEMU killed with SIGKILL shows as stopped within
 * seconds.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import type { Subprocess } from "bun";
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { stringify } from "yaml";
import { uniqueName, waitFor } from "../helpers/rig.ts";
import { startTestServer } from "../helpers/server.ts";
import { cleanupState, GUEST, qemuAlive, tempDir } from "./helpers.ts";

const repo = resolve(import.meta.dir, "../..");
const root = tempDir("sup");
const stateDir = join(root, "state");
const configFile = join(root, "rcloud.yaml");
let port = 0;
let url = "";
const children: Subprocess[] = [];
let images = "";

function freePort(): number {
  const l = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const p = l.port;
  l.stop(true);
  return p;
}

function config(state = stateDir) {
  return {
    logging: { level: "info", format: "text" },
    server: { bind_address: `127.0.0.1:${port}` },
    qemu: { accel: "tcg", state_dir: state },
    images: { base_images_dir: images },
    vm_defaults: { network_mode: "none", memory_mb: 128, vcpus: 1, root_disk_gb: 1, kernel_dir: join(GUEST.kernel, ".."), stop_timeout_s: 5 },
  };
}

/** rcloud as a child process on the qemu driver; its log goes to a file in the temp dir. */
async function startRcloud(): Promise<Subprocess> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith("RCLOUD_")) env[k] = v;
  Object.assign(env, { RCLOUD_DRIVER: "qemu", RCLOUD_QEMU_ACCEL: "tcg" });
  const log = join(root, `rcloud-${children.length}.log`);
  const child = Bun.spawn([process.execPath, join(repo, "src/main.ts"), "serve", "--config", configFile], {
    cwd: repo,
    env,
    stdin: "ignore",
    stdout: Bun.file(log),
    stderr: Bun.file(log),
  });
  children.push(child);
  await waitFor("rcloud (child) to become healthy", async () => {
    if (child.exitCode !== null) throw new Error(`rcloud exited ${child.exitCode}: ${readFileSync(log, "utf8").slice(-2000)}`);
    const r = await fetch(`${url}/api/v1/health`).catch(() => null);
    return r?.status === 200;
  }, 30_000);
  return child;
}

async function req(method: string, path: string, body?: unknown): Promise<{ status: number; json: any }> {
  const res = await fetch(`${url}${path}`, { method, headers: body ? { "content-type": "application/json" } : {}, body: body ? JSON.stringify(body) : undefined });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : null };
}

const vmBody = (name: string) => ({ name, image: "rcloud-tiny", kernel: GUEST.kernel, initrd: GUEST.initrd, cmdline: "console=ttyS0 panic=-1 quiet" });
const pidOf = (id: string) => Number(readFileSync(join(stateDir, "vms", id, "qemu.pid"), "utf8").trim());
const lockPid = () => Number(readFileSync(join(stateDir, "rcloud.lock"), "utf8").trim());

beforeAll(() => {
  port = freePort();
  url = `http://127.0.0.1:${port}`;
  images = join(root, "images");
  mkdirSync(images);
  // Guests boot the rig's kernel directly; the (tiny, valid) image is just their root disk.
  Bun.spawnSync(["qemu-img", "create", "-q", "-f", "qcow2", join(images, "rcloud-tiny.qcow2"), "64M"]);
  writeFileSync(configFile, stringify(config()));
});

afterAll(async () => {
  for (const c of children) {
    if (c.exitCode === null) c.kill("SIGKILL");
    await c.exited;
  }
  await cleanupState(root);
});

test("kill -9 rcloud: VMs keep running; restart re-attaches, notices the dead one, controls them", async () => {
  let rc = await startRcloud();
  const a = (await req("POST", "/api/v1/vms", vmBody(uniqueName("sup-a").slice(0, 40)))).json;
  const b = (await req("POST", "/api/v1/vms", vmBody(uniqueName("sup-b").slice(0, 40)))).json;
  expect([a.state, b.state]).toEqual(["running", "running"]);
  expect(lockPid()).toBe(rc.pid);

  // A second rcloud on the same state directory is refused, clearly; the first keeps it.
  const second = await startTestServer({ ...config(), server: undefined, logging: { level: "error", format: "text" }, driver: "qemu" });
  try {
    const h = await waitFor("the second rcloud to give up on the lock", async () => {
      const r = await second.req("GET", "/api/v1/health");
      return r.json.hypervisor.detail.includes("in use") ? r : null;
    });
    expect(h.status).toBe(503);
    expect(h.json.hypervisor.detail).toContain(`state directory ${stateDir} is in use by another rcloud (PID ${rc.pid}`);
    expect((await second.req("GET", "/api/v1/vms")).status).toBe(503);
  } finally {
    await second.stop();
  }
  expect((await req("GET", "/api/v1/health")).status).toBe(200);
  expect(lockPid()).toBe(rc.pid);

  const pa = pidOf(a.id);
  const pb = pidOf(b.id);
  rc.kill("SIGKILL");
  await rc.exited;
  expect(qemuAlive(pa, stateDir)).toBe(true);
  expect(qemuAlive(pb, stateDir)).toBe(true);
  // While rcloud is away one of them dies.
  process.kill(pb, "SIGKILL");
  await waitFor("QEMU b to die", () => !qemuAlive(pb, stateDir), 10_000, 50);

  rc = await startRcloud(); // the lock of the dead rcloud is stale: taken over
  expect(lockPid()).toBe(rc.pid);
  const list = (await req("GET", "/api/v1/vms")).json.vms;
  const state = Object.fromEntries(list.map((v: any) => [v.id, v.state]));
  expect(state).toEqual({ [a.id]: "running", [b.id]: "stopped" });
  expect(pidOf(a.id)).toBe(pa); // the same QEMU, not a new one

  // Controllable: QMP through the re-attached socket, stop, start, reboot.
  const q = await req("POST", `/api/v1/vms/${a.id}/qmp`, { execute: "query-status" });
  expect(q.json.return.status).toBe("running");
  expect((await req("POST", `/api/v1/vms/${a.id}/stop?force=true`)).json.state).toBe("stopped");
  expect(qemuAlive(pa, stateDir)).toBe(false);
  expect((await req("POST", `/api/v1/vms/${b.id}/start`)).json.state).toBe("running");
  expect((await req("POST", `/api/v1/vms/${b.id}/reboot`)).status).toBe(200);
  expect((await req("DELETE", `/api/v1/vms/${a.id}`)).status).toBe(200);
  expect((await req("DELETE", `/api/v1/vms/${b.id}`)).status).toBe(200);
  expect(readdirSync(join(stateDir, "vms"))).toEqual([]);
}, 120_000);

test("kill -9 a QEMU: reported stopped within seconds, and it starts again", async () => {
  const c = (await req("POST", "/api/v1/vms", vmBody(uniqueName("sup-c").slice(0, 40)))).json;
  expect(c.state).toBe("running");
  const pid = pidOf(c.id);
  const t0 = Date.now();
  process.kill(pid, "SIGKILL");
  await waitFor("the VM to show as stopped", async () => (await req("GET", `/api/v1/vms/${c.id}`)).json.state === "stopped", 5_000, 50);
  expect(Date.now() - t0).toBeLessThan(5_000);
  expect((await req("GET", "/api/v1/status")).json.vms_by_state).toMatchObject({ stopped: 1 });
  expect((await req("POST", `/api/v1/vms/${c.id}/start`)).json.state).toBe("running");
  expect(pidOf(c.id)).not.toBe(pid);
  expect((await req("DELETE", `/api/v1/vms/${c.id}`)).status).toBe(200);
}, 60_000);
