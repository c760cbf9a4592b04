/**
 * Faults against the rig's dedicated `fault` libvirtd: killed under load, restarted,
 * frozen with SIGSTOP. Every pending call must fail promptly, nothing may hang, and the
 * client must come back by itself (with its event subscriptions) when the daemon does.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { ConnectError, ConnectionClosedError, LibvirtClient, remoteProcedures as P } from "../../src/libvirt/index.ts";
import { rig, rigCommand, uniqueName, unixUri, waitFor } from "../helpers/rig.ts";

const clients: LibvirtClient[] = [];
afterAll(async () => {
  for (const c of clients) await c.close();
  // Leave the fault instance running for whoever comes next.
  const pid = rig().instances.fault.libvirtdPid;
  try {
    process.kill(pid, "SIGCONT");
  } catch {
    rigCommand("start-instance", "fault");
  }
});

function xml(name: string): string {
  return `<domain type='test'><name>${name}</name><memory>65536</memory><vcpu>1</vcpu><os><type>hvm</type></os></domain>`;
}

describe("libvirtd faults", () => {
  test("daemon killed under load: every pending call rejects at once; client reconnects and re-subscribes", async () => {
    const client = await LibvirtClient.connect(unixUri("test", "fault"), { reconnect: { initialDelayMs: 50, maxDelayMs: 500 } });
    clients.push(client);
    const events = await client.lifecycleEvents();

    // A steady load of calls in flight.
    let stop = false;
    const outcomes: (string | Error)[] = [];
    const workers = Array.from({ length: 16 }, async () => {
      while (!stop) {
        try {
          await client.call(P.connectListAllDomains, { need_results: 1, flags: 0 }, { timeoutMs: 30_000 });
          outcomes.push("ok");
        } catch (e) {
          outcomes.push(e as Error);
          return;
        }
      }
    });
    await waitFor("load to build up", () => outcomes.length > 200, 10_000, 10);

    const killedAt = Date.now();
    process.kill(rig().instances.fault.libvirtdPid, "SIGKILL");
    await Promise.all(workers);
    stop = true;
    const failedWithin = Date.now() - killedAt;
    expect(failedWithin).toBeLessThan(2_000);
    const errors = outcomes.filter((o): o is Error => o instanceof Error);
    expect(errors.length).toBe(16);
    for (const e of errors) expect(e).toBeInstanceOf(ConnectionClosedError);

    // While it is down, calls fail fast with a clear error instead of hanging.
    const downStart = Date.now();
    const down = await client.call(P.connectGetType, undefined).catch((e) => e);
    expect(down).toBeInstanceOf(ConnectError);
    expect((down as Error).message).toContain("unreachable");
    expect(Date.now() - downStart).toBeLessThan(1_000);

    rigCommand("start-instance", "fault");
    await waitFor("client to reconnect", () => client.state === "open", 20_000);
    expect(client.sessions).toBe(2);
    expect((await client.call(P.connectGetType, undefined)).type).toBe("TEST");

    // The lifecycle subscription made before the crash still delivers.
    const name = uniqueName("after-restart");
    const { dom } = await client.call(P.domainDefineXml, { xml: xml(name) });
    let ev = await events.next();
    while (!ev.done && ev.value.domain.name !== name) ev = await events.next();
    expect(ev.value!.domain.name).toBe(name);
    await client.call(P.domainUndefine, { dom });
    await events.return!();
  }, 60_000);

  test("a frozen daemon (SIGSTOP) is detected by keepalive; the client recovers after SIGCONT", async () => {
    const client = await LibvirtClient.connect(unixUri("test", "fault"), {
      keepaliveIntervalMs: 500,
      keepaliveCount: 3,
      reconnect: { initialDelayMs: 50, maxDelayMs: 500 },
    });
    clients.push(client);
    expect((await client.call(P.connectGetType, undefined)).type).toBe("TEST");
    const pid = rig().instances.fault.libvirtdPid;
    process.kill(pid, "SIGSTOP");
    try {
      const started = Date.now();
      const err = (await client.call(P.connectGetType, undefined, { timeoutMs: 0 }).catch((e) => e)) as ConnectionClosedError;
      const elapsed = Date.now() - started;
      expect(err).toBeInstanceOf(ConnectionClosedError);
      expect(err.reason).toBe("keepalive");
      expect(elapsed).toBeLessThan(3_000);
    } finally {
      process.kill(pid, "SIGCONT");
    }
    await waitFor("client to reconnect after SIGCONT", () => client.state === "open" && client.sessions >= 2, 20_000);
    expect((await client.call(P.connectGetType, undefined)).type).toBe("TEST");
  }, 60_000);
});
