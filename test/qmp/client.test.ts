/**
 * QmpClient against a fake QMP peer: handshake, id matching, errors, events, closes,
 * deadlines, cancellation and hostile input.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { join } from "node:path";
import {
  QmpAbortedError,
  QmpClient,
  QmpClosedError,
  QmpConnectError,
  QmpError,
  QmpProtocolError,
  QmpTimeoutError,
  waitForEvent,
  type QmpEvent,
} from "../../src/qmp/index.ts";
import { FakeQmp, GREETING, type FakeConnection } from "./fake-qmp.ts";

const fakes: FakeQmp[] = [];
const clients: QmpClient[] = [];
afterEach(() => {
  for (const c of clients.splice(0)) c.close();
  for (const f of fakes.splice(0)) f.stop();
});

function fake(opts: Parameters<typeof FakeQmp.start>[0] = {}): FakeQmp {
  const f = FakeQmp.start(opts);
  fakes.push(f);
  return f;
}

async function connect(f: FakeQmp, opts: Parameters<typeof QmpClient.connect>[1] = {}): Promise<{ client: QmpClient; peer: FakeConnection }> {
  const client = await QmpClient.connect(f.path, opts);
  clients.push(client);
  return { client, peer: await f.connection() };
}

/** A command handler that never answers; tests answer by hand. */
const silent = () => {};

function settleWithin<T>(p: Promise<T>, ms: number): Promise<{ ok: true; value: T } | { ok: false; error: unknown }> {
  return Promise.race([
    p.then(
      (value) => ({ ok: true as const, value }),
      (error: unknown) => ({ ok: false as const, error }),
    ),
    new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`not settled within ${ms} ms`)), ms)),
  ]);
}

