/**
 * Calls that legitimately take long (docs/libvirt-client.md, "Deadlines"), against the rig's
 * `fault` libvirtd with real TCG guests. QEMU is started through a wrapper that waits while a
 * gate file exists, so DOMAIN_CREATE holds a libvirtd worker for as long as the test keeps the
 * gate, while the daemon's main loop keeps answering keepalive (as it does while it starts 50
 * guests on a loaded host). Quick calls keep a short deadline here so the test runs fast.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ConnectionClosedError, ErrorCode, LibvirtClient, LibvirtError, remoteProcedures as P } from "../../src/libvirt/index.ts";
import { tinyGuestXml } from "../helpers/guest.ts";
import { rig, rigCommand, uniqueName, unixUri, waitFor } from "../helpers/rig.ts";
import { faultDaemonServer, waitHealthy, type TestServer } from "../helpers/server.ts";

const HOLD_MS = 3_000;
const QUICK_DEADLINE_MS = 1_000;
let dir = "";
let emulator = "";
let gate = "";
const cleanups: (() => Promise<void>)[] = [];

const hold = () => writeFileSync(gate, "");
const release = () => rmSync(gate, { force: true });

beforeAll(async () => {
  const qemu = Bun.which("qemu-system-x86_64");
  if (!qemu) throw new Error("qemu-system-x86_64 not found: install qemu-system-x86 (scripts/lib/install-deps.sh)");
  dir = join(rig().rigDir, `gated-qemu-${process.pid}`);
  mkdirSync(dir, { recursive: true });
  chmodSync(dir, 0o755); // QEMU runs as libvirt-qemu
  emulator = join(dir, "qemu-system-x86_64");
  gate = join(dir, "gate");
  writeFileSync(emulator, `#!/bin/sh\n# Holds QEMU back while the gate file exists.\nwhile [ -e '${gate}' ]; do sleep 0.1; done\nexec '${qemu}' "$@"\n`);
  chmodSync(emulator, 0o755);
  // The first domain naming this emulator makes libvirtd probe it (seconds under TCG): do it
  // here, with a deadline to match, so the tests' own defines are quick calls.
  const lv = await LibvirtClient.connect(unixUri("qemu", "fault"));
  const { dom } = await lv.call(P.domainDefineXmlFlags, { xml: tinyGuestXml(uniqueName("probe"), { emulator, memoryMiB: 128 }), flags: 0 }, { timeoutMs: 300_000 });
  await lv.call(P.domainUndefine, { dom });
  await lv.close();
});

afterAll(async () => {
  release();
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => {});
  try {
    process.kill(rig().instances.fault.libvirtdPid, "SIGCONT");
  } catch {
    rigCommand("start-instance", "fault");
  }
  rmSync(dir, { recursive: true, force: true });
});

/** Removes a test domain by name, whatever state it is in. */
async function removeDomain(name: string): Promise<void> {
  const lv = await LibvirtClient.connect(unixUri("qemu", "fault"));
  try {
    const { dom } = await lv.call(P.domainLookupByName, { name });
    await lv.call(P.domainDestroy, { dom }).catch(() => {});
    await lv.call(P.domainUndefineFlags, { dom, flags: 0 });
  } catch (e) {
    if (!(e instanceof LibvirtError && e.code === ErrorCode.NO_DOMAIN)) throw e;
  } finally {
    await lv.close();
  }
}

describe("slow calls on a live daemon", () => {
  test("a domain start longer than the quick-call deadline completes while keepalive answers", async () => {
    const client = await LibvirtClient.connect(unixUri("qemu", "fault"), {
      callTimeoutMs: QUICK_DEADLINE_MS,
      keepaliveIntervalMs: 300,
      keepaliveCount: 3,
      reconnect: false,
    });
    const name = uniqueName("slowstart");
    cleanups.push(() => client.close(), () => removeDomain(name));
    const { dom } = await client.call(P.domainDefineXmlFlags, { xml: tinyGuestXml(name, { emulator, memoryMiB: 128 }), flags: 0 });
    hold();
    const t0 = performance.now();
    let settled = false;
    const start = client.call(P.domainCreate, { dom }).then(
      () => "started",
      (e: Error) => e,
    );
    void start.then(() => (settled = true));
    // Longer than the quick deadline and than keepalive's 900 ms window; quick calls still answer.
    const until = t0 + HOLD_MS;
    while (performance.now() < until) {
      expect((await client.call(P.connectGetType, undefined)).type).toBe("QEMU");
      await Bun.sleep(250);
    }
    expect(settled).toBe(false); // still held by the emulator wrapper
    release();
    const outcome = await start;
    expect(outcome).toBe("started"); // before the fix: CallTimeoutError after QUICK_DEADLINE_MS
    expect(performance.now() - t0).toBeGreaterThanOrEqual(HOLD_MS);
    expect((await client.call(P.domainGetState, { dom, flags: 0 })).state).toBe(1); // RUNNING
    expect(client.state).toBe("open");
  }, 120_000);

  test("a frozen daemon is still detected by keepalive while a start waits with no deadline", async () => {
    const client = await LibvirtClient.connect(unixUri("qemu", "fault"), {
      callTimeoutMs: QUICK_DEADLINE_MS,
      keepaliveIntervalMs: 300,
      keepaliveCount: 3,
      reconnect: false,
    });
    const name = uniqueName("frozen");
    cleanups.push(() => client.close(), () => removeDomain(name));
    const { dom } = await client.call(P.domainDefineXmlFlags, { xml: tinyGuestXml(name, { emulator, memoryMiB: 128 }), flags: 0 });
    hold();
    const start = client.call(P.domainCreate, { dom }).catch((e: Error) => e);
    // The start is under way (libvirtd launched the wrapper) before the daemon freezes.
    await waitFor("the start to reach the emulator", async () => (await client.call(P.domainGetState, { dom, flags: 0 })).state !== 5, 60_000, 100).catch(() => undefined);
    const pid = rig().instances.fault.libvirtdPid;
    process.kill(pid, "SIGSTOP");
    const frozenAt = performance.now();
    let err: unknown;
    try {
      err = await start;
    } finally {
      process.kill(pid, "SIGCONT");
      release();
    }
    expect(err).toBeInstanceOf(ConnectionClosedError);
    expect((err as ConnectionClosedError).reason).toBe("keepalive");
    // 900 ms expected (300 ms × 3); slack for a loaded 2-core machine.
    expect(performance.now() - frozenAt).toBeLessThan(5_000);
  }, 120_000);
});

