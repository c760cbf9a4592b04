/**
 * Consumers that stop reading are cut off, and rcloud's memory stays bounded meanwhile:
 * rcloud runs as its own process (its RSS is read from /proc), 40 consumers connect with a
 * tiny receive buffer and read nothing while 20,000 events are made by real requests, another
 * reads everything. Each stalled one finally gets what the kernel held, then a `cut-off`
 * event and the end of the stream; the reader gets all of them in order.
 */
import { afterAll, expect, test } from "bun:test";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { stringify } from "yaml";
import type { ApiEvent } from "../../src/api-types/json.ts";
import { EventCollector } from "../helpers/events.ts";
import { cleanupState, tempDir } from "../qemu/helpers.ts";

const repo = resolve(import.meta.dir, "../..");
const root = tempDir("slow");
let rcloud: ReturnType<typeof Bun.spawn> | null = null;

afterAll(async () => {
  rcloud?.kill("SIGTERM");
  await rcloud?.exited;
  await cleanupState(root);
});

const STALLED = 40;

/**
 * Opens argv[2] streams with a 4 KiB receive buffer each, says "ready", reads nothing until
 * told "read" on stdin, then writes what each got to argv[3]-<i>.raw.
 */
const SLOW_CONSUMERS = `
import socket, sys
socks = []
for i in range(int(sys.argv[2])):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", int(sys.argv[1])))
    s.sendall(b"GET /api/v1/events HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nConnection: close\\r\\n\\r\\n")
    socks.append(s)
print("ready", flush=True)
sys.stdin.readline()
for i, s in enumerate(socks):
    with open(f"{sys.argv[3]}-{i}.raw", "wb") as f:
        while True:
            b = s.recv(65536)
            if not b:
                break
            f.write(b)
print("done", flush=True)
`;

function rssKiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  if (!m) throw new Error(`no VmRSS for PID ${pid}`);
  return Number(m[1]);
}

async function freePort(): Promise<number> {
  const s = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = s.port;
  s.stop(true);
  return port;
}

/** Events from real requests: starts of VMs that do not exist (404, operation-failed), 16 at a time. */
async function flood(url: string, n: number): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const k = next++;
      const res = await fetch(`${url}/api/v1/vms/slow-consumer-test-${k}/start`, { method: "POST" });
      await res.arrayBuffer();
      if (res.status !== 404) throw new Error(`expected 404, got ${res.status}`);
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
}

/** Parses a raw HTTP/1.1 chunked NDJSON response into events. */
function eventsOf(raw: string): ApiEvent[] {
  const body = raw.slice(raw.indexOf("\r\n\r\n") + 4);
  let text = "";
  let at = 0;
  for (;;) {
    const eol = body.indexOf("\r\n", at);
    if (eol < 0) break;
    const size = parseInt(body.slice(at, eol), 16);
    if (!size) break;
    text += body.slice(eol + 2, eol + 2 + size);
    at = eol + 2 + size + 2;
  }
  return text.split("\n").filter((l) => l !== "").map((l) => JSON.parse(l) as ApiEvent);
}

