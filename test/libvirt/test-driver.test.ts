/**
 * The client against a real libvirtd, through the daemon's test driver (fast, no guests):
 * domain lifecycle, XML, metadata, storage, concurrency, errors and events.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { CallAbortedError, ErrorCode, LibvirtClient, LibvirtError, remoteProcedures as P } from "../../src/libvirt/index.ts";
import type { RemoteNonnullDomain } from "../../src/codecs/generated/remote.ts";
import { installedLibvirtVersion, uniqueName, unixUri, waitFor } from "../helpers/rig.ts";

const NS = "https://rcloud.dev/xmlns/rcloud/1";
const State = { RUNNING: 1, PAUSED: 3, SHUTOFF: 5 } as const;
const Event = { DEFINED: 0, UNDEFINED: 1, STARTED: 2, SUSPENDED: 3, RESUMED: 4, STOPPED: 5 } as const;

function domainXml(name: string, memKiB = 131072): string {
  return `<domain type='test'><name>${name}</name><memory unit='KiB'>${memKiB}</memory><vcpu>1</vcpu><os><type>hvm</type></os></domain>`;
}

let client: LibvirtClient;
const created: string[] = [];

beforeAll(async () => {
  client = await LibvirtClient.connect(unixUri("test"));
});

afterAll(async () => {
  for (const name of created) {
    try {
      const { dom } = await client.call(P.domainLookupByName, { name });
      await client.call(P.domainDestroy, { dom }).catch(() => {});
      await client.call(P.domainUndefine, { dom }).catch(() => {});
    } catch {
      // already gone
    }
  }
  await client.close();
});

async function define(name: string): Promise<RemoteNonnullDomain> {
  created.push(name);
  const { dom } = await client.call(P.domainDefineXmlFlags, { xml: domainXml(name), flags: 1 /* VALIDATE */ });
  return dom;
}

async function state(dom: RemoteNonnullDomain): Promise<number> {
  return (await client.call(P.domainGetState, { dom, flags: 0 })).state;
}

