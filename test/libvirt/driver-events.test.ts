/**
 * LibvirtDriver.subscribe against the rig's real libvirtd: domains changed behind the
 * driver's back by a bare LibvirtClient, and the DriverEvents the driver reports for them
 * (the mapping is in src/drivers/libvirt/events.ts).
 */
import { describe, expect, test } from "bun:test";
import { rmSync } from "node:fs";
import { join } from "node:path";
import type { LibvirtDriver } from "../../src/drivers/libvirt/driver.ts";
import type { DriverEvent } from "../../src/drivers/types.ts";
import { remoteProcedures as P } from "../../src/libvirt/index.ts";
import { defineRcloudDomain, rcloudDomain } from "../helpers/domains.ts";
import { driverFixture } from "../helpers/driver-fixture.ts";
import { rig, uniqueName, waitFor } from "../helpers/rig.ts";

const DUMP_CRASH = 1; // VIR_DUMP_CRASH

/** Events for `name`, as [action, detail] pairs. */
function recorder(driver: LibvirtDriver, name: string): { seen: DriverEvent[]; pairs: () => string[][]; off: () => void } {
  const seen: DriverEvent[] = [];
  const off = driver.subscribe((e) => {
    if (e.vmName === name) seen.push(e);
  });
  return { seen, pairs: () => seen.map((e) => [e.action, e.detail]), off };
}

describe("libvirt driver events (test driver)", () => {
  const prefix = uniqueName("ev");
  const f = driverFixture("test", "main", prefix);

  test("every lifecycle change made behind the driver's back is reported, in order, with libvirt's detail", async () => {
    const [driver, lv] = [f.driver(), f.lv()];
    const d = rcloudDomain(`${prefix}-a`);
    const rec = recorder(driver, d.name);
    const dom = await defineRcloudDomain(lv, d);
    await defineRcloudDomain(lv, { ...d, memoryMb: 256 }); // same UUID: an update
    await lv.call(P.domainCreate, { dom });
    await lv.call(P.domainSuspend, { dom });
    await lv.call(P.domainResume, { dom });
    await lv.call(P.domainDestroy, { dom });
    await lv.call(P.domainCreate, { dom });
    await lv.call(P.domainShutdown, { dom });
    await lv.call(P.domainCreate, { dom });
    const dump = join(rig().rigDir, `${d.name}.core`);
    await lv.call(P.domainCoreDump, { dom, to: dump, flags: DUMP_CRASH });
    rmSync(dump, { force: true });
    await lv.call(P.domainUndefine, { dom });
    const expected = [
      ["vm-defined", "added"],
      ["vm-defined", "updated"],
      ["vm-started", "booted"],
      ["vm-paused", "paused"],
      ["vm-resumed", "unpaused"],
      ["vm-stopped", "destroyed"],
      ["vm-started", "booted"],
      ["vm-stopped", "shutdown"],
      ["vm-started", "booted"],
      ["vm-crashed", "crashed"],
      ["vm-undefined", "removed"],
    ];
    await waitFor("every event", () => rec.seen.length >= expected.length, 10_000, 20);
    expect(rec.pairs()).toEqual(expected);
    rec.off();

    // Unsubscribed: nothing more arrives there, while another subscriber sees the events.
    const other = recorder(driver, d.name);
    await lv.call(P.domainUndefine, { dom: await defineRcloudDomain(lv, d) });
    await waitFor("the undefine", () => other.seen.length === 2, 10_000, 20);
    other.off();
    expect(rec.seen.length).toBe(expected.length);
  });
  test("events carry the VM id once the driver has seen the VM; domains that are not rcloud VMs are not reported once known", async () => {
    const [driver, lv] = [f.driver(), f.lv()];
    const d = rcloudDomain(`${prefix}-b`);
    const foreign = `${prefix}-foreign`;
    const seen: DriverEvent[] = [];
    const off = driver.subscribe((e) => {
      if (e.vmName === d.name || e.vmName === foreign) seen.push(e);
    });
    const dom = await defineRcloudDomain(lv, d);
    const other = (await lv.call(P.domainDefineXml, { xml: `<domain type='test'><name>${foreign}</name><memory>65536</memory><vcpu>1</vcpu><os><type>hvm</type></os></domain>` })).dom;
    // Not seen yet: reported, without an id.
    await waitFor("the defines", () => seen.length === 2, 10_000, 20);
    expect(seen.map((e) => [e.vmName, e.vmId])).toEqual([
      [d.name, null],
      [foreign, null],
    ]);
    expect((await driver.list()).map((r) => r.name)).toContain(d.name);
    seen.length = 0;
    await lv.call(P.domainCreate, { dom });
    await lv.call(P.domainCreate, { dom: other });
    await lv.call(P.domainDestroy, { dom: other });
    await lv.call(P.domainDestroy, { dom });
    await lv.call(P.domainUndefine, { dom: other });
    await lv.call(P.domainUndefine, { dom });
    await waitFor("the last event", () => seen.some((e) => e.action === "vm-undefined"), 10_000, 20);
    await Bun.sleep(200); // anything about the foreign domain would have come by now
    off();
    expect(seen.map((e) => [e.vmName, e.vmId, e.action])).toEqual([
      [d.name, d.id, "vm-started"],
      [d.name, d.id, "vm-stopped"],
      [d.name, d.id, "vm-undefined"],
    ]);
  });
});

describe("libvirt driver events (qemu, TCG)", () => {
  const prefix = uniqueName("evq");
  const f = driverFixture("qemu", "main", prefix);

  test("a guest started and destroyed behind the driver's back: started (booted), then stopped (destroyed)", async () => {
    const [driver, lv] = [f.driver(), f.lv()];
    const { kernel, initrd } = rig().guest;
    const d = rcloudDomain(`${prefix}-a`, { domainType: "qemu", boot: { kernel, initrd, cmdline: "console=ttyS0 quiet" } });
    const rec = recorder(driver, d.name);
    const dom = await defineRcloudDomain(lv, d);
    await lv.call(P.domainCreate, { dom });
    await lv.call(P.domainDestroy, { dom });
    await waitFor("the stop", () => rec.seen.some((e) => e.action === "vm-stopped"), 20_000, 20);
    const pairs = rec.pairs().map((p) => p.join(" "));
    expect(pairs[0]).toBe("vm-defined added");
    // QEMU starts paused and is resumed; being killed, it reports a host-side shutdown.
    expect(pairs.indexOf("vm-started booted")).toBeGreaterThan(0);
    expect(pairs.at(-1)).toBe("vm-stopped destroyed");
    expect(pairs.indexOf("vm-started booted")).toBeLessThan(pairs.length - 1);
    for (const e of rec.seen) expect(e.vmName).toBe(d.name);
    rec.off();
  });
});
