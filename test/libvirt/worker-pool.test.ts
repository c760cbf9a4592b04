/**
 * libvirtd 9.0 grows its worker pool only for calls that arrive while none is queued
 * (see src/libvirt/slow-calls.ts). On a freshly started daemon (the rig's `fault` instance),
 * 12 TCG domain starts sent at once run on the few threads the pool starts with; the same
 * burst through a LibvirtPool's slow-call window grows the pool to run them all at once.
 * The daemon's thread count is read with virt-admin, an independent witness.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { join, dirname } from "node:path";
import { LibvirtPool, remoteProcedures as P } from "../../src/libvirt/index.ts";
import { rig, rigCommand, uniqueName, unixUri, waitFor } from "../helpers/rig.ts";
import { tinyGuestXml } from "../helpers/guest.ts";

const BURST = 12;

afterAll(() => {
  // Leave a running fault instance for whoever comes next.
  try {
    process.kill(rig().instances.fault.libvirtdPid, 0);
  } catch {
    rigCommand("start-instance", "fault");
  }
});

function daemonWorkers(): number {
  const sock = join(dirname(rig().instances.fault.socket!), "libvirt-admin-sock");
  const r = Bun.spawnSync(["virt-admin", "-c", `libvirtd:///system?socket=${sock}`, "server-threadpool-info", "libvirtd"], { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`virt-admin failed (install libvirt-clients): ${r.stderr.toString()}`);
  const m = /^nWorkers\s*:\s*(\d+)/m.exec(r.stdout.toString());
  if (!m) throw new Error(`no nWorkers in virt-admin output: ${r.stdout.toString()}`);
  return Number(m[1]);
}

/** Restarts the fault daemon, starts BURST guests at once through a pool, returns its worker count. */
async function burstOnFreshDaemon(spacingMs: number): Promise<{ before: number; after: number; window: number; windowAfterRestart: number }> {
  rigCommand("stop-instance", "fault");
  rigCommand("start-instance", "fault");
  const before = daemonWorkers();
  const pool = await LibvirtPool.connect(unixUri("qemu", "fault"), { minSessions: 4, maxSessions: 4, slowCallSpacingMs: spacingMs });
  const names = Array.from({ length: BURST }, (_, i) => uniqueName(`wp${i}`));
  let after = 0;
  let window = 0;
  try {
    const doms = await Promise.all(names.map(async (name) => (await pool.call(P.domainDefineXmlFlags, { xml: tinyGuestXml(name, { memoryMiB: 128 }), flags: 0 })).dom));
    await Promise.all(doms.map((dom) => pool.call(P.domainCreate, { dom })));
    after = daemonWorkers();
    window = pool.slowCallState.window;
  } finally {
    await Promise.all(
      names.map(async (name) => {
        try {
          const { dom } = await pool.call(P.domainLookupByName, { name });
          await pool.call(P.domainDestroy, { dom }).catch(() => {});
          await pool.call(P.domainUndefineFlags, { dom, flags: 0 });
        } catch {
          // never defined
        }
      }),
    );
  }
  // A restarted daemon starts with 5 workers again, and so does the pool's window.
  rigCommand("stop-instance", "fault");
  const windowAfterRestart = await waitFor("window reset", () => (pool.slowCallState.window === 5 ? 5 : null), 10_000, 20).catch(() => pool.slowCallState.window);
  rigCommand("start-instance", "fault");
  await pool.close();
  return { before, after, window, windowAfterRestart };
}

describe("libvirtd worker pool under a burst of domain starts", () => {
  test("sent at once, the burst leaves the pool small; through the window, it grows to run every start", async () => {
    const atOnce = await burstOnFreshDaemon(0);
    const spaced = await burstOnFreshDaemon(10);
    console.error(`libvirtd workers: at once ${atOnce.before} -> ${atOnce.after}; through the window ${spaced.before} -> ${spaced.after}`);
    expect(atOnce.before).toBe(5);
    expect(spaced.before).toBe(5);
    expect(atOnce.after).toBeLessThanOrEqual(8);
    expect(spaced.after).toBeGreaterThanOrEqual(10);
    // The pool's window grew with the daemon, and went back to 5 when the daemon went away.
    expect(spaced.window).toBeGreaterThanOrEqual(10);
    expect(spaced.windowAfterRestart).toBe(5);
  }, 180_000);
});
