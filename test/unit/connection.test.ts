/**
 * RpcConnection/LibvirtClient against a scripted fake daemon on a unix socket: the cases a
 * real libvirtd won't produce on demand (out-of-order replies, silence, garbage, pings).
 * The real-daemon behaviour is covered in test/libvirt/.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Socket, UnixSocketListener } from "bun";
import { CallAbortedError, CallTimeoutError, ConnectError, ConnectionClosedError, LibvirtClient, LibvirtError, remoteProcedures as P } from "../../src/libvirt/index.ts";
import { isPolling } from "../../src/libvirt/busy-poll.ts";
import { encodePacket, MessageStatus, MessageType, PacketParser, type Packet } from "../../src/libvirt/packet.ts";
import { encodeRemoteAuthListRet, encodeRemoteConnectGetHostnameRet, encodeRemoteConnectSupportsFeatureRet, encodeRemoteDomainEventCallbackLifecycleMsg, REMOTE_PROGRAM } from "../../src/codecs/generated/remote.ts";
import { encodeVirNetMessageError } from "../../src/codecs/generated/virnet.ts";
import { KEEPALIVE_PROGRAM } from "../../src/codecs/generated/keepalive.ts";
import { XdrWriter } from "../../src/xdr/index.ts";
import { waitFor } from "../helpers/rig.ts";

type Reply = (p: Packet, sock: Socket<undefined>) => void;

interface FakeDaemon {
  uri: string;
  received: Packet["header"][];
  pongs: number;
  sockets: Set<Socket<undefined>>;
  stop(): void;
}

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

function reply(sock: Socket<undefined>, p: Packet, body?: Uint8Array, status: number = MessageStatus.OK): void {
  sock.write(encodePacket({ ...p.header, type: MessageType.REPLY, status }, null, body));
}

function encoded<T>(enc: (w: XdrWriter, v: T) => void, v: T): Uint8Array {
  const w = new XdrWriter();
  enc(w, v);
  return w.bytes().slice();
}

/** A minimal daemon: handshake procedures answered, everything else goes to `handler`. */
function fakeDaemon(handler: Reply): FakeDaemon {
  const dir = mkdtempSync(join(tmpdir(), "rcloud-fake-"));
  const path = join(dir, "sock");
  const state: FakeDaemon = { uri: `test+unix:///default?socket=${path}`, received: [], pongs: 0, sockets: new Set(), stop: () => {} };
  const listener: UnixSocketListener<{ parser: PacketParser }> = Bun.listen<{ parser: PacketParser }>({
    unix: path,
    socket: {
      open(sock) {
        state.sockets.add(sock as unknown as Socket<undefined>);
        sock.data = {
          parser: new PacketParser((p) => {
            state.received.push(p.header);
            const s = sock as unknown as Socket<undefined>;
            if (p.header.prog === KEEPALIVE_PROGRAM) {
              if (p.header.proc === 2) state.pongs++;
              return;
            }
            switch (p.header.proc) {
              case 66:
                return reply(s, p, encoded(encodeRemoteAuthListRet, { types: [0] }));
              case 60:
                return reply(s, p, encoded(encodeRemoteConnectSupportsFeatureRet, { supported: 1 }));
              case 1:
              case 2:
                return reply(s, p);
              default:
                handler(p, s);
            }
          }),
        };
      },
      data(sock, data) {
        sock.data.parser.push(data);
      },
      close(sock) {
        state.sockets.delete(sock as unknown as Socket<undefined>);
      },
    },
  });
  state.stop = () => {
    for (const s of state.sockets) s.end();
    listener.stop(true);
    rmSync(dir, { recursive: true, force: true });
  };
  cleanups.push(() => state.stop());
  return state;
}

const hostnameBody = (name: string) => encoded(encodeRemoteConnectGetHostnameRet, { hostname: name });

