/**
 * LibvirtDriver.list/get against the rig's real libvirtd (test driver): what a listing shows
 * after VMs are changed behind rcloud's back (virsh, a bare client), what it costs in calls,
 * and that nothing kept between listings survives a daemon restart.
 */
import { describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LibvirtClient, remoteProcedures as P } from "../../src/libvirt/index.ts";
import { defineRcloudDomain, rcloudDomain, rcloudDomainXml } from "../helpers/domains.ts";
import { driverFixture } from "../helpers/driver-fixture.ts";
import { rigCommand, uniqueName, unixUri, waitFor } from "../helpers/rig.ts";

describe("libvirt driver listing (test driver)", () => {
  const prefix = uniqueName("ls");
  const f = driverFixture("test", "main", prefix);

  test("virsh define with other memory and vCPUs, virsh start and destroy: the very next listing and get show it", async () => {
    const driver = f.driver();
    const d = rcloudDomain(`${prefix}-virsh`, { memoryMb: 256, vcpus: 1 });
    const dir = mkdtempSync(join(tmpdir(), "rcloud-ls-"));
    const xmlFile = join(dir, "vm.xml");
    const virsh = (...args: string[]) => {
      const r = Bun.spawnSync(["virsh", "-q", "-c", unixUri("test"), ...args], { stdout: "pipe", stderr: "pipe" });
      if (r.exitCode !== 0) throw new Error(`virsh ${args.join(" ")} failed (install libvirt-clients): ${r.stderr.toString()}`);
    };
    const listed = async () => (await driver.list()).find((r) => r.name === d.name);

    writeFileSync(xmlFile, rcloudDomainXml(d));
    virsh("define", xmlFile);
    expect(await listed()).toMatchObject({ id: d.id, uuid: d.uuid, state: "stopped", memoryMb: 256, vcpus: 1 });

    writeFileSync(xmlFile, rcloudDomainXml({ ...d, memoryMb: 512, vcpus: 2 }));
    virsh("define", xmlFile);
    expect(await listed()).toMatchObject({ state: "stopped", memoryMb: 512, vcpus: 2 });
    expect(await driver.get(d.name)).toMatchObject({ state: "stopped", memoryMb: 512, vcpus: 2 });

    virsh("start", d.name);
    expect(await listed()).toMatchObject({ state: "running", memoryMb: 512 });
    // Redefined while running: libvirt keeps the running VM as it is until it stops.
    writeFileSync(xmlFile, rcloudDomainXml({ ...d, memoryMb: 1024, vcpus: 2 }));
    virsh("define", xmlFile);
    expect(await listed()).toMatchObject({ state: "running", memoryMb: 512 });
    virsh("destroy", d.name);
    expect(await listed()).toMatchObject({ state: "stopped", memoryMb: 1024 });
    expect(await driver.get(d.name)).toMatchObject({ state: "stopped", memoryMb: 1024 });

    virsh("undefine", d.name);
    rmSync(dir, { recursive: true });
    expect(await listed()).toBeUndefined();
    expect(await driver.get(d.name)).toBeNull();
  });

  test("a change made just before a listing is never missed (a bare client changing the VM and listing in turn, 45 times)", async () => {
    const [driver, lv] = [f.driver(), f.lv()];
    const d = rcloudDomain(`${prefix}-race`);
    const dom = await defineRcloudDomain(lv, d);
    let want = { memoryMb: d.memoryMb, vcpus: d.vcpus, state: "stopped" };
    for (let i = 0; i < 45; i++) {
      if (i % 3 === 0) {
        const changed = { memoryMb: 128 + 64 * (i % 5), vcpus: 1 + (i % 4) };
        await defineRcloudDomain(lv, { ...d, ...changed });
        want = { ...want, ...changed };
      } else if (i % 3 === 1) {
        await lv.call(P.domainCreate, { dom });
        want.state = "running";
      } else {
        await lv.call(P.domainDestroy, { dom });
        want.state = "stopped";
      }
      if (i % 2 === 0) expect((await driver.list()).find((r) => r.name === d.name)).toMatchObject(want);
      else expect(await driver.get(d.name)).toMatchObject(want);
    }
  });

  test("concurrent listings after changes to several domains each show every change made before them (20 rounds)", async () => {
    const [driver, lv] = [f.driver(), f.lv()];
    const doms = [];
    for (let i = 0; i < 6; i++) doms.push(await defineRcloudDomain(lv, rcloudDomain(`${prefix}-c${i}`)));
    const running = new Set<number>();
    for (let round = 0; round < 20; round++) {
      // Listings already under way while the domains change, then the changes, then listings that must see them all.
      const early = [driver.list(), driver.list()];
      for (let i = round % 2; i < doms.length; i += 2) {
        if (running.has(i)) {
          await lv.call(P.domainDestroy, { dom: doms[i]! });
          running.delete(i);
        } else {
          await lv.call(P.domainCreate, { dom: doms[i]! });
          running.add(i);
        }
      }
      const late = await Promise.all([driver.list(), driver.list(), driver.list()]);
      await Promise.all(early);
      for (const list of late) {
        const states = doms.map((_, i) => list.find((r) => r.name === `${prefix}-c${i}`)?.state);
        expect(states).toEqual(doms.map((_, i) => (running.has(i) ? "running" : "stopped")));
      }
    }
    for (const i of running) await lv.call(P.domainDestroy, { dom: doms[i]! });
  });

  test("a listing reads each domain's XML once: later listings are one barrier call, a state change re-reads only that domain, a new domain all stats", async () => {
    const [driver, lv] = [f.driver(), f.lv()];
    const doms = [];
    for (let i = 0; i < 20; i++) doms.push(await defineRcloudDomain(lv, rcloudDomain(`${prefix}-n${i}`)));
    const d5 = rcloudDomain(`${prefix}-n5`);
    // Fills what is kept; the defines' events, if they come while it reads, have those domains read again once.
    await driver.list();
    await driver.list();
    f.calls.clear();
    const mine = (await driver.list()).filter((r) => r.name.startsWith(`${prefix}-n`));
    expect(mine.length).toBe(20);
    expect(Object.fromEntries(f.calls)).toEqual({ REMOTE_PROC_CONNECT_GET_LIB_VERSION: 1 });

    // One domain started behind rcloud's back: its stats and XML only.
    await lv.call(P.domainCreate, { dom: doms[7]! });
    f.calls.clear();
    expect((await driver.list()).find((r) => r.name === `${prefix}-n7`)).toMatchObject({ state: "running" });
    expect(Object.fromEntries(f.calls)).toEqual({ REMOTE_PROC_CONNECT_GET_LIB_VERSION: 1, REMOTE_PROC_CONNECT_GET_ALL_DOMAIN_STATS: 1, REMOTE_PROC_DOMAIN_GET_XML_DESC: 1 });
    await lv.call(P.domainDestroy, { dom: doms[7]! });
    expect((await driver.list()).find((r) => r.name === `${prefix}-n7`)).toMatchObject({ state: "stopped" });

    // Metrics ask for every CPU time now: all stats.
    f.calls.clear();
    expect((await driver.list({ cpuTime: true })).filter((r) => r.name.startsWith(`${prefix}-n`)).length).toBe(20);
    expect(Object.fromEntries(f.calls)).toEqual({ REMOTE_PROC_CONNECT_GET_ALL_DOMAIN_STATS: 1 });

    // One domain redefined behind rcloud's back (a new UUID: another domain of that name).
    await lv.call(P.domainUndefine, { dom: doms[5]! });
    await defineRcloudDomain(lv, { ...d5, memoryMb: 384 });
    f.calls.clear();
    const again = await driver.list();
    expect(again.find((r) => r.name === d5.name)).toMatchObject({ id: d5.id, uuid: d5.uuid, memoryMb: 384 });
    expect(again.filter((r) => r.name.startsWith(`${prefix}-n`)).length).toBe(20);
    expect(f.calls.get("REMOTE_PROC_CONNECT_GET_ALL_DOMAIN_STATS")).toBe(1);
    expect(f.calls.get("REMOTE_PROC_DOMAIN_GET_XML_DESC")).toBe(1);

    // get: a lookup and the stats of that one domain.
    f.calls.clear();
    expect(await driver.get(d5.name)).toMatchObject({ memoryMb: 384 });
    expect(Object.fromEntries(f.calls)).toEqual({ REMOTE_PROC_DOMAIN_LOOKUP_BY_NAME: 1, REMOTE_PROC_CONNECT_GET_ALL_DOMAIN_STATS: 1 });
  });

  test("the driver's own operations show at once (updated_at after a start)", async () => {
    const [driver, lv] = [f.driver(), f.lv()];
    const d = rcloudDomain(`${prefix}-own`);
    await defineRcloudDomain(lv, d);
    const before = await driver.get(d.name);
    expect(before).toMatchObject({ state: "stopped", updatedAt: d.createdAt });
    await Bun.sleep(5);
    await driver.start(d.name);
    const after = await driver.get(d.name);
    expect(after!.state).toBe("running");
    expect(after!.updatedAt > d.createdAt).toBe(true);
    await driver.stop(d.name, { force: true, timeoutMs: 0 });
    expect((await driver.list()).find((r) => r.name === d.name)).toMatchObject({ state: "stopped" });
  });
});

