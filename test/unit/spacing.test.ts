import { describe, expect, test } from "bun:test";
import { CallSpacer, WORKER_HOLDING_PROCEDURES } from "../../src/libvirt/spacing.ts";
import { remoteProcedures as P } from "../../src/libvirt/index.ts";

describe("CallSpacer", () => {
  test("a lone call goes at once; a burst is sent one gap apart", async () => {
    const spacer = new CallSpacer(20);
    expect(spacer.turn()).toBeNull();
    const t0 = performance.now();
    const sent: number[] = [];
    await Promise.all(
      Array.from({ length: 4 }, async () => {
        await spacer.turn();
        sent.push(performance.now() - t0);
      }),
    );
    sent.sort((a, b) => a - b);
    // Slots at 20, 40, 60, 80 ms after the first call (timers may fire a little late).
    for (let i = 0; i < 4; i++) expect(sent[i]!).toBeGreaterThanOrEqual(20 * (i + 1) - 2);
    expect(sent[3]!).toBeLessThan(200);
  });

  test("after a quiet gap the next call goes at once again", async () => {
    const spacer = new CallSpacer(10);
    expect(spacer.turn()).toBeNull();
    await Bun.sleep(15);
    expect(spacer.turn()).toBeNull();
  });

  test("gap 0 turns spacing off", () => {
    const spacer = new CallSpacer(0);
    for (let i = 0; i < 5; i++) expect(spacer.turn()).toBeNull();
  });

  test("the slow set names real procedures and leaves the quick ones out", () => {
    const names = new Set(Object.values(P).map((d) => d.name));
    for (const n of WORKER_HOLDING_PROCEDURES) expect(names.has(n)).toBe(true);
    for (const quick of [P.domainLookupByName, P.domainGetInfo, P.domainGetXmlDesc, P.domainDefineXmlFlags]) {
      expect(WORKER_HOLDING_PROCEDURES.has(quick.name)).toBe(false);
    }
  });
});
