/**
 * The CLI and the event stream, as real child processes against an in-process rcloud on the
 * direct QEMU driver (TCG guests from the bootable test disk): `rcloud events` (what is held,
 * -o json, --vm, --follow), `vm create --wait` following the VM's events (QEMU killed while
 * it waits for SSH: the CLI says what the stream said, at once), `vm stop --wait`.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { ApiEvent } from "../../src/api-types/json.ts";
import { uniqueName } from "../helpers/rig.ts";
import { startTestServer, waitHealthy, type TestServer } from "../helpers/server.ts";
import { cleanupState, DISK_IMAGE, tempDir } from "../qemu/helpers.ts";

const repo = resolve(import.meta.dir, "../..");
const root = tempDir("cli-ev");
let server: TestServer;
const home = mkdtempSync(join(tmpdir(), "rcloud-cli-ev-home-"));

beforeAll(async () => {
  const images = join(root, "images");
  mkdirSync(images, { recursive: true });
  copyFileSync(DISK_IMAGE, join(images, "rcloud-tiny.qcow2"));
  server = await startTestServer({
    driver: "qemu",
    qemu: { accel: "tcg", state_dir: join(root, "state") },
    images: { base_images_dir: images },
    vm_defaults: { network_mode: "user", user_network_restrict: true, memory_mb: 128, vcpus: 1, root_disk_gb: 1, stop_timeout_s: 60 },
  });
  await waitHealthy(server, 60_000);
});

afterAll(async () => {
  const list = await server.req("GET", "/api/v1/vms");
  for (const vm of list.json?.vms ?? []) await server.req("DELETE", `/api/v1/vms/${vm.id}`);
  await server.stop();
  await cleanupState(root);
});

function spawnCli(args: string[]) {
  return Bun.spawn([process.execPath, join(repo, "src/main.ts"), ...args], {
    cwd: repo,
    env: { ...process.env, RCLOUD_ENDPOINT: server.url, HOME: home, RCLOUD_TOKEN: "" },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
}

async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const proc = spawnCli(args);
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  return { code, stdout, stderr };
}

/** Collects a running child's stdout and stderr as they come. */
function watch(proc: ReturnType<typeof spawnCli>) {
  const out = { stdout: "", stderr: "" };
  const read = async (s: ReadableStream<Uint8Array>, k: "stdout" | "stderr") => {
    const d = new TextDecoder();
    for await (const c of s) out[k] += d.decode(c, { stream: true });
  };
  const done = Promise.all([read(proc.stdout, "stdout"), read(proc.stderr, "stderr")]);
  const until = async (re: RegExp, ms: number, k: "stdout" | "stderr" = "stdout") => {
    const deadline = Date.now() + ms;
    while (!re.test(out[k])) {
      if (Date.now() > deadline) throw new Error(`no ${re} within ${ms} ms; stdout:\n${out.stdout}\nstderr:\n${out.stderr}`);
      await Bun.sleep(100);
    }
  };
  return { out, done, until };
}

test("rcloud events: what is held (table, -o json, --vm), and --follow as it happens", async () => {
  const a = uniqueName("cea").slice(0, 30);
  const b = uniqueName("ceb").slice(0, 30);
  const follower = spawnCli(["events", "--follow", "--vm", b]);
  const followed = watch(follower);
  await Bun.sleep(1500); // let it subscribe (the CLI starts in a fresh process)
  expect((await server.req("POST", "/api/v1/vms", { name: a, image: "rcloud-tiny", start: false })).status).toBe(201);
  expect((await server.req("POST", "/api/v1/vms", { name: b, image: "rcloud-tiny", start: false })).status).toBe(201);
  expect((await server.req("POST", `/api/v1/vms/${b}/reboot`)).status).toBe(409);

  const table = await cli(["events"]);
  expect(table.code).toBe(0);
  expect(table.stdout).toMatch(new RegExp(`vm-created +${a} +created \\[request [^\\]]+\\]`));
  expect(table.stdout).toMatch(new RegExp(`operation-failed +${b} +.*\\(invalid_state\\)`));

  const json = await cli(["events", "-o", "json", "--vm", a]);
  expect(json.code).toBe(0);
  const events = json.stdout.trim().split("\n").map((l) => JSON.parse(l) as ApiEvent);
  expect(events[0]).toMatchObject({ type: "stream", action: "subscribed" });
  expect(events.slice(1).map((e) => `${e.action} ${e.vm?.name}`)).toEqual([`vm-created ${a}`]);

  await followed.until(new RegExp(`operation-failed +${b}`), 10_000);
  expect(followed.out.stdout).toMatch(new RegExp(`vm-created +${b}`));
  expect(followed.out.stdout).not.toContain(a);
  follower.kill("SIGINT");
  expect(await follower.exited).toBe(0);
}, 60_000);

test("vm create --wait follows the VM's events: QEMU killed while it waits says so at once", async () => {
  const vm = uniqueName("cew").slice(0, 30);
  const proc = spawnCli(["vm", "create", vm, "--image", "rcloud-tiny", "--network", "user", "--restrict", "--no-ssh-key", "--wait", "--timeout", "5m"]);
  const w = watch(proc);
  await w.until(/Created VM/, 60_000);
  const id = (await server.req("GET", `/api/v1/vms/${vm}`)).json.id as string;
  const pid = Number(readFileSync(join(root, "state", "vms", id, "qemu.pid"), "utf8").trim());
  const killedAt = Date.now();
  process.kill(pid, "SIGKILL");
  const code = await proc.exited;
  await w.done;
  expect(code).toBe(4);
  expect(w.out.stderr).toContain(`VM ${vm}: vm-stopped (failed)`);
  expect(Date.now() - killedAt).toBeLessThan(10_000);
}, 120_000);

test("vm create --wait returns once the VM answers on SSH; vm stop --wait shows how it stopped", async () => {
  const vm = uniqueName("ces").slice(0, 30);
  const created = await cli(["vm", "create", vm, "--image", "rcloud-tiny", "--network", "user", "--restrict", "--no-ssh-key", "--wait", "--timeout", "5m"]);
  expect(created.code).toBe(0);
  expect(created.stdout).toContain(`VM ${vm} is ready at 127.0.0.1:`);
  const stopped = await cli(["vm", "stop", vm, "--force", "--wait"]);
  expect(stopped.code).toBe(0);
  expect(stopped.stdout).toContain(`Stopped VM ${vm}, stopped (destroyed)`);
  expect(stopped.stderr).toMatch(new RegExp(`vm-stopped +${vm} +destroyed`));
}, 360_000);