describe("test driver through libvirtd", () => {
  test("connects and reports the driver and library versions", async () => {
    const info = await client.info();
    expect(info.hvType).toBe("TEST");
    expect(info.uri).toBe("test:///default");
    // libvirt's encoding, major * 1,000,000 + minor * 1,000 + micro, of the installed daemon's version.
    const [major, minor, micro] = installedLibvirtVersion().split(".").map(BigInt);
    expect(info.libVersion).toBe(major! * 1_000_000n + minor! * 1_000n + micro!);
    const host = await client.call(P.connectGetHostname, undefined);
    expect(host.hostname.length).toBeGreaterThan(0);
    const node = await client.call(P.nodeGetInfo, undefined);
    expect(node.cpus).toBeGreaterThan(0);
  });

  test("full domain lifecycle", async () => {
    const name = uniqueName("life");
    const dom = await define(name);
    expect(dom.name).toBe(name);
    expect(dom.uuid.byteLength).toBe(16);

    const byName = await client.call(P.domainLookupByName, { name });
    const byUuid = await client.call(P.domainLookupByUuid, { uuid: dom.uuid });
    expect(byUuid.dom.name).toBe(name);
    expect([...byName.dom.uuid]).toEqual([...dom.uuid]);
    expect(await state(dom)).toBe(State.SHUTOFF);

    await client.call(P.domainCreate, { dom });
    expect(await state(dom)).toBe(State.RUNNING);
    const info = await client.call(P.domainGetInfo, { dom });
    expect(info.nrVirtCpu).toBe(1);
    expect(info.maxMem).toBe(131072n);

    await client.call(P.domainSuspend, { dom });
    expect(await state(dom)).toBe(State.PAUSED);
    await client.call(P.domainResume, { dom });
    await client.call(P.domainReboot, { dom, flags: 0 });
    await client.call(P.domainShutdown, { dom });
    expect(await state(dom)).toBe(State.SHUTOFF);

    const started = await client.call(P.domainCreateWithFlags, { dom, flags: 0 });
    expect(started.dom.id).toBeGreaterThan(0);
    await client.call(P.domainDestroyFlags, { dom, flags: 0 });
    expect(await state(dom)).toBe(State.SHUTOFF);

    const all = await client.call(P.connectListAllDomains, { need_results: 1, flags: 0 });
    expect(all.domains.map((d) => d.name)).toContain(name);

    await client.call(P.domainUndefineFlags, { dom, flags: 0 });
    const err = await client.call(P.domainLookupByName, { name }).catch((e) => e);
    expect(err).toBeInstanceOf(LibvirtError);
    expect((err as LibvirtError).code).toBe(ErrorCode.NO_DOMAIN);
  });

  test("XML round trip keeps what we defined", async () => {
    const name = uniqueName("xml");
    const dom = await define(name);
    const { xml } = await client.call(P.domainGetXmlDesc, { dom, flags: 2 /* INACTIVE */ });
    expect(xml).toContain(`<name>${name}</name>`);
    expect(xml).toMatch(/<memory unit='KiB'>131072<\/memory>/);
    // Redefining from the returned XML is accepted and changes nothing.
    const again = await client.call(P.domainDefineXml, { xml });
    expect([...again.dom.uuid]).toEqual([...dom.uuid]);
  });

  test("metadata element under our namespace: set, get, remove", async () => {
    const dom = await define(uniqueName("meta"));
    const missing = await client.call(P.domainGetMetadata, { dom, type: 2, uri: NS, flags: 0 }).catch((e) => e);
    expect((missing as LibvirtError).code).toBe(ErrorCode.NO_DOMAIN_METADATA);

    const element = `<vm id="vm-abc123" image="debian13"><created_at>2026-11-25T12:00:00Z</created_at></vm>`;
    await client.call(P.domainSetMetadata, { dom, type: 2, metadata: element, key: "rcloud", uri: NS, flags: 0 });
    const got = await client.call(P.domainGetMetadata, { dom, type: 2, uri: NS, flags: 0 });
    expect(got.metadata).toContain('id="vm-abc123"');
    expect(got.metadata).toContain("2026-11-25T12:00:00Z");

    await client.call(P.domainSetMetadata, { dom, type: 2, metadata: null, key: null, uri: NS, flags: 0 });
    const gone = await client.call(P.domainGetMetadata, { dom, type: 2, uri: NS, flags: 0 }).catch((e) => e);
    expect((gone as LibvirtError).code).toBe(ErrorCode.NO_DOMAIN_METADATA);
  });

  test("storage pool and volume lifecycle", async () => {
    const poolName = uniqueName("pool");
    const xml = `<pool type='dir'><name>${poolName}</name><target><path>/rctest/${poolName}</path></target></pool>`;
    const { pool } = await client.call(P.storagePoolDefineXml, { xml, flags: 0 });
    await client.call(P.storagePoolCreate, { pool, flags: 0 });
    try {
      const info = await client.call(P.storagePoolGetInfo, { pool });
      expect(info.state).toBe(2); // RUNNING
      const { vol } = await client.call(P.storageVolCreateXml, {
        pool,
        xml: `<volume><name>disk0.qcow2</name><capacity unit='MiB'>64</capacity><target><format type='qcow2'/></target></volume>`,
        flags: 0,
      });
      expect(vol.pool).toBe(poolName);
      const byName = await client.call(P.storageVolLookupByName, { pool, name: "disk0.qcow2" });
      expect(byName.vol.key).toBe(vol.key);
      const volInfo = await client.call(P.storageVolGetInfo, { vol });
      expect(volInfo.capacity).toBe(64n * 1024n * 1024n);
      const { name: path } = await client.call(P.storageVolGetPath, { vol });
      expect(path).toContain("disk0.qcow2");
      const byPath = await client.call(P.storageVolLookupByPath, { path });
      expect(byPath.vol.name).toBe("disk0.qcow2");
      const { vol: clone } = await client.call(P.storageVolCreateXmlFrom, {
        pool,
        xml: `<volume><name>disk1.qcow2</name><capacity unit='MiB'>64</capacity></volume>`,
        clonevol: vol,
        flags: 0,
      });
      const list = await client.call(P.storagePoolListAllVolumes, { pool, need_results: 1, flags: 0 });
      expect(list.vols.map((v) => v.name).sort()).toEqual(["disk0.qcow2", "disk1.qcow2"]);
      await client.call(P.storageVolDelete, { vol: clone, flags: 0 });
      await client.call(P.storageVolDelete, { vol, flags: 0 });
      const missing = await client.call(P.storageVolLookupByName, { pool, name: "disk0.qcow2" }).catch((e) => e);
      expect((missing as LibvirtError).code).toBe(ErrorCode.NO_STORAGE_VOL);
      await client.call(P.storagePoolRefresh, { pool, flags: 0 });
    } finally {
      await client.call(P.storagePoolDestroy, { pool });
      await client.call(P.storagePoolUndefine, { pool });
    }
    const err = await client.call(P.storagePoolLookupByName, { name: poolName }).catch((e) => e);
    expect((err as LibvirtError).code).toBe(ErrorCode.NO_STORAGE_POOL);
  });

  test("networks: list and lookup; DHCP leases are unsupported on this driver", async () => {
    const nets = await client.call(P.connectListAllNetworks, { need_results: 1, flags: 0 });
    expect(nets.nets.length).toBeGreaterThan(0);
    const { net } = await client.call(P.networkLookupByName, { name: nets.nets[0]!.name });
    const leases = await client.call(P.networkGetDhcpLeases, { net, mac: null, need_results: 1, flags: 0 }).catch((e) => e);
    expect((leases as LibvirtError).code).toBe(ErrorCode.NO_SUPPORT);
  });

  test("many concurrent calls on one connection are matched to their callers", async () => {
    const names = await Promise.all(Array.from({ length: 8 }, (_, i) => define(uniqueName(`conc${i}`)).then((d) => d.name)));
    const calls = Array.from({ length: 400 }, async (_, i) => {
      const name = names[i % names.length]!;
      const { dom } = await client.call(P.domainLookupByName, { name });
      const [{ xml }, info] = await Promise.all([client.call(P.domainGetXmlDesc, { dom, flags: 0 }), client.call(P.domainGetInfo, { dom })]);
      return { name, dom: dom.name, xmlOk: xml.includes(`<name>${name}</name>`), state: info.state };
    });
    const results = await Promise.all(calls);
    for (const r of results) {
      expect(r.dom).toBe(r.name);
      expect(r.xmlOk).toBe(true);
    }
  });

  test("errors carry libvirt's code, domain and message", async () => {
    const err = (await client.call(P.domainLookupByName, { name: "rctest-no-such-domain" }).catch((e) => e)) as LibvirtError;
    expect(err).toBeInstanceOf(LibvirtError);
    expect(err.code).toBe(ErrorCode.NO_DOMAIN);
    expect(err.codeName).toBe("NO_DOMAIN");
    expect(err.isNotFound).toBe(true);
    expect(err.level).toBe(2);
    expect(err.message).toMatch(/not found/i);
    expect(err.procedure).toBe("REMOTE_PROC_DOMAIN_LOOKUP_BY_NAME");
    const bad = (await client.call(P.domainDefineXml, { xml: "<domain" }).catch((e) => e)) as LibvirtError;
    expect([ErrorCode.XML_ERROR, ErrorCode.XML_DETAIL] as number[]).toContain(bad.code);
    expect(bad.message).toMatch(/Start Tag|XML/);
    // The connection is still fine after errors.
    expect((await client.call(P.connectGetType, undefined)).type).toBe("TEST");
  });

  test("an already-aborted signal never sends the call", async () => {
    const ac = new AbortController();
    ac.abort();
    const err = await client.call(P.connectGetType, undefined, { signal: ac.signal }).catch((e) => e);
    expect(err).toBeInstanceOf(CallAbortedError);
  });

  test("lifecycle events arrive for define, start, suspend, resume, stop, undefine", async () => {
    const events = await client.lifecycleEvents();
    const name = uniqueName("events");
    const seen: number[] = [];
    const reader = (async () => {
      for await (const ev of events) {
        if (ev.domain.name !== name) continue;
        seen.push(ev.event);
        if (ev.event === Event.UNDEFINED) break;
      }
    })();
    const dom = await define(name);
    await client.call(P.domainCreate, { dom });
    await client.call(P.domainSuspend, { dom });
    await client.call(P.domainResume, { dom });
    await client.call(P.domainDestroy, { dom });
    await client.call(P.domainUndefine, { dom });
    await waitFor("UNDEFINED event", () => seen.includes(Event.UNDEFINED), 10_000);
    await reader;
    expect(seen).toEqual([Event.DEFINED, Event.STARTED, Event.SUSPENDED, Event.RESUMED, Event.STOPPED, Event.UNDEFINED]);
  });

  test("an event subscription filtered to one domain ignores the others", async () => {
    const mine = await define(uniqueName("filter-a"));
    const other = await define(uniqueName("filter-b"));
    const events = await client.subscribeDomainEvents(0, { domain: mine });
    await client.call(P.domainCreate, { dom: other });
    await client.call(P.domainCreate, { dom: mine });
    const first = await events.next();
    expect(first.done).toBe(false);
    expect(first.value!.msg.dom.name).toBe(mine.name);
    await events.return();
    await client.call(P.domainDestroy, { dom: other });
    await client.call(P.domainDestroy, { dom: mine });
  });
});
