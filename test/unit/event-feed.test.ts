/**
 * The VM event feed (src/vm/event-feed.ts) when a name is reused: a driver event is placed on
 * the VM whose id it carries, never on another VM that has (or had) the same name.
 */
import { expect, test } from "bun:test";
import type { DriverEvent, VmDriver } from "../../src/drivers/types.ts";
import type { EventInput } from "../../src/events/bus.ts";
import { type KnownVm, VmEventFeed } from "../../src/vm/event-feed.ts";

const OLD: KnownVm = { id: "vm-0000000a", name: "x", owner: null, host: "h1" };
const NEW: KnownVm = { id: "vm-0000000b", name: "x", owner: null, host: "h1" };

/** A feed watching one host whose driver reports events; `lookup` answers what the host has now. */
function setup(lookup: () => Promise<KnownVm | null>) {
  const published: EventInput[] = [];
  const feed = new VmEventFeed({ publish: (e) => void published.push(e) });
  let emit: (e: DriverEvent) => void = () => {};
  const driver = { subscribe: (cb: (e: DriverEvent) => void) => ((emit = cb), () => {}) } as unknown as VmDriver;
  feed.watch("h1", driver, lookup);
  const settled = () => Bun.sleep(5);
  const seen = () => published.map((e) => `${e.action} ${e.vm?.id}`);
  return { feed, emit: (e: DriverEvent) => emit(e), settled, seen };
}

const ev = (action: DriverEvent["action"], vmId: string | null): DriverEvent => ({ vmName: "x", vmId, action, detail: "d" });

test("an event of a VM whose name the feed remembers for another VM: looked up again, published with its id", async () => {
  const f = setup(async () => NEW);
  f.feed.remember(OLD);
  f.emit(ev("vm-started", NEW.id));
  await f.settled();
  expect(f.seen()).toEqual([`vm-started ${NEW.id}`]);
});

test("vm-undefined of an older VM of that name neither deletes the VM known now nor says it was deleted", async () => {
  const f = setup(async () => {
    throw new Error("not asked: the feed knows the VM");
  });
  f.feed.remember(NEW);
  f.emit(ev("vm-undefined", OLD.id));
  f.emit(ev("vm-started", null));
  await f.settled();
  expect(f.seen()).toEqual([`vm-started ${NEW.id}`]);
});

test("events held during a create: another VM's vm-undefined of that name is not the new VM's deletion", async () => {
  const f = setup(async () => NEW);
  f.feed.remember(OLD);
  f.feed.beginCreate("x");
  f.emit(ev("vm-undefined", OLD.id)); // the old VM's, late
  f.feed.created(NEW, null, true);
  f.emit(ev("vm-started", null));
  await f.settled();
  expect(f.seen()).toEqual([`vm-created ${NEW.id}`, `vm-started ${NEW.id}`]);
});

test("the delete of a VM, published after a new VM of its name is known, leaves the new one known", async () => {
  const f = setup(async () => {
    throw new Error("the host is away");
  });
  f.feed.deleted(OLD, "req-1");
  f.feed.remember(NEW); // created before the old one's vm-deleted went out
  f.emit(ev("vm-started", null));
  await f.settled();
  expect(f.seen()).toEqual([`vm-deleted ${OLD.id}`, `vm-started ${NEW.id}`]);
});