describe("RPC connection with a scripted daemon", () => {
  test("replies that come back out of order reach the right callers", async () => {
    const held: [Packet["header"], Socket<undefined>][] = [];
    const d = fakeDaemon((p, s) => {
      held.push([{ ...p.header }, s]);
      if (held.length === 5) {
        // Answer in reverse order, each with its own serial in the hostname.
        for (const [h, sock] of held.reverse()) sock.write(encodePacket({ ...h, type: MessageType.REPLY, status: 0 }, null, hostnameBody(`host-${h.serial}`)));
      }
    });
    const c = await LibvirtClient.connect(d.uri, { keepaliveIntervalMs: 0 });
    const results = await Promise.all(Array.from({ length: 5 }, () => c.call(P.connectGetHostname, undefined)));
    const serials = d.received.filter((h) => h.proc === 59).map((h) => h.serial);
    expect(results.map((r) => r.hostname)).toEqual(serials.map((s) => `host-${s}`));
    await c.close();
  });

  test("at most 8 calls are on the wire; the rest wait in order, and a PONG does not wait behind them", async () => {
    const held: [Packet["header"], Socket<undefined>][] = [];
    const d = fakeDaemon((p, s) => void held.push([{ ...p.header }, s]));
    const c = await LibvirtClient.connect(d.uri, { keepaliveIntervalMs: 0 });
    const calls = Array.from({ length: 12 }, () => c.call(P.connectGetHostname, undefined));
    const answerHeld = () => {
      for (const [h, sock] of held.splice(0)) sock.write(encodePacket({ ...h, type: MessageType.REPLY, status: 0 }, null, hostnameBody(`host-${h.serial}`)));
    };
    const onWire = () => d.received.filter((h) => h.proc === 59).length;
    await waitFor("8 calls on the wire", () => onWire() >= 8, 2_000, 10);
    await Bun.sleep(50);
    expect(onWire()).toBe(8);
    // The daemon pings while four calls wait in our backlog: the PONG goes out at once.
    for (const s of d.sockets) s.write(encodePacket({ prog: KEEPALIVE_PROGRAM, vers: 1, proc: 1, type: MessageType.MESSAGE, serial: 0, status: 0 }));
    await waitFor("the PONG", () => d.pongs > 0, 2_000, 10);
    expect(d.pongs).toBe(1);
    expect(onWire()).toBe(8);
    answerHeld();
    await waitFor("12 calls on the wire", () => onWire() >= 12, 2_000, 10);
    expect(onWire()).toBe(12);
    answerHeld();
    const results = await Promise.all(calls);
    const serials = d.received.filter((h) => h.proc === 59).map((h) => h.serial);
    // Sent in the order they were made; each caller got its own reply.
    expect(serials).toEqual([...serials].sort((a, b) => a - b));
    expect(results.map((r) => r.hostname)).toEqual(serials.map((s) => `host-${s}`));
    await c.close();
  });

  test("a call times out, a late reply is dropped, and the connection stays usable", async () => {
    let first = true;
    const d = fakeDaemon((p, s) => {
      if (first) {
        first = false;
        setTimeout(() => reply(s, p, hostnameBody("late")), 300);
      } else reply(s, p, hostnameBody("on-time"));
    });
    const c = await LibvirtClient.connect(d.uri, { keepaliveIntervalMs: 0 });
    const err = await c.call(P.connectGetHostname, undefined, { timeoutMs: 100 }).catch((e) => e);
    expect(err).toBeInstanceOf(CallTimeoutError);
    await Bun.sleep(350);
    expect((await c.call(P.connectGetHostname, undefined)).hostname).toBe("on-time");
    await c.close();
  });

  test("busy polling lasts one window after a call or reply, not for as long as slow calls run", async () => {
    const d = fakeDaemon((p, s) => setTimeout(() => reply(s, p, hostnameBody("slow")), 300));
    const c = await LibvirtClient.connect(d.uri, { keepaliveIntervalMs: 0, busyPollUs: 10_000 });
    await Bun.sleep(30);
    expect(isPolling()).toBe(false);
    // Two calls in flight: the next reply is near, so the loop polls (from the second send on,
    // checked at once: a slow machine's sleep could outlast the 10 ms window).
    const pending = [c.call(P.connectGetHostname, undefined), c.call(P.connectGetHostname, undefined)];
    expect(isPolling()).toBe(true);
    await Bun.sleep(30);
    // Still waiting for the replies, but the window has passed: the process sleeps in epoll.
    expect(isPolling()).toBe(false);
    const cpu0 = process.cpuUsage();
    await Bun.sleep(200);
    const cpu = process.cpuUsage(cpu0);
    expect((cpu.user + cpu.system) / 1000).toBeLessThan(60); // spinning would burn ~200 ms
    expect((await Promise.all(pending)).map((r) => r.hostname)).toEqual(["slow", "slow"]);
    await Bun.sleep(30);
    expect(isPolling()).toBe(false);
    await c.close();
  });

  test("busy polling needs two calls in flight; busyPollUs 0 never polls", async () => {
    const seen: boolean[] = [];
    let held: (() => void)[] = [];
    const d = fakeDaemon((p, s) => {
      seen.push(isPolling()); // the daemon is in this process: same event loop
      held.push(() => reply(s, p, hostnameBody("h")));
    });
    /** Answers once `n` calls have reached the daemon. */
    const answer = async (n: number) => {
      await waitFor(`${n} calls at the daemon`, () => held.length >= n, 2_000, 1);
      const now = held;
      held = [];
      for (const a of now) a();
    };
    // A window (50 ms: wide enough for a loaded machine), but one call at a time: its reply
    // is a round trip away, no polling.
    const c = await LibvirtClient.connect(d.uri, { keepaliveIntervalMs: 0, busyPollUs: 50_000 });
    await Bun.sleep(30);
    seen.length = 0;
    for (let i = 0; i < 3; i++) await Promise.all([c.call(P.connectGetHostname, undefined), answer(1)]);
    expect(seen).toEqual([false, false, false]);
    // Two at once: sending the second starts the window, so both arrive while the loop polls.
    seen.length = 0;
    const first = c.call(P.connectGetHostname, undefined);
    expect(isPolling()).toBe(false);
    const second = c.call(P.connectGetHostname, undefined);
    expect(isPolling()).toBe(true);
    await Promise.all([first, second, answer(2)]);
    expect(seen).toEqual([true, true]);
    await c.close();
    await Bun.sleep(80); // that window is over
    // No window: two at once never poll.
    const c2 = await LibvirtClient.connect(d.uri, { keepaliveIntervalMs: 0, busyPollUs: 0 });
    await Bun.sleep(30);
    seen.length = 0;
    await Promise.all([c2.call(P.connectGetHostname, undefined), c2.call(P.connectGetHostname, undefined), answer(2)]);
    expect(seen).toEqual([false, false]);
    await c2.close();
  });

  test("an AbortSignal cancels a call in flight", async () => {
    const d = fakeDaemon(() => {});
    const c = await LibvirtClient.connect(d.uri, { keepaliveIntervalMs: 0 });
    const ac = new AbortController();
    const pending = c.call(P.connectGetHostname, undefined, { signal: ac.signal, timeoutMs: 0 });
    setTimeout(() => ac.abort(new Error("user gave up")), 50);
    expect(await pending.catch((e) => e)).toBeInstanceOf(CallAbortedError);
    await c.close();
  });

  test("an error reply becomes a LibvirtError with every field", async () => {
    const d = fakeDaemon((p, s) =>
      reply(
        s,
        p,
        encoded(encodeVirNetMessageError, {
          code: 42,
          domain: 12,
          message: "Domain not found",
          level: 2,
          dom: null,
          str1: "Domain not found",
          str2: null,
          str3: null,
          int1: -1,
          int2: -1,
          net: null,
        }),
        MessageStatus.ERROR,
      ),
    );
    const c = await LibvirtClient.connect(d.uri, { keepaliveIntervalMs: 0 });
    const e = (await c.call(P.domainLookupByName, { name: "x" }).catch((e) => e)) as LibvirtError;
    expect(e).toBeInstanceOf(LibvirtError);
    expect([e.code, e.domain, e.level, e.message, e.str1, e.int1]).toEqual([42, 12, 2, "Domain not found", "Domain not found", -1]);
    await c.close();
  });

  test("a malformed reply payload fails that call only", async () => {
    let n = 0;
    const d = fakeDaemon((p, s) => reply(s, p, n++ === 0 ? Uint8Array.of(0xff, 0xff, 0xff, 0xff) : hostnameBody("fine")));
    const c = await LibvirtClient.connect(d.uri, { keepaliveIntervalMs: 0 });
    const err = await c.call(P.connectGetHostname, undefined).catch((e) => e);
    expect((err as Error).name).toBe("XdrDecodeError");
    expect((await c.call(P.connectGetHostname, undefined)).hostname).toBe("fine");
    await c.close();
  });

  test("garbage framing drops the connection and fails every pending call at once", async () => {
    let calls = 0;
    const d = fakeDaemon((_p, s) => {
      if (++calls === 3) s.write(Uint8Array.of(0, 0, 0, 5, 1, 2, 3, 4)); // length 5 < 28
    });
    const c = await LibvirtClient.connect(d.uri, { keepaliveIntervalMs: 0, reconnect: false });
    const started = Date.now();
    const results = await Promise.all(Array.from({ length: 3 }, () => c.call(P.connectGetHostname, undefined, { timeoutMs: 10_000 }).catch((e) => e)));
    expect(Date.now() - started).toBeLessThan(2_000);
    for (const r of results) {
      expect(r).toBeInstanceOf(ConnectionClosedError);
      expect((r as ConnectionClosedError).reason).toBe("protocol");
    }
  });

  test("events and stream packets interleaved with replies are routed by type; an event before the REGISTER reply is kept", async () => {
    const lifecycle = (name: string, callbackID = 7) =>
      encodePacket(
        { prog: REMOTE_PROGRAM, vers: 1, proc: 318, type: MessageType.MESSAGE, serial: 1, status: 0 },
        {
          encode: encodeRemoteDomainEventCallbackLifecycleMsg,
          value: { callbackID, msg: { dom: { name, uuid: new Uint8Array(16), id: -1 }, event: 0, detail: 0 } },
        },
      );
    const d = fakeDaemon((p, s) => {
      if (p.header.proc === 316) {
        // register-any: answer callbackID 7, but send an event for it *before* the reply,
        // and one for a callback nobody registered
        s.write(lifecycle("early"));
        s.write(lifecycle("not-ours", 8));
        const w = new XdrWriter();
        w.int(7);
        reply(s, p, w.bytes().slice());
        setTimeout(() => s.write(lifecycle("late")), 20);
        return;
      }
      // stray stream data for an unknown serial must be ignored
      s.write(encodePacket({ ...p.header, type: MessageType.STREAM, status: MessageStatus.CONTINUE, serial: 999 }, null, Uint8Array.of(1, 2, 3)));
      reply(s, p, hostnameBody("ok"));
    });
    const c = await LibvirtClient.connect(d.uri, { keepaliveIntervalMs: 0 });
    const events = await c.lifecycleEvents();
    expect((await c.call(P.connectGetHostname, undefined)).hostname).toBe("ok");
    expect((await events.next()).value!.domain.name).toBe("early");
    expect((await events.next()).value!.domain.name).toBe("late");
    await events.return!();
    await c.close();
  });

  test("answers the daemon's PING with a PONG", async () => {
    const d = fakeDaemon(() => {});
    const c = await LibvirtClient.connect(d.uri, { keepaliveIntervalMs: 0 });
    for (const s of d.sockets) s.write(encodePacket({ prog: KEEPALIVE_PROGRAM, vers: 1, proc: 1, type: MessageType.MESSAGE, serial: 0, status: 0 }));
    await Bun.sleep(100);
    expect(d.pongs).toBe(1);
    await c.close();
  });

  test("a silent peer is declared dead by keepalive, and pending calls fail", async () => {
    const d = fakeDaemon(() => {}); // never replies, never pings
    const c = await LibvirtClient.connect(d.uri, { keepaliveIntervalMs: 200, keepaliveCount: 3, reconnect: false });
    const started = Date.now();
    const err = (await c.call(P.connectGetHostname, undefined, { timeoutMs: 0 }).catch((e) => e)) as ConnectionClosedError;
    const elapsed = Date.now() - started;
    expect(err).toBeInstanceOf(ConnectionClosedError);
    expect(err.reason).toBe("keepalive");
    expect(elapsed).toBeGreaterThanOrEqual(500);
    expect(elapsed).toBeLessThan(3_000); // 600 ms expected; slack for a loaded 2-core machine
    expect(d.received.filter((h) => h.prog === KEEPALIVE_PROGRAM && h.proc === 1).length).toBeGreaterThanOrEqual(1);
  });

  test("a refused connection is a ConnectError naming the socket", async () => {
    const err = (await LibvirtClient.connect("test+unix:///default?socket=/nonexistent/rcloud.sock", { connectTimeoutMs: 2000 }).catch((e) => e)) as Error;
    expect(err).toBeInstanceOf(ConnectError);
    expect(err.message).toContain("/nonexistent/rcloud.sock");
  });

  test("arguments that do not fit the protocol are refused before sending", async () => {
    const d = fakeDaemon((p, s) => reply(s, p, hostnameBody("x")));
    const c = await LibvirtClient.connect(d.uri, { keepaliveIntervalMs: 0 });
    const before = d.received.length;
    const err = await c.call(P.domainLookupByName, { name: "x".repeat(4194305) }).catch((e) => e);
    expect((err as Error).name).toBe("XdrEncodeError");
    expect(d.received.length).toBe(before);
    await c.close();
  });
});

