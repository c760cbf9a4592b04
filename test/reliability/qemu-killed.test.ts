/**
 * Fault 3 of docs/reliability.md: the QEMU process under a running VM SIGKILLed (by PID, as
 * the OOM killer would), on the libvirt driver (qemu:///system on the rig's `main` daemon)
 * and on the QEMU driver, with each `vm_defaults.on_crash`: the VM shows the crash (state
 * `crashed` with preserve, `stopped` with stop, running again with restart, each with its
 * crash_reason), an event says QEMU died (`vm-stopped`/`failed` or `vm-crashed`), and a start
 * by the user clears the crash.
 */
import { afterAll, expect, test } from "bun:test";
import { readFileSync, renameSync } from "node:fs";
import { join } from "node:path";
import { ChaosSite, type ChaosDriverKind, vmBody } from "../helpers/chaos.ts";
import { waitFor } from "../helpers/rig.ts";

/** The first event on `/events?vm=` (held ones included) that `pred` accepts, or null after `ms`. */
async function firstEvent(site: ChaosSite, vm: string, pred: (e: { type: string; action: string; detail: string }) => boolean, ms: number) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), ms);
  try {
    const res = await fetch(`${site.url}/api/v1/events?vm=${vm}&since=0`, { signal: ctl.signal });
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return null;
      buf += value;
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (!line.trim()) continue;
        const e = JSON.parse(line);
        if (pred(e)) return e as { type: string; action: string; detail: string };
      }
    }
  } catch {
    return null;
  } finally {
    clearTimeout(timer);
    ctl.abort();
  }
}

/** The VM as the API shows it once it runs on a new QEMU (not `pid`); the error has the tail of rcloud's log. */
async function runningAgain(site: ChaosSite, id: string, pid: number, timeoutMs: number): Promise<{ state: string; crash_reason: string | null }> {
  return await waitFor(
    "the VM to run again",
    async () => {
      const v = (await site.req("GET", `/api/v1/vms/${id}`))?.json;
      const p = (await site.artefacts()).processes.get(id);
      return v?.state === "running" && p && p !== pid ? v : null;
    },
    timeoutMs,
    200,
  ).catch((e: Error) => {
    // What rcloud said about the restart is in its log (a failed restart start is a warning there).
    throw new Error(`${e.message}\n--- rcloud's log (${site.lastLog}), last 4000 bytes ---\n${readFileSync(site.lastLog, "utf8").slice(-4000)}`);
  });
}

const sites: ChaosSite[] = [];
afterAll(async () => {
  await Promise.all(sites.map((s) => s.cleanup()));
}, 180_000);

/** One VM on its own rcloud with `policy`: its QEMU killed, then what the API and the events say. */
async function crashWith(kind: ChaosDriverKind, policy: "preserve" | "stop" | "restart"): Promise<void> {
  const site = new ChaosSite(kind, { onCrash: policy });
  sites.push(site);
  await site.start();
  const name = `crash-${policy}`;
  const made = await site.req("POST", "/api/v1/vms", vmBody(name, { extra_disks: [] }));
  expect(made?.status).toBe(201);
  const id = made!.json.id as string;
  const pid = (await site.artefacts()).processes.get(id);
  expect(pid).toBeGreaterThan(1);

  const t0 = Date.now();
  process.kill(pid!, "SIGKILL");
  const seen = await waitFor(
    "the crash to show",
    async () => {
      const v = (await site.req("GET", `/api/v1/vms/${id}`))?.json;
      // The crash's event may be seen a moment before the state the hypervisor reports: wait
      // for both (restart: the reason alone, the VM may be running again at once).
      return v?.crash_reason && (policy === "restart" || v.state !== "running") ? v : null;
    },
    30_000,
    50,
  );
  console.log(`${kind} on_crash=${policy}: ${seen.state} with crash_reason after ${Date.now() - t0} ms: ${seen.crash_reason}`);
  expect(seen.crash_reason).toContain("QEMU");
  const ev = await firstEvent(site, name, (e) => e.type === "lifecycle" && ((e.action === "vm-stopped" && e.detail === "failed") || e.action === "vm-crashed"), 10_000);
  expect(ev).not.toBeNull();

  if (policy === "restart") {
    const again = await runningAgain(site, id, pid!, 90_000);
    expect(again.crash_reason).toContain("QEMU");
  } else {
    expect(seen.state).toBe(policy === "preserve" ? "crashed" : "stopped");
    await Bun.sleep(2_000);
    const later = (await site.req("GET", `/api/v1/vms/${id}`))?.json;
    expect(later.state).toBe(policy === "preserve" ? "crashed" : "stopped");
    expect((await site.artefacts()).processes.get(id)).toBeUndefined();
    // A start by the user clears the crash.
    const started = await site.req("POST", `/api/v1/vms/${id}/start`);
    expect(started?.status).toBe(200);
    expect(started?.json.state).toBe("running");
    expect(started?.json.crash_reason).toBeNull();
  }
  expect((await site.req("DELETE", `/api/v1/vms/${id}`))?.status).toBe(200);
  await site.stopChildren();
}

// QEMU driver: the three policies at once, each on an rcloud of its own (the suite stays
// short). libvirt: one after the other, as rclouds sharing one libvirtd hear each other's
// domain events (an on_crash: restart rcloud would restart the others' VMs).
for (const kind of ["libvirt", "qemu"] as ChaosDriverKind[]) {
  test(`${kind} driver: QEMU SIGKILLed under a running VM, on_crash preserve, stop and restart`, async () => {
    const policies = ["preserve", "stop", "restart"] as const;
    if (kind === "qemu") await Promise.all(policies.map((policy) => crashWith(kind, policy)));
    else for (const policy of policies) await crashWith(kind, policy);
  }, 300_000);
}

// on_crash: restart tries again when a start fails: here the root disk is away when QEMU dies
// (the first start fails on it) and back a moment later (the next try boots).
test("qemu driver: on_crash restart tries again after a failed start", async () => {
  const site = new ChaosSite("qemu", { onCrash: "restart" });
  sites.push(site);
  await site.start();
  const made = await site.req("POST", "/api/v1/vms", vmBody("crash-retry", { extra_disks: [] }));
  expect(made?.status).toBe(201);
  const id = made!.json.id as string;
  const pid = (await site.artefacts()).processes.get(id);
  expect(pid).toBeGreaterThan(1);
  const root = join(site.dataDir, "vms", id, "root.qcow2");
  renameSync(root, `${root}.away`);
  process.kill(pid!, "SIGKILL");
  const log = () => readFileSync(site.lastLog, "utf8");
  await waitFor("the first restart to fail and be tried again", () => /on_crash: restart could not start the VM again; trying again/.test(log()), 30_000, 100);
  renameSync(`${root}.away`, root);
  const again = await runningAgain(site, id, pid!, 60_000);
  expect(again.crash_reason).toContain("QEMU");
  expect(log()).not.toContain("given up");
  expect((await site.req("DELETE", `/api/v1/vms/${id}`))?.status).toBe(200);
  await site.stopChildren();
}, 180_000);