describe("handshake", () => {
  test("greeting is parsed and capabilities are negotiated first", async () => {
    const f = fake();
    const { client, peer } = await connect(f);
    expect(client.version).toEqual({ major: 7, minor: 2, micro: 22, package: "Debian 1:7.2+dfsg-7+deb12u18+b3" });
    expect(client.capabilities).toEqual(["oob"]);
    expect(peer.commands[0]!.execute).toBe("qmp_capabilities");
    expect(typeof peer.commands[0]!.id).toBe("string");
    expect(peer.badInput).toEqual([]);
    expect(client.closed).toBe(false);
    // arguments are sent as "arguments"; none when omitted
    await client.execute("device_del", { id: "x" });
    await client.execute("stop");
    expect(peer.commands[1]).toEqual({ execute: "device_del", arguments: { id: "x" }, id: peer.commands[1]!.id });
    expect(peer.commands[2]).toEqual({ execute: "stop", id: peer.commands[2]!.id });
  });

  test("a peer that is not QMP fails connect with QmpProtocolError", async () => {
    const f = fake({ greeting: "SSH-2.0-OpenSSH_9.2\r\n" });
    const e = await QmpClient.connect(f.path).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(QmpProtocolError);
    expect((e as Error).message).toContain("not a QMP socket");

    const g = fake({ greeting: JSON.stringify({ QMP: { version: { qemu: { major: "7" } }, capabilities: [] } }) + "\n" });
    expect(await QmpClient.connect(g.path).catch((x: unknown) => x)).toBeInstanceOf(QmpProtocolError);
  });

  test("silence after connect is a greeting timeout", async () => {
    const f = fake({ greeting: null });
    const started = Date.now();
    const e = await QmpClient.connect(f.path, { greetingTimeoutMs: 200 }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(QmpTimeoutError);
    expect(Date.now() - started).toBeLessThan(2_000);
  });

  test("capabilities that never get answered time out with commandTimeoutMs", async () => {
    const f = fake({ manualCapabilities: true, onCommand: silent });
    const e = await QmpClient.connect(f.path, { commandTimeoutMs: 200 }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(QmpTimeoutError);
    expect((e as QmpTimeoutError).operation).toBe("qmp_capabilities");
  });

  test("a missing socket is a QmpConnectError", async () => {
    const f = fake();
    const e = await QmpClient.connect(join(f.path, "..", "nope.sock")).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(QmpConnectError);
  });

  test("a peer that closes during the greeting fails connect with QmpClosedError", async () => {
    const f = fake({ greeting: null });
    const p = QmpClient.connect(f.path).catch((x: unknown) => x);
    (await f.connection()).end();
    expect(await p).toBeInstanceOf(QmpClosedError);
  });
});

describe("commands", () => {
  test("replies out of order are matched by id", async () => {
    const f = fake({ onCommand: silent });
    const { client, peer } = await connect(f);
    const names = ["query-status", "query-name", "query-uuid", "query-kvm", "query-version"];
    const promises = names.map((n) => client.execute<{ name: string }>(n));
    const cmds = (await peer.waitForCommands(1 + names.length)).slice(1);
    // Reverse order, all in one write, with an event and an unknown id in between.
    let text = "";
    for (const c of [...cmds].reverse()) {
      text += JSON.stringify({ return: { name: c.execute }, id: c.id }) + "\r\n";
      text += JSON.stringify({ return: {}, id: "not-ours" }) + "\r\n";
    }
    peer.raw(text);
    const results = await Promise.all(promises);
    expect(results.map((r) => r.name)).toEqual(names);
    expect(client.stats.unmatchedReplies).toBe(names.length);
    expect(client.inFlight).toBe(0);
  });

  test("error replies reject with QmpError carrying the class", async () => {
    const f = fake({
      onCommand: (c, conn) => conn.send({ id: c.id, error: { class: "CommandNotFound", desc: `The command ${c.execute} has not been found` } }),
    });
    const { client } = await connect(f);
    const e = await client.execute("no-such-thing").catch((x: unknown) => x);
    expect(e).toBeInstanceOf(QmpError);
    expect((e as QmpError).errorClass).toBe("CommandNotFound");
    expect((e as QmpError).command).toBe("no-such-thing");
    expect((e as QmpError).desc).toBe("The command no-such-thing has not been found");
    expect(client.closed).toBe(false);
  });

  test("a malformed reply to a pending command fails only that command", async () => {
    const f = fake({ onCommand: silent });
    const { client, peer } = await connect(f);
    const a = client.execute("a");
    const b = client.execute("b");
    const c = client.execute("c");
    const d = client.execute("d");
    const cmds = await peer.waitForCommands(5);
    peer.send({ id: cmds[4]!.id });
    peer.send({ id: cmds[1]!.id, error: "boom" });
    peer.send({ id: cmds[2]!.id, return: 1, error: { class: "GenericError", desc: "x" } });
    peer.send({ id: cmds[3]!.id, return: [1, 2, 3] });
    expect(await a.catch((x: unknown) => x)).toBeInstanceOf(QmpProtocolError);
    expect(await b.catch((x: unknown) => x)).toBeInstanceOf(QmpProtocolError);
    expect(await c).toEqual([1, 2, 3]);
    expect(await d.catch((x: unknown) => x)).toBeInstanceOf(QmpProtocolError);
    expect(client.closed).toBe(false);
  });

  test("arguments that cannot be serialised never reach the wire", async () => {
    const f = fake();
    const { client, peer } = await connect(f);
    const e = await client.execute("x", { n: 1n }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(TypeError);
    expect(peer.commands.length).toBe(1);
  });

  test("a reply split byte by byte, with multi-byte UTF-8, is reassembled", async () => {
    const f = fake({ onCommand: silent });
    const { client, peer } = await connect(f);
    const p = client.execute<{ s: string }>("echo");
    const [, cmd] = await peer.waitForCommands(2);
    const s = "héllo ✓ 🚀 日本語";
    const bytes = new TextEncoder().encode(JSON.stringify({ return: { s }, id: cmd!.id }) + "\r\n");
    for (const b of bytes) {
      peer.raw(new Uint8Array([b]));
      await Bun.sleep(0);
    }
    expect((await p).s).toBe(s);
  });
});

describe("events", () => {
  test("events interleaved with replies reach every iterator, filtered, in order", async () => {
    const f = fake({
      onCommand: (c, conn) => {
        conn.event("STOP");
        conn.reply(c.id, { status: "paused" });
        conn.event("GUEST_PANICKED", { action: "pause", info: { type: "hyper-v" } });
      },
    });
    const { client } = await connect(f);
    const all = client.events();
    const onlyPanic = client.events(["GUEST_PANICKED", "SHUTDOWN"]);
    expect(await client.execute("stop")).toEqual({ status: "paused" });
    const e1 = (await all.next()).value as QmpEvent;
    const e2 = (await all.next()).value as QmpEvent;
    expect(e1).toEqual({ event: "STOP", data: {}, timestamp: { seconds: 1_700_000_000, microseconds: 1234 } });
    expect(e2.event).toBe("GUEST_PANICKED");
    expect(e2.data).toEqual({ action: "pause", info: { type: "hyper-v" } });
    const p = (await onlyPanic.next()).value as QmpEvent;
    expect(p.event).toBe("GUEST_PANICKED");

    // return() unsubscribes: later events go only to the remaining iterator
    await onlyPanic.return!();
    expect((await onlyPanic.next()).done).toBe(true);
    await client.execute("stop");
    expect(((await all.next()).value as QmpEvent).event).toBe("STOP");
    expect(((await all.next()).value as QmpEvent).event).toBe("GUEST_PANICKED");
    await all.return!();
  });

  test("a slow consumer loses the oldest events, never the connection", async () => {
    const f = fake();
    const { client, peer } = await connect(f, { eventQueueCapacity: 10 });
    const it = client.events();
    for (let i = 0; i < 50; i++) peer.event("RESET", { n: i });
    await client.execute("sync"); // all 50 events precede this reply
    const got: number[] = [];
    for (let i = 0; i < 10; i++) got.push(((await it.next()).value as QmpEvent).data["n"] as number);
    expect(got).toEqual([40, 41, 42, 43, 44, 45, 46, 47, 48, 49]);
    expect(client.stats.droppedEvents).toBe(40);
    await it.return!();
    expect(client.stats.droppedEvents).toBe(40);
  });

  test("waitForEvent: match, timeout, abort, close", async () => {
    const f = fake({ onCommand: (c, conn) => (conn.event("RESET", { guest: false }), conn.event("RESET", { guest: true }), conn.reply(c.id, {})) });
    const { client, peer } = await connect(f);
    const guest = waitForEvent(client, "RESET", 2_000, { match: (e) => e.data["guest"] === true });
    await client.execute("system_reset");
    expect((await guest).data).toEqual({ guest: true });

    const t0 = Date.now();
    expect(await waitForEvent(client, "SHUTDOWN", 100).catch((x: unknown) => x)).toBeInstanceOf(QmpTimeoutError);
    expect(Date.now() - t0).toBeLessThan(1_000);

    const ac = new AbortController();
    const aborted = waitForEvent(client, "SHUTDOWN", 5_000, { signal: ac.signal });
    ac.abort();
    expect(await aborted.catch((x: unknown) => x)).toBeInstanceOf(QmpAbortedError);

    const closed = waitForEvent(client, "SHUTDOWN", 5_000);
    peer.end();
    expect(await closed.catch((x: unknown) => x)).toBeInstanceOf(QmpClosedError);
  });
});

describe("closing", () => {
  for (const how of ["end", "terminate"] as const) {
    test(`peer ${how}s mid-command: every pending command rejects at once with QmpClosedError`, async () => {
      const f = fake({ onCommand: silent });
      const { client, peer } = await connect(f);
      const closes: (Error | null)[] = [];
      client.onClose((e) => closes.push(e));
      const events = client.events();
      const pending = Array.from({ length: 20 }, (_, i) => client.execute(`cmd-${i}`, {}, { timeoutMs: 30_000 }));
      await peer.waitForCommands(21);
      const t0 = Date.now();
      peer[how]();
      const outcomes = await Promise.all(pending.map((p) => settleWithin(p, 2_000)));
      expect(Date.now() - t0).toBeLessThan(1_000);
      for (const o of outcomes) {
        expect(o.ok).toBe(false);
        if (!o.ok) expect(o.error).toBeInstanceOf(QmpClosedError);
      }
      expect(client.closed).toBe(true);
      expect(closes.length).toBe(1);
      expect(closes[0]).toBeInstanceOf(QmpClosedError);
      expect((await events.next()).done).toBe(true);
      // later calls fail fast too
      const late = await settleWithin(client.execute("query-status"), 500);
      expect(!late.ok && late.error instanceof QmpClosedError).toBe(true);
      // onClose after the fact is called immediately
      let again: Error | null | undefined;
      client.onClose((e) => (again = e));
      expect(again).toBeInstanceOf(QmpClosedError);
    });
  }

  test("close() rejects pending commands, reports null, and is idempotent", async () => {
    const f = fake({ onCommand: silent });
    const { client, peer } = await connect(f);
    const closes: (Error | null)[] = [];
    client.onClose((e) => closes.push(e));
    const p = client.execute("query-status");
    await peer.waitForCommands(2);
    client.close();
    client.close();
    const e = await p.catch((x: unknown) => x);
    expect(e).toBeInstanceOf(QmpClosedError);
    expect((e as QmpClosedError).reason).toBe("closed");
    expect(closes).toEqual([null]);
    expect(client.closeReason).toBeNull();
  });

  test("an oversize line closes the client with QmpProtocolError", async () => {
    const f = fake({ onCommand: silent });
    const { client, peer } = await connect(f, { maxLineBytes: 4096 });
    const closes: (Error | null)[] = [];
    client.onClose((e) => closes.push(e));
    const p = client.execute("query-status");
    await peer.waitForCommands(2);
    // No newline at all: the buffer must not grow past the limit.
    peer.raw('{"return": "' + "x".repeat(10_000));
    const e = await settleWithin(p, 2_000);
    expect(!e.ok && e.error instanceof QmpProtocolError).toBe(true);
    expect(client.closed).toBe(true);
    expect(closes[0]).toBeInstanceOf(QmpProtocolError);
    const after = await client.execute("x").catch((x: unknown) => x);
    expect(after).toBeInstanceOf(QmpClosedError);
    expect((after as QmpClosedError).reason).toBe("protocol");
  });
});

describe("deadlines and cancellation", () => {
  test("a command times out; its late reply is dropped and counted; the client keeps working", async () => {
    const f = fake({ onCommand: silent });
    const { client, peer } = await connect(f, { commandTimeoutMs: 150 });
    const t0 = Date.now();
    const slow = client.execute("query-status").catch((x: unknown) => x);
    const slower = client.execute("query-status", {}, { timeoutMs: 400 }).catch((x: unknown) => x);
    const e = await slow;
    expect(e).toBeInstanceOf(QmpTimeoutError);
    expect((e as QmpTimeoutError).timeoutMs).toBe(150);
    const e2 = await slower;
    expect(e2).toBeInstanceOf(QmpTimeoutError);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(390);
    expect(Date.now() - t0).toBeLessThan(2_000);

    const cmds = await peer.waitForCommands(3);
    peer.reply(cmds[1]!.id, { status: "late" });
    peer.reply(cmds[2]!.id, { status: "late" });
    const ok = client.execute("query-name");
    const [, , , c] = await peer.waitForCommands(4);
    peer.reply(c!.id, { name: "vm" });
    expect(await ok).toEqual({ name: "vm" });
    expect(client.stats.lateReplies).toBe(2);
    expect(client.stats.unmatchedReplies).toBe(0);
  });

  test("timeoutMs 0 means no deadline", async () => {
    const f = fake({ onCommand: silent });
    const { client, peer } = await connect(f, { commandTimeoutMs: 50 });
    const p = client.execute("x", undefined, { timeoutMs: 0 });
    await Bun.sleep(200);
    const [, c] = await peer.waitForCommands(2);
    peer.reply(c!.id, 42);
    expect(await p).toBe(42);
  });

  test("AbortSignal cancels a pending command; an aborted signal never sends", async () => {
    const f = fake({ onCommand: silent });
    const { client, peer } = await connect(f);
    const ac = new AbortController();
    const p = client.execute("query-status", {}, { signal: ac.signal });
    await peer.waitForCommands(2);
    ac.abort(new Error("user gave up"));
    const e = await settleWithin(p, 500);
    expect(!e.ok && e.error instanceof QmpAbortedError).toBe(true);
    peer.reply(peer.commands[1]!.id, {});

    const pre = await client.execute("cont", {}, { signal: AbortSignal.abort() }).catch((x: unknown) => x);
    expect(pre).toBeInstanceOf(QmpAbortedError);
    const ping = client.execute("ping");
    const [, , c] = await peer.waitForCommands(3); // the aborted one was never sent
    expect(c!.execute).toBe("ping");
    peer.reply(c!.id, {});
    await ping;
    expect(client.stats.lateReplies).toBe(1);
  });
});

// ---------------------------------------------------------------------------------------

/** Deterministic PRNG (mulberry32) so a failure reproduces. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function hostileLines(rand: () => number, count: number): Uint8Array[] {
  const enc = new TextEncoder();
  const pick = <T>(xs: T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const templates = [
    JSON.stringify({ return: { status: "running" }, id: "zz-1" }),
    JSON.stringify({ error: { class: "GenericError", desc: "nope" }, id: "zz-2" }),
    JSON.stringify({ timestamp: { seconds: 1, microseconds: 2 }, event: "SHUTDOWN", data: { guest: true, reason: "guest-shutdown" } }),
    JSON.stringify({ timestamp: { seconds: 1, microseconds: 2 }, event: "RESET" }),
    JSON.stringify(GREETING),
    JSON.stringify({ return: [1, 2, { a: null }] }),
    JSON.stringify({ error: {}, id: 7 }),
  ];
  const fixed: (string | Uint8Array)[] = [
    "",
    "   ",
    "\r",
    "null",
    "true",
    "42",
    "1e999",
    "-1e999",
    "123456789012345678901234567890123456789",
    '"just a string"',
    "[]",
    "[1,2,3]",
    "{}",
    '{"return"',
    '{"event": 5}',
    '{"event": "X", "data": [1]}',
    '{"event": "X", "timestamp": "now"}',
    '{"event": "X", "timestamp": {"seconds": 1e999, "microseconds": 0}}',
    '{"event": "", "timestamp": {"seconds": 1, "microseconds": 0}}',
    '{"id": "1"}',
    '{"id": {"toString": 1}, "return": {}}',
    '{"id": ["1"], "return": {}}',
    '{"id": null, "error": null}',
    '{"__proto__": {"polluted": true}, "return": {}, "id": "zz-9"}',
    '{"constructor": {"prototype": {"x": 1}}, "event": "Y", "timestamp": {"seconds": 0, "microseconds": 0}}',
    '{"QMP": 1}',
    '{"return": {}, "id": "\\ud800"}',
    "\u0000\u0000\u0000",
    "\u2028\u2029",
    "[".repeat(100_000) + "]".repeat(100_000),
    '{"a":'.repeat(20_000) + "1" + "}".repeat(20_000),
    "x".repeat(200_000),
    new Uint8Array([0xff, 0xfe, 0xfd]),
    new Uint8Array([0x7b, 0x22, 0xc3]), // {"  + truncated 2-byte sequence
    new Uint8Array([0xed, 0xa0, 0x80]), // encoded surrogate: invalid UTF-8
  ];
  const out: Uint8Array[] = [];
  for (let i = 0; i < count; i++) {
    const r = rand();
    let bytes: Uint8Array;
    if (r < 0.25) {
      const f = pick(fixed);
      bytes = typeof f === "string" ? enc.encode(f) : f;
    } else if (r < 0.4) {
      // random bytes, newline included (it simply splits the line)
      bytes = new Uint8Array(1 + Math.floor(rand() * 200));
      for (let j = 0; j < bytes.length; j++) bytes[j] = Math.floor(rand() * 256);
    } else {
      // a mutated template: flips, deletions, insertions, truncation
      const b = [...enc.encode(pick(templates))];
      const n = 1 + Math.floor(rand() * 6);
      for (let k = 0; k < n; k++) {
        const pos = Math.floor(rand() * b.length);
        const op = rand();
        if (op < 0.4) b[pos] = Math.floor(rand() * 256);
        else if (op < 0.6) b.splice(pos, 1);
        else if (op < 0.8) b.splice(pos, 0, pick([0x22, 0x7b, 0x7d, 0x5b, 0x5d, 0x3a, 0x2c, 0x5c, 0x30, 0x2d]));
        else b.length = pos;
      }
      bytes = new Uint8Array(b);
    }
    out.push(bytes);
  }
  return out;
}

describe("hostile input", () => {
  test("2,500 malformed or mutated lines between real replies: no crash, commands still answered", async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown) => unhandled.push(e);
    process.on("unhandledRejection", onUnhandled);
    try {
      const rand = prng(0x5eed);
      const garbage = hostileLines(rand, 2_500);
      let g = 0;
      const nl = new Uint8Array([0x0a]);
      const f = fake({
        onCommand: (c, conn) => {
          // a burst of garbage, then the real reply, then more garbage, in random chunking
          const burst = 5 + Math.floor(rand() * 20);
          for (let i = 0; i < burst && g < garbage.length; i++) {
            conn.raw(garbage[g++]!);
            conn.raw(nl);
          }
          if (rand() < 0.2) conn.event("STOP");
          conn.reply(c.id, { echo: c.arguments?.["n"] });
          for (let i = 0; i < 5 && g < garbage.length; i++) {
            conn.raw(garbage[g++]!);
            conn.raw(nl);
          }
        },
      });
      const { client, peer } = await connect(f, { maxLineBytes: 1024 * 1024 });
      const events = client.events();
      let n = 0;
      const errors: unknown[] = [];
      let ok = 0;
      // a few workers keep several commands in flight while garbage streams in
      await Promise.all(
        Array.from({ length: 4 }, async () => {
          while (g < garbage.length && !client.closed) {
            const mine = n++;
            try {
              const r = await client.execute<{ echo: number }>("echo", { n: mine }, { timeoutMs: 10_000 });
              expect(r.echo).toBe(mine);
              ok++;
            } catch (e) {
              errors.push(e);
            }
          }
        }),
      );
      expect(g).toBe(garbage.length);
      // Garbage that happens to look like a malformed reply to a pending id fails that
      // command with QmpProtocolError; anything else would be a bug.
      for (const e of errors) expect(e).toBeInstanceOf(QmpProtocolError);
      expect(ok).toBeGreaterThan(50);
      expect(client.closed).toBe(false);
      const s = client.stats;
      expect(s.malformedLines).toBeGreaterThan(1_500);
      expect(s.unmatchedReplies + s.unexpectedMessages).toBeGreaterThan(0);
      expect(await client.execute("echo", { n: -1 })).toEqual({ echo: -1 });
      // Only well-formed events came through.
      client.close();
      for await (const ev of events) {
        expect(typeof ev.event).toBe("string");
        expect(typeof ev.data).toBe("object");
        expect(Number.isFinite(ev.timestamp.seconds)).toBe(true);
      }
      expect(peer.badInput).toEqual([]);
      expect(({} as Record<string, unknown>)["polluted"]).toBeUndefined();
      await Bun.sleep(10);
      expect(unhandled).toEqual([]);
    } finally {
      process.off("unhandledRejection", onUnhandled);
    }
  }, 60_000);

  test("a raw byte flood (small line limit) ends in a clean typed close, never a crash", async () => {
    const rand = prng(42);
    const f = fake({ onCommand: silent });
    const { client, peer } = await connect(f, { maxLineBytes: 2048 });
    const closed = new Promise<Error | null>((r) => client.onClose(r));
    const pending = Array.from({ length: 10 }, () => client.execute("query-status", {}, { timeoutMs: 20_000 }).catch((x: unknown) => x));
    await peer.waitForCommands(11);
    // Mostly short lines, eventually one without a newline longer than the limit.
    for (let i = 0; i < 3_000; i++) {
      const len = i === 2_999 ? 5_000 : 1 + Math.floor(rand() * 100);
      const b = new Uint8Array(len);
      for (let j = 0; j < len; j++) b[j] = i === 2_999 ? 0x41 : Math.floor(rand() * 256);
      peer.raw(b);
    }
    const reason = await Promise.race([closed, Bun.sleep(10_000).then(() => "hang")]);
    expect(reason).toBeInstanceOf(QmpProtocolError);
    for (const e of await Promise.all(pending)) expect(e).toBeInstanceOf(QmpProtocolError);
    expect(client.closed).toBe(true);
  }, 30_000);
});