test("stalled consumers are cut off with a final event; rcloud's RSS stays bounded; a reader gets everything", async () => {
  const port = await freePort();
  const state = join(root, "state");
  mkdirSync(join(root, "images"), { recursive: true });
  const config = join(root, "rcloud.yaml");
  writeFileSync(
    config,
    stringify({
      server: { bind_address: `127.0.0.1:${port}` },
      driver: "qemu",
      qemu: { accel: "tcg", state_dir: state },
      images: { base_images_dir: join(root, "images") },
      logging: { level: "warn", format: "text" },
      events: { buffer: 1000, subscriber_buffer: 2000 },
    }),
  );
  rcloud = Bun.spawn([process.execPath, join(repo, "src/main.ts"), "serve", "--config", config], { stdout: "pipe", stderr: "pipe" });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 600; i++) {
    if ((await fetch(`${url}/api/v1/health`).then((r) => r.status).catch(() => 0)) === 200) break;
    await Bun.sleep(100);
  }

  const reader = await EventCollector.open(`${url}/api/v1/events?type=operation`);
  // Warm up first (code paths, the ring full, the heap at its working size): request
  // handling alone moves RSS by a few tens of MiB.
  await flood(url, 10_000);
  const slow = Bun.spawn(["python3", "-c", SLOW_CONSUMERS, String(port), String(STALLED), join(root, "slow")], { stdin: "pipe", stdout: "pipe", stderr: "pipe" });
  const out = slow.stdout.getReader();
  let said = "";
  const saying = async (word: string) => {
    while (!said.includes(`${word}\n`)) {
      const { done, value } = await out.read();
      if (done) throw new Error(`the consumers' process ended without saying ${word}: ${await new Response(slow.stderr).text()}`);
      said += new TextDecoder().decode(value);
    }
  };
  await saying("ready");
  const before = rssKiB(rcloud.pid);

  const t0 = performance.now();
  const N = 20_000;
  await flood(url, N);
  const seconds = (performance.now() - t0) / 1000;
  await reader.until((es) => es.filter((e) => e.type === "operation").length === 10_000 + N, 60_000, "every event");
  const after = rssKiB(rcloud.pid);
  console.log(JSON.stringify({ events: N, stalled: STALLED, seconds: Math.round(seconds * 10) / 10, rss_before_mib: Math.round(before / 1024), rss_after_mib: Math.round(after / 1024) }));

  // The reader: every event, once, in order.
  const ids = reader.real.map((e) => e.id as number);
  expect(ids.slice(1).every((id, i) => id === ids[i]! + 1)).toBe(true);

  // The stalled consumers: what the kernel buffers held, then cut-off, then the end.
  slow.stdin.write("read\n");
  await slow.stdin.end();
  await saying("done");
  expect(await slow.exited).toBe(0);
  const received: number[] = [];
  for (let i = 0; i < STALLED; i++) {
    const got = eventsOf(readFileSync(join(root, `slow-${i}.raw`), "latin1"));
    expect(got[0]).toMatchObject({ type: "stream", action: "subscribed" });
    const last = got.at(-1)!;
    expect(last).toMatchObject({ type: "stream", action: "cut-off", id: null });
    const delivered = got.slice(1, -1);
    expect(delivered.length).toBeGreaterThan(0);
    expect(delivered.length).toBeLessThan(N);
    expect(last.last_id).toBe(delivered.at(-1)!.id);
    expect(last.detail).toContain(`?since=${last.last_id}`);
    const from = ids.indexOf(delivered[0]!.id as number);
    expect(delivered.map((e) => e.id)).toEqual(ids.slice(from, from + delivered.length));
    received.push(delivered.length);
  }
  console.log(JSON.stringify({ stalled_consumers_received: { min: Math.min(...received), max: Math.max(...received) } }));

  const metrics = await (await fetch(`${url}/metrics`)).text();
  expect(Number(/^rcloud_event_consumers_cut_off_total (\d+)/m.exec(metrics)?.[1])).toBe(STALLED);
  expect(Number(/^rcloud_event_subscribers (\d+)/m.exec(metrics)?.[1])).toBe(1);
  // Kept for the stalled consumers, their backlogs (the events each did not get) would take
  // this much as text alone; request handling moves RSS by a few tens of MiB either way.
  const lineBytes = reader.real.reduce((n, e) => n + JSON.stringify(e).length + 1, 0) / reader.real.length;
  const backlogKiB = received.reduce((n, r) => n + (N - r) * lineBytes, 0) / 1024;
  console.log(JSON.stringify({ rss_growth_mib: Math.round((after - before) / 1024), backlogs_if_kept_mib: Math.round(backlogKiB / 1024) }));
  expect(backlogKiB).toBeGreaterThan(128 * 1024);
  expect(after - before).toBeLessThan(backlogKiB / 2);
  reader.close();
}, 240_000);