describe("libvirt driver listing across a daemon restart (test driver on the fault daemon)", () => {
  const prefix = uniqueName("lsr");
  const f = driverFixture("test", "fault", prefix);

  test("after libvirtd restarts, a domain redefined with the same UUID while rcloud was away shows as it is now", async () => {
    const driver = f.driver();
    const d = rcloudDomain(`${prefix}-a`, { memoryMb: 256 });
    await defineRcloudDomain(f.lv(), d);
    expect((await driver.list()).find((r) => r.name === d.name)).toMatchObject({ memoryMb: 256 });

    // The test driver keeps its domains in memory: the restarted daemon has none. Down long
    // enough for rcloud's reconnect backoff to reach its 2 s, then a new client defines the
    // same UUID with other memory, most likely before rcloud is back.
    rigCommand("stop-instance", "fault");
    await Bun.sleep(3_000);
    rigCommand("start-instance", "fault");
    const early = await LibvirtClient.connect(unixUri("test", "fault"));
    await defineRcloudDomain(early, { ...d, memoryMb: 768 });
    await waitFor("rcloud to list again", () => driver.list().then((l) => l.some((r) => r.name === d.name)), 20_000);
    expect((await driver.list()).find((r) => r.name === d.name)).toMatchObject({ uuid: d.uuid, memoryMb: 768 });
    expect(driver.reconnects()).toBeGreaterThan(0);
    await waitFor("the fixture's client to reconnect", () => f.lv().call(P.connectGetType, undefined).then(() => true), 20_000);
    await early.close();
  });
});
