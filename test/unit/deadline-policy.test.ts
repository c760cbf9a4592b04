/** Which deadline a libvirt call gets (src/libvirt/deadline-policy.ts). */
import { describe, expect, test } from "bun:test";
import { callDeadlineMs, SLOW_CALL_CAP_WITHOUT_KEEPALIVE_MS } from "../../src/libvirt/deadline-policy.ts";
import { WORKER_HOLDING_PROCEDURES } from "../../src/libvirt/slow-calls.ts";
import { remoteProcedures as P } from "../../src/libvirt/index.ts";

const defaults = { quickMs: 60_000, slowMs: 0, keepalive: true };

describe("callDeadlineMs", () => {
  test("quick calls keep the quick deadline", () => {
    for (const d of [P.domainLookupByName, P.domainGetXmlDesc, P.domainDefineXmlFlags, P.storageVolGetPath, P.connectListAllDomains]) {
      expect(callDeadlineMs(d.name, defaults)).toBe(60_000);
    }
    expect(callDeadlineMs(P.domainGetState.name, { ...defaults, quickMs: 1_500 })).toBe(1_500);
  });

  test("worker-holding calls wait as long as keepalive says the daemon is alive", () => {
    for (const d of [P.domainCreate, P.domainCreateWithFlags, P.storageVolCreateXml, P.storageVolCreateXmlFrom, P.domainDestroy, P.domainShutdownFlags, P.storagePoolRefresh, P.storagePoolBuild]) {
      expect(WORKER_HOLDING_PROCEDURES.has(d.name)).toBe(true);
      expect(callDeadlineMs(d.name, defaults)).toBe(0);
    }
  });

  test("a configured slow-call deadline applies to worker-holding calls only", () => {
    const policy = { ...defaults, slowMs: 600_000 };
    expect(callDeadlineMs(P.domainCreate.name, policy)).toBe(600_000);
    expect(callDeadlineMs(P.domainLookupByUuid.name, policy)).toBe(60_000);
  });

  test("without keepalive nothing else would notice a hung daemon: slow calls get a cap", () => {
    const policy = { ...defaults, keepalive: false };
    expect(callDeadlineMs(P.domainCreate.name, policy)).toBe(SLOW_CALL_CAP_WITHOUT_KEEPALIVE_MS);
    expect(callDeadlineMs(P.domainCreate.name, { ...policy, slowMs: 5_000 })).toBe(5_000);
    expect(callDeadlineMs(P.domainLookupByName.name, policy)).toBe(60_000);
  });

  test("an explicit per-call timeout wins, 0 included", () => {
    expect(callDeadlineMs(P.domainCreate.name, defaults, 2_000)).toBe(2_000);
    expect(callDeadlineMs(P.domainLookupByName.name, defaults, 0)).toBe(0);
  });
});
