/**
 * LibvirtDriver.subscribe against the rig's real libvirtd: domains changed behind the
 * driver's back by a bare LibvirtClient, and the DriverEvents the driver reports for them
 * (the mapping is in src/drivers/libvirt/events.ts).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { LibvirtDriver } from "../../src/drivers/libvirt/driver.ts";
import type { DriverEvent } from "../../src/drivers/types.ts";
import { LibvirtClient, remoteProcedures as P } from "../../src/libvirt/index.ts";
import { defineRcloudDomain, rcloudDomain, removeDomains } from "../helpers/domains.ts";
import { removePool, rig, uniqueName, unixUri, waitFor } from "../helpers/rig.ts";

const DUMP_CRASH = 1; // VIR_DUMP_CRASH

function driverOn(uri: string, poolName: string, poolPath: string): LibvirtDriver {
  return new LibvirtDriver({ uri, poolName, poolPath, templatePath: null, domainType: "auto", consoleLogDir: null, baseImagesDir: `${poolPath}-images`, kernelDir: null });
}

/** Events for `name`, as [action, detail] pairs. */
function recorder(driver: LibvirtDriver, name: string): { seen: DriverEvent[]; pairs: () => string[][]; off: () => void } {
  const seen: DriverEvent[] = [];
  const off = driver.subscribe((e) => {
    if (e.vmName === name) seen.push(e);
  });
  return { seen, pairs: () => seen.map((e) => [e.action, e.detail]), off };
}

/**
 * A driver on the rig's main daemon (libvirt driver `kind`) with a pool of its own, and a bare
 * client for changes behind its back; both set up for the enclosing describe block.
 */
function fixture(kind: "test" | "qemu", prefix: string): { driver: () => LibvirtDriver; lv: () => LibvirtClient } {
  const poolName = `${prefix}-pool`;
  let driver: LibvirtDriver;
  let lv: LibvirtClient;
  beforeAll(async () => {
    driver = driverOn(unixUri(kind), poolName, kind === "test" ? `/rctest/${poolName}` : join(rig().rigDir, "pools", poolName));
    await driver.init();
    lv = await LibvirtClient.connect(unixUri(kind));
  });
  afterAll(async () => {
    await removeDomains(lv, prefix);
    await driver.close();
    await removePool(lv, poolName);
    await lv.close();
  });
  return { driver: () => driver, lv: () => lv };
}

describe("libvirt driver events (test driver)", () => {
  const prefix = uniqueName("ev");
  const f = fixture("test", prefix);

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
});

describe("libvirt driver events (qemu, TCG)", () => {
  const prefix = uniqueName("evq");
  const f = fixture("qemu", prefix);

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
