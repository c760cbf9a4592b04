/**
 * The event bus (src/events/): ids, the ring, resumption and gaps, filters, cut-off of a
 * reader that stops pulling, and the NDJSON/SSE encodings as a ReadableStream delivers them.
 */
import { describe, expect, test } from "bun:test";
import type { ApiEvent } from "../../src/api-types/json.ts";
import { EventBus, type EventInput } from "../../src/events/bus.ts";
import { ALL_EVENTS, FilterError, parseFilter } from "../../src/events/filter.ts";
import { eventStream } from "../../src/events/stream.ts";

const vmEvent = (name: string, action = "vm-started", project: string | null = null): EventInput => ({
  type: "lifecycle",
  action,
  vm: { id: `vm-${name.padEnd(8, "0").slice(0, 8)}`, name },
  project,
  detail: "booted",
  request_id: null,
  host: "local",
});

function drain(bus: EventBus, since: number | null, filter = ALL_EVENTS): ApiEvent[] {
  const sub = bus.subscribe(filter, { since, follow: false });
  const out: ApiEvent[] = [];
  for (;;) {
    const { stream, entries } = sub.take();
    out.push(...stream, ...entries.map((e) => e.event));
    if (stream.length === 0 && entries.length === 0) break;
  }
  expect(sub.state).toBe("caught-up");
  return out;
}

async function readLines(stream: ReadableStream<Uint8Array>, count: number): Promise<string[]> {
  const reader = stream.getReader();
  const decoder = new TextDecoder();
  let text = "";
  while (text.split("\n").filter((l) => l !== "").length < count) {
    const { done, value } = await reader.read();
    if (done) break;
    text += decoder.decode(value, { stream: true });
  }
  reader.releaseLock();
  return text.split("\n").filter((l) => l !== "");
}