describe("deadlines by kind of call (deadline-policy.ts)", () => {
  const dom = { name: "slow", uuid: new Uint8Array(16), id: -1 };
  const ping = encodePacket({ prog: KEEPALIVE_PROGRAM, vers: 1, proc: 1, type: MessageType.MESSAGE, serial: 0, status: 0 });

  /** A daemon that answers every call after `delayMs` and pings the client every 100 ms (alive). */
  function slowButAlive(delayMs: number): FakeDaemon {
    const d = fakeDaemon((p, s) => setTimeout(() => reply(s, p, p.header.proc === 59 ? hostnameBody("late") : undefined), delayMs));
    const pinger = setInterval(() => {
      for (const s of d.sockets) s.write(ping);
    }, 100);
    cleanups.push(() => clearInterval(pinger));
    return d;
  }

  test("a worker-holding call outlives the quick deadline while keepalive answers; a quick call does not", async () => {
    const d = slowButAlive(700);
    const c = await LibvirtClient.connect(d.uri, { callTimeoutMs: 200, keepaliveIntervalMs: 100, keepaliveCount: 3, reconnect: false });
    const t0 = performance.now();
    const [start, lookup] = await Promise.all([
      c.call(P.domainCreate, { dom }).then(() => "ok", (e) => e),
      c.call(P.connectGetHostname, undefined).then(() => "ok", (e) => e),
    ]);
    expect(start).toBe("ok");
    expect(performance.now() - t0).toBeGreaterThanOrEqual(650); // longer than the 200 ms quick deadline and 300 ms keepalive window
    expect(lookup).toBeInstanceOf(CallTimeoutError);
    expect((lookup as CallTimeoutError).timeoutMs).toBe(200);
    await c.close();
  });

  test("a worker-holding call on a silent daemon is still ended by keepalive", async () => {
    const d = fakeDaemon(() => {}); // never replies, never pings
    const c = await LibvirtClient.connect(d.uri, { callTimeoutMs: 60_000, keepaliveIntervalMs: 200, keepaliveCount: 3, reconnect: false });
    const t0 = Date.now();
    const err = (await c.call(P.domainCreate, { dom }).catch((e) => e)) as ConnectionClosedError;
    expect(err).toBeInstanceOf(ConnectionClosedError);
    expect(err.reason).toBe("keepalive");
    expect(Date.now() - t0).toBeLessThan(3_000); // 600 ms expected; slack for a loaded machine
  });

  test("a configured slow-call deadline ends the call; `finished` settles when the late reply comes", async () => {
    const d = slowButAlive(600);
    const c = await LibvirtClient.connect(d.uri, { callTimeoutMs: 60_000, slowCallTimeoutMs: 150, keepaliveIntervalMs: 100, reconnect: false });
    const t0 = performance.now();
    const err = (await c.call(P.domainCreate, { dom }).catch((e) => e)) as CallTimeoutError;
    expect(err).toBeInstanceOf(CallTimeoutError);
    expect(err.timeoutMs).toBe(150);
    let done = false;
    void err.finished.then(() => (done = true));
    await Bun.sleep(50);
    expect(done).toBe(false); // the daemon is still working on it
    await err.finished;
    expect(performance.now() - t0).toBeGreaterThanOrEqual(550);
    await c.close();
  });

  test("`finished` of an abandoned call settles when the connection closes", async () => {
    const d = fakeDaemon(() => {});
    const c = await LibvirtClient.connect(d.uri, { keepaliveIntervalMs: 0, reconnect: false });
    const err = (await c.call(P.domainCreate, { dom }, { timeoutMs: 50 }).catch((e) => e)) as CallTimeoutError;
    expect(err).toBeInstanceOf(CallTimeoutError);
    await c.close();
    await err.finished; // would hang (test timeout) if nothing settled it
  });
});
