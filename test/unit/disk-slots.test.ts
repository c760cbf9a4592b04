/** The per-bus disk slot allocator shared by both drivers (src/drivers/disk-slots.ts). */
import { describe, expect, test } from "bun:test";
import { reportedBus } from "../../src/api-types/values.ts";
import { allocateDiskSlots, diskName, SATA_PORTS_PER_CONTROLLER, type DiskLayout, type SlotBus } from "../../src/drivers/shared/disk-slots.ts";

const BUSES: SlotBus[] = ["virtio", "nvme", "scsi", "sata"];

/** libvirt's virDiskNameToIndex, written independently: "vda" → 0, "sdaa" → 26. */
function nameToIndex(name: string): number {
  let idx = 0;
  [...name.slice(2)].forEach((ch, i) => (idx = (idx + (i > 0 ? 1 : 0)) * 26 + (ch.charCodeAt(0) - 97)));
  return idx;
}

function all(l: DiskLayout) {
  return [l.root, ...(l.seed ? [l.seed] : []), ...l.data];
}

/** Every invariant the domain XML needs, for any layout. */
function checkLayout(l: DiskLayout, data: SlotBus[], seed: boolean) {
  expect(l.root).toEqual({ bus: "virtio", target: "vda", ordinal: 0, drive: null });
  expect(l.data.map((s) => s.bus)).toEqual(data);
  if (seed) expect(l.seed).toMatchObject({ bus: "sata", target: "sda", drive: { controller: 0, unit: 0 } });
  else expect(l.seed).toBeNull();
  const slots = all(l);
  // libvirt target names: unique across all buses, vd* for virtio, sd* for scsi and sata, none for NVMe
  const targets = slots.map((s) => s.target).filter((t) => t !== null);
  expect(new Set(targets).size).toBe(targets.length);
  for (const s of slots) {
    if (s.bus === "virtio") expect(s.target).toMatch(/^vd[a-z]+$/);
    else if (s.bus === "nvme") expect(s.target).toBeNull();
    else expect(s.target).toMatch(/^sd[a-z]+$/);
  }
  // ordinals count each bus from 0 in order
  for (const bus of BUSES) expect(slots.filter((s) => s.bus === bus).map((s) => s.ordinal)).toEqual(slots.filter((s) => s.bus === bus).map((_, i) => i));
  // drive addresses: unique per bus; SCSI all on the one virtio-scsi controller; SATA within 6 ports
  for (const bus of ["scsi", "sata"] as const) {
    const addrs = slots.filter((s) => s.bus === bus).map((s) => `${s.drive!.controller}:${s.drive!.unit}`);
    expect(new Set(addrs).size).toBe(addrs.length);
  }
  for (const s of slots.filter((x) => x.bus === "scsi")) expect(s.drive).toEqual({ controller: 0, unit: s.ordinal });
  for (const s of slots.filter((x) => x.bus === "sata")) expect(s.drive!.unit).toBeLessThan(SATA_PORTS_PER_CONTROLLER);
  for (const s of slots.filter((x) => x.bus === "virtio" || x.bus === "nvme")) expect(s.drive).toBeNull();
}

describe("disk names", () => {
  test("follow libvirt's order: a..z, aa..zz, aaa", () => {
    expect([0, 1, 25, 26, 27, 51, 52, 701, 702].map((n) => diskName("vd", n))).toEqual(["vda", "vdb", "vdz", "vdaa", "vdab", "vdaz", "vdba", "vdzz", "vdaaa"]);
    for (let n = 0; n < 800; n++) expect(nameToIndex(diskName("sd", n))).toBe(n);
  });

  test("refuse a negative or fractional index", () => {
    expect(() => diskName("vd", -1)).toThrow(RangeError);
    expect(() => diskName("vd", 1.5)).toThrow(RangeError);
  });
});

describe("disk slots", () => {
  test("a key and one data disk of each bus: seed sda, SCSI and SATA after it", () => {
    const l = allocateDiskSlots(["virtio", "nvme", "scsi", "sata"], { seed: true });
    checkLayout(l, ["virtio", "nvme", "scsi", "sata"], true);
    expect(l.data).toEqual([
      { bus: "virtio", target: "vdb", ordinal: 1, drive: null },
      { bus: "nvme", target: null, ordinal: 0, drive: null },
      { bus: "scsi", target: "sdb", ordinal: 0, drive: { controller: 0, unit: 0 } },
      { bus: "sata", target: "sdc", ordinal: 1, drive: { controller: 0, unit: 1 } },
    ]);
  });

  test("SCSI disks with a key (vm_defaults.disk_driver scsi): the seed keeps sda, no target twice", () => {
    const l = allocateDiskSlots(["scsi", "scsi"], { seed: true });
    checkLayout(l, ["scsi", "scsi"], true);
    expect(l.data.map((s) => s.target)).toEqual(["sdb", "sdc"]);
  });

  test("without a seed the first SCSI or SATA disk is sda", () => {
    expect(allocateDiskSlots(["sata", "scsi"], { seed: false }).data.map((s) => s.target)).toEqual(["sda", "sdb"]);
  });

  test("32 disks of one bus: vdaa/sdaa names, SCSI LUNs on one controller, SATA onto further AHCI controllers", () => {
    const virtio = allocateDiskSlots(Array(32).fill("virtio"), { seed: true });
    checkLayout(virtio, Array(32).fill("virtio"), true);
    expect(virtio.data.at(-1)!.target).toBe("vdag"); // root vda + 32
    const scsi = allocateDiskSlots(Array(32).fill("scsi"), { seed: true });
    checkLayout(scsi, Array(32).fill("scsi"), true);
    expect(scsi.data.at(-1)).toEqual({ bus: "scsi", target: "sdag", ordinal: 31, drive: { controller: 0, unit: 31 } });
    const sata = allocateDiskSlots(Array(32).fill("sata"), { seed: true });
    checkLayout(sata, Array(32).fill("sata"), true);
    // the seed holds port 0 of the built-in controller; data disk 5 is the first on controller 1
    expect(sata.data[4]!.drive).toEqual({ controller: 0, unit: 5 });
    expect(sata.data[5]!.drive).toEqual({ controller: 1, unit: 0 });
    expect(sata.data[31]!.drive).toEqual({ controller: 5, unit: 2 });
    const nvme = allocateDiskSlots(Array(32).fill("nvme"), { seed: false });
    expect(nvme.data.map((s) => s.ordinal)).toEqual(Array.from({ length: 32 }, (_, i) => i));
  });

  test("every mix of up to 4 data disks, with and without a seed, and random long mixes", () => {
    const mixes: SlotBus[][] = [[]];
    for (let len = 1; len <= 4; len++) for (const m of mixes.filter((x) => x.length === len - 1)) for (const b of BUSES) mixes.push([...m, b]);
    let seed = 1;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (let i = 0; i < 200; i++) mixes.push(Array.from({ length: 1 + Math.floor(rand() * 40) }, () => BUSES[Math.floor(rand() * 4)]!));
    for (const m of mixes) for (const s of [false, true]) checkLayout(allocateDiskSlots(m, { seed: s }), m, s);
  });

  test("the API's ide is SATA", () => {
    expect(["virtio", "nvme", "scsi", "ide"].map((b) => reportedBus(b as "ide"))).toEqual(["virtio", "nvme", "scsi", "sata"]);
  });
});
