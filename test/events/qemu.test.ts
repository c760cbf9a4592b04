/**
 * GET /api/v1/events on the direct QEMU driver with real QEMU (TCG) and the bootable test
 * disk: a VM's whole life seen on the stream in order (rcloud's operations with their
 * request ids; QMP's SHUTDOWN, STOP, RESUME, RESET; QEMU killed behind rcloud's back), resumption
 * after a disconnect without loss or duplicates (NDJSON ?since= and SSE Last-Event-ID), the
 * gap event, 100 concurrent subscribers, project tokens seeing only their project, and an
 * admin's ?project= stream holding only that project's events.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { copyFileSync, existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { ApiEvent } from "../../src/api-types/json.ts";
import { createToken } from "../../src/auth/index.ts";
import type { QmpClient } from "../../src/qmp/index.ts";
import { EventCollector, timeline } from "../helpers/events.ts";
import { uniqueName } from "../helpers/rig.ts";
import { startTestServer, waitHealthy, type TestServer } from "../helpers/server.ts";
import { cleanupState, DISK_IMAGE, tempDir } from "../qemu/helpers.ts";

const root = tempDir("events");
let server: TestServer;
let authServer: TestServer;
const tokensFile = join(root, "tokens.json");

function imagesDir(): string {
  if (!existsSync(DISK_IMAGE)) throw new Error(`${DISK_IMAGE} missing: run scripts/lib/disk-image.sh (scripts/test does)`);
  const dir = join(root, "images");
  mkdirSync(dir, { recursive: true });
  if (!existsSync(join(dir, "rcloud-tiny.qcow2"))) copyFileSync(DISK_IMAGE, join(dir, "rcloud-tiny.qcow2"));
  return dir;
}

function qemuConfig(state: string, extra: Record<string, unknown> = {}) {
  return {
    driver: "qemu",
    qemu: { accel: "tcg", state_dir: join(root, state) },
    images: { base_images_dir: imagesDir() },
    vm_defaults: { network_mode: "user", user_network_restrict: true, memory_mb: 128, vcpus: 1, root_disk_gb: 1, stop_timeout_s: 60 },
    events: { buffer: 100, subscriber_buffer: 1000 },
    ...extra,
  };
}

beforeAll(async () => {
  server = await startTestServer(qemuConfig("state"));
  await waitHealthy(server, 60_000);
});

afterAll(async () => {
  for (const s of [server, authServer]) {
    if (!s) continue;
    const list = await s.req("GET", "/api/v1/vms").catch(() => null);
    for (const vm of list?.json?.vms ?? []) await s.req("DELETE", `/api/v1/vms/${vm.id}`).catch(() => {});
    await s.stop();
  }
  await cleanupState(root);
});

async function post(s: TestServer, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; json: any; requestId: string }> {
  const res = await fetch(`${s.url}${path}`, {
    method: "POST",
    headers: { ...(body !== undefined ? { "content-type": "application/json" } : {}), ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, json: await res.json(), requestId: res.headers.get("x-request-id") ?? "" };
}

/** Until the console log (GET /vms/{id}/console/log) matches. */
async function consoleShows(s: TestServer, vm: string, re: RegExp, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let text = "";
  while (Date.now() < deadline) {
    const res = await fetch(`${s.url}/api/v1/vms/${vm}/console/log?tail=65536`);
    expect(res.status).toBe(200);
    text = await res.text();
    if (re.test(text)) return;
    await Bun.sleep(500);
  }
  throw new Error(`the console of ${vm} did not show ${re} within ${timeoutMs} ms:\n${text.slice(-1500)}`);
}

/** Events from real operations that fail fast: a start of a VM that does not exist. */
async function failures(s: TestServer, n: number, tag: string, headers: Record<string, string> = {}): Promise<void> {
  for (let i = 0; i < n; i += 10) {
    await Promise.all(
      Array.from({ length: Math.min(10, n - i) }, (_, k) => post(s, `/api/v1/vms/${tag}-${i + k}/start`, undefined, headers).then((r) => expect(r.status).toBe(404))),
    );
  }
}

const lastId = (events: ApiEvent[]) => events.filter((e) => e.id !== null).at(-1)?.id ?? null;