describe("event bus", () => {
  test("ids increase by one from the first id; time is the bus clock", () => {
    const bus = new EventBus({ capacity: 10, subscriberBuffer: 10, firstId: 500, now: () => new Date("2026-01-02T03:04:05Z") });
    const a = bus.publish(vmEvent("a"));
    const b = bus.publish(vmEvent("b"));
    expect([a.id, b.id]).toEqual([500, 501]);
    expect(a.time).toBe("2026-01-02T03:04:05.000Z");
    expect(bus.lastId).toBe(501);
    expect(bus.publishedCount).toBe(2);
  });

  test("the default first id comes from the clock, so ids keep increasing across restarts", () => {
    const before = Date.now() * 1000;
    const bus = new EventBus({ capacity: 10, subscriberBuffer: 10 });
    expect(bus.publish(vmEvent("a")).id).toBeGreaterThanOrEqual(before);
    expect(Number.isSafeInteger(bus.lastId)).toBe(true);
  });

  test("since replays exactly the events after it; the ring keeps the last `capacity`", () => {
    const bus = new EventBus({ capacity: 5, subscriberBuffer: 10, firstId: 1 });
    for (let i = 0; i < 8; i++) bus.publish(vmEvent(`v${i}`));
    expect(bus.firstHeldId).toBe(4);
    const resumed = drain(bus, 5);
    expect(resumed[0]).toMatchObject({ type: "stream", action: "subscribed", id: null, last_id: 5 });
    expect(resumed.slice(1).map((e) => e.id)).toEqual([6, 7, 8]);
    // The oldest held id minus one is still complete: no gap.
    expect(drain(bus, 3).slice(1).map((e) => e.id)).toEqual([4, 5, 6, 7, 8]);
  });

  test("a since older than the ring starts with a gap, then everything held", () => {
    const bus = new EventBus({ capacity: 5, subscriberBuffer: 10, firstId: 1 });
    for (let i = 0; i < 8; i++) bus.publish(vmEvent(`v${i}`));
    const events = drain(bus, 1);
    expect(events[0]).toMatchObject({ type: "stream", action: "gap", id: null, last_id: 3 });
    expect(events[0]!.detail).toContain("events 2 to 3 are no longer held");
    expect(events.slice(1).map((e) => e.id)).toEqual([4, 5, 6, 7, 8]);
    // since=0 asks for everything held: no id is 0, so no gap.
    const all = drain(bus, 0);
    expect(all[0]).toMatchObject({ action: "subscribed", last_id: 3 });
    expect(all.slice(1).map((e) => e.id)).toEqual([4, 5, 6, 7, 8]);
  });

  test("a since from the future (another incarnation) is a gap too", () => {
    const bus = new EventBus({ capacity: 5, subscriberBuffer: 10, firstId: 100 });
    bus.publish(vmEvent("a"));
    const events = drain(bus, 5000);
    expect(events[0]).toMatchObject({ action: "gap" });
    expect(events[0]!.detail).toContain("not in this server's history");
    expect(events.slice(1).map((e) => e.id)).toEqual([100]);
  });

  test("without since, only live events; the first line says where they start", () => {
    const bus = new EventBus({ capacity: 5, subscriberBuffer: 10, firstId: 1 });
    bus.publish(vmEvent("old"));
    const sub = bus.subscribe(ALL_EVENTS, { since: null, follow: true });
    bus.publish(vmEvent("new"));
    const { stream, entries } = sub.take();
    expect(stream).toEqual([expect.objectContaining({ action: "subscribed", last_id: 1 })]);
    expect(entries.map((e) => e.event.vm?.name)).toEqual(["new"]);
    sub.close();
    expect(bus.subscriberCount).toBe(0);
  });

  test("a replay the ring overtakes gets a gap where the lost events were", () => {
    const bus = new EventBus({ capacity: 4, subscriberBuffer: 100, firstId: 1 });
    for (let i = 0; i < 4; i++) bus.publish(vmEvent(`v${i}`));
    const sub = bus.subscribe(ALL_EVENTS, { since: 0, follow: true });
    expect(sub.take(1).entries.map((e) => e.event.id)).toEqual([1]);
    for (let i = 0; i < 3; i++) bus.publish(vmEvent(`w${i}`)); // the ring now holds 4..7
    const next = sub.take();
    expect(next.stream[0]).toMatchObject({ action: "gap", last_id: 3 });
    expect(next.stream[0]!.detail).toContain("events 2 to 3 were overwritten");
    expect(sub.take().entries.map((e) => e.event.id)).toEqual([4, 5, 6, 7]);
  });

  test("a reader that stops pulling is cut off past subscriber_buffer, with its resume point", () => {
    const bus = new EventBus({ capacity: 1000, subscriberBuffer: 3, firstId: 1 });
    const sub = bus.subscribe(ALL_EVENTS, { since: null, follow: true });
    let cut = 0;
    sub.onCutOff = () => cut++;
    sub.take();
    bus.publish(vmEvent("a"));
    expect(sub.take().entries.map((e) => e.event.id)).toEqual([1]);
    for (let i = 0; i < 4; i++) bus.publish(vmEvent(`b${i}`)); // 4 behind > 3
    expect(sub.state).toBe("cut-off");
    expect(cut).toBe(1);
    expect(bus.cutOffs).toBe(1);
    expect(bus.subscriberCount).toBe(0);
    const last = sub.take();
    expect(last.entries).toEqual([]);
    expect(last.stream).toEqual([expect.objectContaining({ type: "stream", action: "cut-off", last_id: 1 })]);
    expect(last.stream[0]!.detail).toContain("?since=1");
  });

  test("replayed events do not count against subscriber_buffer; a waiting reader is never behind", async () => {
    const bus = new EventBus({ capacity: 1000, subscriberBuffer: 3, firstId: 1 });
    for (let i = 0; i < 50; i++) bus.publish(vmEvent(`old${i}`));
    const sub = bus.subscribe(ALL_EVENTS, { since: 0, follow: true });
    bus.publish(vmEvent("live")); // 1 live behind: fine
    expect(sub.state).toBe("open");
    expect(sub.take(1000).entries).toHaveLength(51);
    const waiting = sub.wait();
    for (let i = 0; i < 10; i++) bus.publish(vmEvent(`burst${i}`));
    await waiting;
    // Woken by the first; the other nine put it 9 behind while it was not waiting: cut off.
    expect(sub.state).toBe("cut-off");
  });
});