describe("creates through rcloud whose start takes long", () => {
  /** An rcloud server on the fault daemon whose domains start through the gated emulator. */
  async function gatedServer(poolName: string, libvirt: Record<string, unknown>): Promise<TestServer> {
    // The embedded template with an <emulator> element naming the wrapper (a test-controlled path).
    const template = join(dir, "gated.xml.liquid");
    const embedded = readFileSync(join(import.meta.dir, "../../templates/vm-q35.xml.liquid"), "utf8");
    writeFileSync(template, embedded.replace("<devices>", `<devices>\n    <emulator>${emulator}</emulator>`));
    const { server, stop } = await faultDaemonServer(poolName, { libvirt, vmDefaults: { template } });
    cleanups.push(stop);
    await waitHealthy(server, 30_000);
    return server;
  }

  /** The pool's volumes and whether a domain called `name` exists, as libvirt sees them. */
  async function leftovers(poolName: string, name: string): Promise<{ vols: string[]; domain: boolean }> {
    const lv = await LibvirtClient.connect(unixUri("qemu", "fault"));
    try {
      const { pool } = await lv.call(P.storagePoolLookupByName, { name: poolName });
      await lv.call(P.storagePoolRefresh, { pool, flags: 0 });
      const vols = (await lv.call(P.storagePoolListAllVolumes, { pool, need_results: 1, flags: 0 })).vols.map((v) => v.name);
      const domain = await lv.call(P.domainLookupByName, { name }).then(
        () => true,
        (e) => !(e instanceof LibvirtError && e.code === ErrorCode.NO_DOMAIN),
      );
      return { vols, domain };
    } finally {
      await lv.close();
    }
  }

  test("a start abandoned on its deadline leaves no domain and no volume, also after libvirtd finishes it", async () => {
    const poolName = `rctest-abandon-${process.pid}`;
    const server = await gatedServer(poolName, { slow_call_timeout_s: 1 });
    const name = uniqueName("abandon").slice(0, 40);
    hold();
    try {
      const r = await server.req("POST", "/api/v1/vms", { name, image: "rcloud-tiny" });
      expect(r.status).toBe(503);
      expect(r.json.error.code).toBe("hypervisor_unavailable");
      expect(r.json.error.message).toContain("REMOTE_PROC_DOMAIN_CREATE got no reply within 1000 ms");
    } finally {
      release();
    }
    await waitFor("the rollback", async () => {
      const l = await leftovers(poolName, name);
      return !l.domain && l.vols.length === 0;
    }, 60_000, 250);
    expect((await server.req("GET", `/api/v1/vms/${name}`)).status).toBe(404);
  }, 120_000);

  test("an HTTP client that disconnects mid-create: the create completes and the VM is reported", async () => {
    const poolName = `rctest-hangup-${process.pid}`;
    const server = await gatedServer(poolName, {});
    const name = uniqueName("hangup").slice(0, 40);
    hold();
    const abort = new AbortController();
    try {
      const res = fetch(`${server.url}/api/v1/vms`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ name, image: "rcloud-tiny" }),
        signal: abort.signal,
      }).catch((e: Error) => e);
      await waitFor("the domain to be defined", async () => (await leftovers(poolName, name)).domain, 60_000, 100);
      abort.abort();
      expect(await res).toBeInstanceOf(Error);
    } finally {
      release();
    }
    const vm = await waitFor("the VM to be reported running", async () => {
      const r = await server.req("GET", `/api/v1/vms/${name}`);
      return r.status === 200 && r.json.state === "running" ? r.json : null;
    }, 60_000, 250);
    const l = await leftovers(poolName, name);
    expect(l.vols).toContain(`${vm.id}-root.qcow2`);
    expect(l.vols.filter((v) => !v.startsWith(`${vm.id}-`))).toEqual([]);
    expect((await server.req("DELETE", `/api/v1/vms/${name}`)).status).toBe(200);
    const after = await leftovers(poolName, name);
    expect(after.domain).toBe(false);
  }, 120_000);
});
