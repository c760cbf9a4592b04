import { describe, expect, test } from "bun:test";
import { SlowCallGate, WORKER_HOLDING_PROCEDURES } from "../../src/libvirt/slow-calls.ts";
import { remoteProcedures as P } from "../../src/libvirt/index.ts";

/** Enters n calls; returns when each was admitted (ms after the start, or null if still waiting). */
function enterMany(gate: SlowCallGate, n: number): { at: (number | null)[]; all: Promise<void> } {
  const t0 = performance.now();
  const at: (number | null)[] = Array.from({ length: n }, () => null);
  const all = Promise.all(
    at.map(async (_, i) => {
      await gate.enter();
      at[i] = performance.now() - t0;
    }),
  ).then(() => {});
  return { at, all };
}

describe("SlowCallGate", () => {
  test("calls within the window go at once; beyond it one more every gap, growing the window", async () => {
    const gate = new SlowCallGate({ gapMs: 20, startWorkers: 3, maxWorkers: 6 });
    const { at, all } = enterMany(gate, 5);
    await Bun.sleep(0);
    // The 4th grows the window at once (no growth yet), the 5th waits one gap: ordering and
    // a lower bound only, which a loaded machine cannot break.
    expect(at.slice(0, 4).every((t) => t !== null)).toBe(true);
    expect(at[4]).toBeNull();
    await all;
    expect(at[4]!).toBeGreaterThanOrEqual(18);
    expect(gate.state).toEqual({ inFlight: 5, window: 5, waiting: 0 });
  });

  test("the window stops at maxWorkers; a finished call lets the next waiting one in", async () => {
    const gate = new SlowCallGate({ gapMs: 5, startWorkers: 2, maxWorkers: 3 });
    const { at } = enterMany(gate, 5);
    await Bun.sleep(60);
    expect(at.filter((t) => t !== null).length).toBe(3);
    expect(gate.state).toEqual({ inFlight: 3, window: 3, waiting: 2 });
    gate.leave();
    await Bun.sleep(0);
    expect(at[3]).not.toBeNull();
    expect(at[4]).toBeNull();
    gate.leave();
    await Bun.sleep(0);
    expect(at[4]).not.toBeNull();
    expect(gate.state).toEqual({ inFlight: 3, window: 3, waiting: 0 });
  });

  test("reset() goes back to the starting window (a restarted daemon)", async () => {
    const gate = new SlowCallGate({ gapMs: 1, startWorkers: 2, maxWorkers: 4 });
    await enterMany(gate, 4).all;
    expect(gate.state.window).toBe(4);
    for (let i = 0; i < 4; i++) gate.leave();
    gate.reset();
    expect(gate.state).toEqual({ inFlight: 0, window: 2, waiting: 0 });
  });

  test("gap 0 turns the gate off", () => {
    const gate = new SlowCallGate({ gapMs: 0, startWorkers: 1, maxWorkers: 1 });
    expect(gate.enabled).toBe(false);
    for (let i = 0; i < 10; i++) expect(gate.enter()).toBeNull();
    expect(gate.state.inFlight).toBe(0);
  });

  test("the slow set names real procedures and leaves the quick ones out", () => {
    const names = new Set(Object.values(P).map((d) => d.name));
    for (const n of WORKER_HOLDING_PROCEDURES) expect(names.has(n)).toBe(true);
    for (const quick of [P.domainLookupByName, P.domainGetInfo, P.domainGetXmlDesc, P.domainDefineXmlFlags]) {
      expect(WORKER_HOLDING_PROCEDURES.has(quick.name)).toBe(false);
    }
  });
});

describe("SlowCallGate and cancellation", () => {
  test("a waiting call whose signal aborts leaves the queue at once; the others keep their turn", async () => {
    const gate = new SlowCallGate({ gapMs: 1000, startWorkers: 1, maxWorkers: 1 });
    expect(gate.enter()).toBeNull(); // takes the only slot
    const ac = new AbortController();
    const order: string[] = [];
    const aborted = gate.enter(ac.signal)!.then(
      () => order.push("aborted call admitted"),
      (e: unknown) => order.push(`aborted: ${String(e)}`),
    );
    const next = gate.enter()!.then(() => order.push("next admitted"));
    expect(gate.state.waiting).toBe(2);
    ac.abort("stop");
    await aborted;
    expect(order).toEqual(["aborted: stop"]);
    expect(gate.state.waiting).toBe(1);
    gate.leave();
    await next;
    expect(order).toEqual(["aborted: stop", "next admitted"]);
    expect(gate.state).toEqual({ inFlight: 1, window: 1, waiting: 0 });
  });
});

describe("SlowCallGate limits", () => {
  test("a daemon with fewer workers than 5 gets a window of its size", async () => {
    const gate = new SlowCallGate({ gapMs: 10, maxWorkers: 2 });
    expect(gate.state.window).toBe(2);
    expect(gate.enter()).toBeNull();
    expect(gate.enter()).toBeNull();
    const third = gate.enter();
    expect(third).not.toBeNull();
    expect(gate.state).toEqual({ inFlight: 2, window: 2, waiting: 1 });
    gate.leave();
    await third;
    expect(gate.state).toEqual({ inFlight: 2, window: 2, waiting: 0 });
  });

  test("an already aborted signal never joins the queue", async () => {
    const gate = new SlowCallGate({ gapMs: 1000, startWorkers: 1, maxWorkers: 1 });
    expect(gate.enter()).toBeNull();
    const ac = new AbortController();
    ac.abort("gone");
    await expect(gate.enter(ac.signal)).rejects.toBe("gone");
    expect(gate.state.waiting).toBe(0);
  });
});