describe("filters", () => {
  const bus = new EventBus({ capacity: 100, subscriberBuffer: 100, firstId: 1 });
  bus.publish(vmEvent("web", "vm-started", "alpha"));
  bus.publish({ ...vmEvent("db", "vm-created", "beta"), type: "operation" });
  bus.publish({ type: "host", action: "host-offline", vm: null, project: null, detail: "gone", request_id: null, host: "h2" });
  const names = (f: ReturnType<typeof parseFilter>) => drain(bus, 0, f).filter((e) => e.type !== "stream").map((e) => e.vm?.name ?? e.host);

  test("by type, VM (name or id) and project; stream events always pass", () => {
    expect(names(parseFilter({ type: "lifecycle,host" }, null))).toEqual(["web", "h2"]);
    expect(names(parseFilter({ vm: "db" }, null))).toEqual(["db"]);
    expect(names(parseFilter({ vm: "vm-web00000" }, null))).toEqual(["web"]);
    expect(names(parseFilter({ project: "beta" }, null))).toEqual(["db"]);
    expect(drain(bus, 0, parseFilter({ vm: "nothing" }, null)).map((e) => e.action)).toEqual(["subscribed"]);
  });

  test("a project token sees its project only, and may not ask for another", () => {
    expect(names(parseFilter({}, "alpha"))).toEqual(["web"]);
    expect(() => parseFilter({ project: "beta" }, "alpha")).toThrow(FilterError);
    expect(names(parseFilter({ project: "alpha" }, "alpha"))).toEqual(["web"]);
  });

  test("unknown types and odd names are refused with the field", () => {
    expect(() => parseFilter({ type: "lifecycle,bogus" }, null)).toThrow(/bogus.*is not an event type/);
    try {
      parseFilter({ vm: "a b" }, null);
      throw new Error("accepted");
    } catch (e) {
      expect(e).toBeInstanceOf(FilterError);
      expect((e as FilterError).field).toBe("vm");
    }
  });
});

describe("stream encodings", () => {
  test("NDJSON: one JSON object per line, live events as they come", async () => {
    const bus = new EventBus({ capacity: 100, subscriberBuffer: 100, firstId: 7 });
    const body = eventStream(bus.subscribe(ALL_EVENTS, { since: null, follow: true }), "ndjson", { heartbeatMs: 60_000 });
    const first = readLines(body, 3);
    bus.publish(vmEvent("a"));
    bus.publish(vmEvent("b"));
    const lines = (await first).map((l) => JSON.parse(l) as ApiEvent);
    expect(lines.map((e) => [e.action, e.id])).toEqual([
      ["subscribed", null],
      ["vm-started", 7],
      ["vm-started", 8],
    ]);
    await body.cancel();
    expect(bus.subscriberCount).toBe(0);
  });

  test("SSE: id and data lines, stream events without an id, heartbeats while quiet", async () => {
    const bus = new EventBus({ capacity: 100, subscriberBuffer: 100, firstId: 7 });
    bus.publish(vmEvent("a"));
    const body = eventStream(bus.subscribe(ALL_EVENTS, { since: 6, follow: true }), "sse", { heartbeatMs: 50 });
    const reader = body.getReader();
    let text = "";
    while (!text.includes(": keepalive")) text += new TextDecoder().decode((await reader.read()).value);
    const blocks = text.split("\n\n").filter((b) => b !== "");
    expect(blocks[0]).toStartWith("data: {");
    expect(JSON.parse(blocks[0]!.slice(6)).action).toBe("subscribed");
    expect(blocks[1]).toStartWith("id: 7\ndata: {");
    expect(JSON.parse(blocks[1]!.split("\n")[1]!.slice(6))).toMatchObject({ id: 7, action: "vm-started" });
    expect(blocks[2]).toBe(": keepalive");
    await reader.cancel();
  });

  test("follow=false ends after the held events", async () => {
    const bus = new EventBus({ capacity: 100, subscriberBuffer: 100, firstId: 1 });
    for (let i = 0; i < 3; i++) bus.publish(vmEvent(`v${i}`));
    const text = await new Response(eventStream(bus.subscribe(ALL_EVENTS, { since: 0, follow: false }), "ndjson", { heartbeatMs: 60_000 })).text();
    expect(text.trim().split("\n").map((l) => JSON.parse(l).id)).toEqual([null, 1, 2, 3]);
  });

  test("a cut-off reader that stopped pulling gets the final event queued and the stream ends", async () => {
    const bus = new EventBus({ capacity: 100, subscriberBuffer: 2, firstId: 1 });
    const body = eventStream(bus.subscribe(ALL_EVENTS, { since: null, follow: true }), "ndjson", { heartbeatMs: 60_000 });
    const reader = body.getReader();
    const first = JSON.parse(new TextDecoder().decode((await reader.read()).value).trim());
    expect(first.action).toBe("subscribed");
    // Not reading now: the stream is not pulled, so the reader falls behind.
    for (let i = 0; i < 5; i++) bus.publish(vmEvent(`v${i}`));
    let text = "";
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value);
    }
    const events = text.trim().split("\n").map((l) => JSON.parse(l) as ApiEvent);
    expect(events.at(-1)).toMatchObject({ type: "stream", action: "cut-off" });
    expect(bus.cutOffs).toBe(1);
  });
});