describe("a VM's life on the stream", () => {
  test("operations, guest shutdown, QMP pause/resume, QMP reset, QEMU killed behind rcloud's back, delete: each once, in order", async () => {
    const ev = await EventCollector.open(`${server.url}/api/v1/events`);
    expect(ev.contentType).toBe("application/x-ndjson");
    expect(ev.events[0]).toMatchObject({ type: "stream", action: "subscribed", id: null });
    const name = uniqueName("evq").slice(0, 40);

    const created = await post(server, "/api/v1/vms", { name, image: "rcloud-tiny" });
    expect(created.status).toBe(201);
    const id = created.json.id as string;
    expect(await ev.next("vm-created", name, 10_000)).toMatchObject({ type: "operation", vm: { id, name }, request_id: created.requestId, host: "local", project: null });
    await ev.next("vm-started", name, 10_000);

    // Booted to its shell (acpid is up then): a graceful stop is the guest powering off.
    await consoleShows(server, name, /rcloud# /, 180_000);
    const refused = await post(server, `/api/v1/vms/${name}/start`);
    expect(refused.status).toBe(409);
    expect(await ev.next("operation-failed", name, 10_000)).toMatchObject({
      type: "operation",
      vm: { id, name },
      request_id: refused.requestId,
      error_code: "invalid_state",
      operation: "start",
      detail: refused.json.error.message,
    });
    const stopped = await post(server, `/api/v1/vms/${name}/stop?timeout=60`);
    expect(stopped.status).toBe(200);
    await ev.next("vm-stopped", name, 10_000);

    // Paused from QMP directly (as a debugger would), resumed through the API.
    expect((await post(server, `/api/v1/vms/${name}/start`)).status).toBe(200);
    const qmp = await (server.service.driver as unknown as { monitor(id: string): Promise<QmpClient> }).monitor(id);
    await qmp.execute("stop");
    await ev.next("vm-paused", name, 10_000);
    expect((await post(server, `/api/v1/vms/${name}/start`)).status).toBe(200);
    await ev.next("vm-resumed", name, 10_000);
    // Reset from QMP directly (as `virsh reset` would): a reboot rcloud did not ask for.
    await qmp.execute("system_reset");
    expect(await ev.next("vm-rebooted", name, 10_000)).toMatchObject({ type: "lifecycle", request_id: null, vm: { id, name } });

    // QEMU killed behind rcloud's back.
    const pid = Number(readFileSync(join(root, "state", "vms", id, "qemu.pid"), "utf8").trim());
    process.kill(pid, "SIGKILL");
    await ev.until((es) => timeline(es, name).filter((t) => t.startsWith("vm-stopped")).length === 2, 15_000, "vm-stopped after the kill");

    expect((await post(server, `/api/v1/vms/${name}/start`)).status).toBe(200);
    const deleted = await fetch(`${server.url}/api/v1/vms/${name}`, { method: "DELETE" });
    expect(deleted.status).toBe(200);
    const deletedReq = deleted.headers.get("x-request-id");
    expect(await ev.next("vm-deleted", name, 10_000)).toMatchObject({ type: "operation", vm: { id, name }, request_id: deletedReq });
    await Bun.sleep(500); // nothing may follow

    expect(timeline(ev.events, name)).toEqual([
      "vm-created created",
      "vm-started booted",
      `operation-failed ${refused.json.error.message}`,
      "vm-shutdown guest-shutdown",
      "vm-stopped shutdown",
      "vm-started booted",
      "vm-paused paused",
      "vm-resumed unpaused",
      "vm-rebooted host-qmp-system-reset",
      "vm-stopped failed",
      "vm-started booted",
      "vm-stopped destroyed",
      "vm-deleted deleted",
    ]);
    const ids = ev.real.map((e) => e.id as number);
    expect(ids).toEqual([...ids].sort((a, b) => a - b));
    expect(new Set(ids).size).toBe(ids.length);
    for (const e of ev.real.filter((x) => x.type === "lifecycle")) expect(e).toMatchObject({ vm: { id, name }, request_id: null, host: "local" });
    ev.close();
  }, 300_000);
});

describe("resuming", () => {
  test("NDJSON ?since=: a consumer that disconnects and comes back misses nothing and sees nothing twice", async () => {
    const all = await EventCollector.open(`${server.url}/api/v1/events`);
    const partial = await EventCollector.open(`${server.url}/api/v1/events`);
    await failures(server, 30, "rs-a");
    await partial.until((es) => es.filter((e) => e.id !== null).length >= 30, 10_000, "30 events");
    partial.close();
    const resumeAt = lastId(partial.events)!;
    await failures(server, 40, "rs-b");
    const resumed = await EventCollector.open(`${server.url}/api/v1/events?since=${resumeAt}`);
    expect(resumed.events[0]).toMatchObject({ action: "subscribed", last_id: resumeAt });
    await failures(server, 10, "rs-c");
    await all.until((es) => es.filter((e) => e.vm?.name.startsWith("rs-")).length === 80, 10_000, "80 events");
    await resumed.until((es) => es.filter((e) => e.vm?.name === "rs-c-9").length === 1, 10_000, "the last event");
    const joined = [...partial.real, ...resumed.real].filter((e) => e.vm?.name.startsWith("rs-"));
    expect(joined.map((e) => e.id)).toEqual(all.real.filter((e) => e.vm?.name.startsWith("rs-")).map((e) => e.id));
    expect(joined.map((e) => e.vm?.name).filter((n) => n?.startsWith("rs-b")).length).toBe(40);
    all.close();
    resumed.close();
  });

  test("SSE with Last-Event-ID: the same events as NDJSON, ids on each", async () => {
    const sse = async (headers: Record<string, string>, until: (text: string) => boolean): Promise<{ id: number | null; event: ApiEvent }[]> => {
      const ac = new AbortController();
      const res = await fetch(`${server.url}/api/v1/events`, { headers: { accept: "text/event-stream", ...headers }, signal: ac.signal });
      expect(res.headers.get("content-type")).toStartWith("text/event-stream");
      let text = "";
      const decoder = new TextDecoder();
      for await (const chunk of res.body!) {
        text += decoder.decode(chunk, { stream: true });
        if (until(text)) break;
      }
      ac.abort();
      return text
        .split("\n\n")
        .filter((b) => b.includes("data: "))
        .map((block) => {
          const fields = Object.fromEntries(block.split("\n").map((l) => [l.slice(0, l.indexOf(":")), l.slice(l.indexOf(":") + 2)]));
          return { id: fields.id !== undefined ? Number(fields.id) : null, event: JSON.parse(fields.data!) as ApiEvent };
        });
    };
    const ndjson = await EventCollector.open(`${server.url}/api/v1/events`);
    const first = sse({}, (t) => t.includes('"sse-a-4"'));
    await Bun.sleep(200);
    await failures(server, 5, "sse-a");
    const got = await first;
    expect(got[0]!.event.action).toBe("subscribed");
    expect(got[0]!.id).toBeNull();
    for (const g of got.slice(1)) expect(g.id).toBe(g.event.id);
    await failures(server, 5, "sse-b");
    const again = await sse({ "last-event-id": String(got.at(-1)!.id) }, (t) => t.includes('"sse-b-4"'));
    await ndjson.until((es) => es.some((e) => e.vm?.name === "sse-b-4"), 10_000, "sse-b-4");
    const names = [...got, ...again].map((g) => g.event.vm?.name).filter((n) => n?.startsWith("sse-"));
    expect(names).toEqual(ndjson.real.map((e) => e.vm?.name).filter((n) => n?.startsWith("sse-")));
    ndjson.close();
  });

  test("a since the ring no longer holds starts with a gap, then everything held, in order", async () => {
    const ev = await EventCollector.open(`${server.url}/api/v1/events`);
    await failures(server, 5, "gap-a");
    await ev.until((es) => es.filter((e) => e.vm?.name.startsWith("gap-a")).length === 5, 10_000, "5 events");
    const old = ev.real.find((e) => e.vm?.name.startsWith("gap-a"))!.id!;
    await failures(server, 120, "gap-b"); // events.buffer is 100
    await ev.until((es) => es.filter((e) => e.vm?.name.startsWith("gap-b")).length === 120, 20_000, "120 events");
    const after = await EventCollector.open(`${server.url}/api/v1/events?since=${old}&follow=false`);
    await after.ended;
    const [gap, ...rest] = after.events;
    expect(gap).toMatchObject({ type: "stream", action: "gap", id: null });
    expect(gap!.detail).toContain(`events ${old + 1} to`);
    expect(rest.map((e) => e.id)).toEqual(Array.from({ length: 100 }, (_, i) => gap!.last_id! + 1 + i));
    expect(rest.at(-1)!.id).toBe(lastId(ev.events));
    ev.close();
  });
});

test("100 concurrent subscribers get the same events in the same order", async () => {
  const subs = await Promise.all(Array.from({ length: 100 }, () => EventCollector.open(`${server.url}/api/v1/events?type=operation`)));
  const metrics = await (await fetch(`${server.url}/metrics`)).text();
  expect(Number(/^rcloud_event_subscribers (\d+)/m.exec(metrics)?.[1])).toBeGreaterThanOrEqual(100);
  await failures(server, 50, "many");
  await Promise.all(subs.map((s) => s.until((es) => es.filter((e) => e.vm?.name.startsWith("many-")).length === 50, 20_000, "50 events")));
  const reference = subs[0]!.real.map((e) => e.id);
  expect(reference).toHaveLength(50);
  for (const s of subs) expect(s.real.map((e) => e.id)).toEqual(reference);
  for (const s of subs) s.close();
}, 60_000);

test("a project token sees only its project's events; ?project= of another project is 403; an admin's ?project= gets only that project", async () => {
  const admin = createToken(tokensFile, { name: "admin", role: "admin", project: null }).token;
  const alpha = createToken(tokensFile, { name: "alpha", role: "user", project: "evalpha" }).token;
  const beta = createToken(tokensFile, { name: "beta", role: "user", project: "evbeta" }).token;
  authServer = await startTestServer(qemuConfig("auth-state", { auth: { enabled: true, tokens_file: tokensFile } }));
  await waitHealthy(authServer, 60_000);
  const bearer = (t: string) => ({ authorization: `Bearer ${t}` });
  const url = `${authServer.url}/api/v1/events`;
  expect((await EventCollector.open(url)).status).toBe(401);
  const forbidden = await EventCollector.open(`${url}?project=evbeta`, bearer(alpha));
  expect(forbidden.status).toBe(403);
  expect(JSON.parse(forbidden.error!).error.code).toBe("forbidden");
  const [seenByAdmin, seenByAlpha, seenByBeta] = await Promise.all([admin, alpha, beta].map((t) => EventCollector.open(url, bearer(t))));
  const adminAlpha = await EventCollector.open(`${url}?project=evalpha`, bearer(admin));
  expect(adminAlpha.status).toBe(200);

  const a = uniqueName("eva").slice(0, 40);
  const b = uniqueName("evb").slice(0, 40);
  expect((await post(authServer, "/api/v1/vms", { name: a, image: "rcloud-tiny", start: false }, bearer(alpha))).status).toBe(201);
  expect((await post(authServer, "/api/v1/vms", { name: b, image: "rcloud-tiny", start: false }, bearer(beta))).status).toBe(201);
  // alpha trying beta's VM: refused, and that refusal is alpha's business, not beta's.
  expect((await post(authServer, `/api/v1/vms/${b}/start`, undefined, bearer(alpha))).status).toBe(403);
  await failures(authServer, 2, "evnope", bearer(alpha));

  await seenByAdmin!.until((es) => es.filter((e) => e.type !== "stream").length >= 5, 10_000, "5 events");
  await Bun.sleep(300);
  const subjects = (c: EventCollector) => c.real.filter((e) => e.type !== "host").map((e) => `${e.action} ${e.vm?.name} ${e.project}`);
  expect(subjects(seenByAlpha!).sort()).toEqual([`vm-created ${a} evalpha`, `operation-failed ${b} evalpha`, "operation-failed evnope-0 evalpha", "operation-failed evnope-1 evalpha"].sort());
  // The refusal names the VM as alpha named it, without beta's VM id.
  expect(seenByAlpha!.real.find((e) => e.vm?.name === b)?.vm?.id).toBeNull();
  expect(subjects(seenByBeta!)).toEqual([`vm-created ${b} evbeta`]);
  expect(subjects(seenByAdmin!).filter((s) => s.startsWith("vm-created"))).toEqual([`vm-created ${a} evalpha`, `vm-created ${b} evbeta`]);
  // The admin filtering on evalpha: alpha's events (beta's VM included, as alpha named it), nothing of evbeta.
  expect(subjects(adminAlpha).sort()).toEqual(subjects(seenByAlpha!).sort());
  expect(adminAlpha.real.filter((e) => e.type !== "host").every((e) => e.project === "evalpha")).toBe(true);
  for (const c of [seenByAdmin, seenByAlpha, seenByBeta, adminAlpha]) c!.close();
}, 120_000);
