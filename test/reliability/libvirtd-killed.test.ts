/**
 * Fault 2 of docs/reliability.md, a shorter round: libvirtd (the rig's `fault` daemon,
 * qemu:///system, TCG) SIGKILLed during concurrent creates that start their VMs, then
 * started again. Every request is answered (201, or 503 with a message) within its
 * deadline, none hangs; every VM answered 201 exists and runs once libvirtd is back; after
 * reconcile nothing else remains. `bun run chaos` does the same with 50 creates.
 */
import { afterAll, expect, test } from "bun:test";
import { ChaosSite, libvirtdKilledDuringCreates } from "../helpers/chaos.ts";
import { rig, rigCommand } from "../helpers/rig.ts";

let site: ChaosSite | null = null;

afterAll(async () => {
  if (!rig().instances.fault.libvirtdPid) rigCommand("start-instance", "fault");
  await site?.cleanup();
}, 120_000);

test("libvirtd killed during 12 creates: all answered in time, every 201 runs, no orphans", async () => {
  site = new ChaosSite("libvirt", { instance: "fault" });
  await site.start();
  const o = await libvirtdKilledDuringCreates(site, 12, 120_000, "lk");
  console.log(`libvirtd killed: ${JSON.stringify({ ...o, badAnswers: o.badAnswers.length })}`);
  // The kill came after some VMs were made and while others were still being made.
  expect(o.createdBeforeKill).toBeGreaterThanOrEqual(2);
  expect(o.openAtKill).toBeGreaterThan(0);
  expect(o.hung).toBe(0);
  expect(o.badAnswers).toEqual([]);
  expect(o.created + o.refused).toBe(12);
  expect(o.lost).toEqual([]);
  expect(o.orphans).toEqual([]);
  await site.stopChildren();
}, 300_000);
