/** Placement (src/vm/placement.ts): the overcommit rules, policies and groups; and the host memory figures both drivers report. */
import { describe, expect, test } from "bun:test";
import { hostMemoryMb, memoryStatsFromLibvirt, memoryStatsFromMeminfo } from "../../src/util/host-memory.ts";
import { memoryLimitMb } from "../../src/vm/capacity.ts";
import { type Placement, type PlacementCandidate, type PlacementRequest, place } from "../../src/vm/placement.ts";

const host = (name: string, over: Partial<PlacementCandidate> = {}): PlacementCandidate => ({
  name,
  state: "online",
  hasImage: true,
  cpus: 4,
  memoryMb: 8192,
  vcpuOvercommit: 4,
  memoryOvercommit: 1,
  allocated: { vcpus: 0, memoryMb: 0 },
  groupMembers: 0,
  ...over,
});
const vm = (over: Partial<PlacementRequest> = {}): PlacementRequest => ({ vcpus: 1, memoryMb: 1024, image: "debian13", pinned: null, ...over });
const refusals = (p: Placement) => ("refusals" in p ? p.refusals : []);

describe("vm_defaults.memory_overcommit", () => {
  test("a host may give its memory times the ratio, in whole MiB", () => {
    expect(memoryLimitMb(4825, 1)).toBe(4825);
    expect(memoryLimitMb(4825, 2)).toBe(9650);
    expect(memoryLimitMb(1001, 1.5)).toBe(1501);
    expect(memoryLimitMb(24105, 0.5)).toBe(12052);
    expect(place([host("a", { memoryMb: 8192 })], vm({ memoryMb: 8192 }), "spread")).toEqual({ host: "a" });
    expect(place([host("a", { memoryMb: 4825, memoryOvercommit: 2 })], vm({ memoryMb: 8192 }), "spread")).toEqual({ host: "a" });
  });

  test("beyond the limit, counting what is allocated, the refusal names the key, the limit and the host's memory", () => {
    const [r] = refusals(place([host("a", { memoryMb: 4825, allocated: { vcpus: 1, memoryMb: 1000 } })], vm({ memoryMb: 4000 }), "spread"));
    expect(r).toMatchObject({ host: "a", resource: "memory_mb" });
    expect(r!.reason).toContain("vm_defaults.memory_overcommit");
    expect(r!.reason).toContain("4825 MiB");
    expect(r!.reason).toContain("5000 MiB");
    expect(refusals(place([host("a", { memoryMb: 24105, memoryOvercommit: 0.5 })], vm({ memoryMb: 12053 }), "spread"))[0]!.reason).toContain("12052 MiB");
  });

  test("vCPUs: the host's CPUs × vcpu_overcommit, summed over its VMs", () => {
    const h = host("a", { cpus: 2, vcpuOvercommit: 4, allocated: { vcpus: 7, memoryMb: 0 } });
    expect(place([h], vm({ vcpus: 1 }), "spread")).toEqual({ host: "a" });
    const [r] = refusals(place([h], vm({ vcpus: 2 }), "spread"));
    expect(r).toMatchObject({ resource: "vcpus" });
    expect(r!.reason).toContain("vm_defaults.vcpu_overcommit");
  });
});

describe("placement", () => {
  test("spread picks the host with the least memory allocated as a fraction; pack the most that still fits", () => {
    const hosts = [host("a", { allocated: { vcpus: 0, memoryMb: 4096 } }), host("b", { memoryMb: 16384, allocated: { vcpus: 0, memoryMb: 4096 } }), host("c", { allocated: { vcpus: 0, memoryMb: 6144 } })];
    expect(place(hosts, vm(), "spread")).toEqual({ host: "b" });
    expect(place(hosts, vm(), "pack")).toEqual({ host: "c" });
    expect(place(hosts, vm({ memoryMb: 3000 }), "pack")).toEqual({ host: "a" });
  });

  test("ties go to the host listed first; a stream of equal creates spreads evenly", () => {
    const hosts = [host("a"), host("b"), host("c")];
    const counts: Record<string, number> = { a: 0, b: 0, c: 0 };
    for (let i = 0; i < 60; i++) {
      const p = place(hosts, vm({ memoryMb: 128 }), "spread");
      if (!("host" in p)) throw new Error("refused");
      counts[p.host]!++;
      hosts.find((h) => h.name === p.host)!.allocated.memoryMb += 128;
    }
    expect(counts).toEqual({ a: 20, b: 20, c: 20 });
  });

  test("a placement group goes to the hosts with the fewest members first, whatever the policy", () => {
    const hosts = [host("a", { groupMembers: 1 }), host("b", { groupMembers: 0, allocated: { vcpus: 0, memoryMb: 7000 } }), host("c", { groupMembers: 1 })];
    expect(place(hosts, vm(), "spread")).toEqual({ host: "b" });
  });

  test("offline, cordoned and image-less hosts are refused with the reason; a pin considers only its host", () => {
    const hosts = [host("a", { state: "offline" }), host("b", { state: "cordoned" }), host("c", { hasImage: false }), host("d", { cpus: null, memoryMb: null })];
    const rs = refusals(place(hosts, vm(), "spread"));
    expect(rs.map((r) => [r.host, r.resource])).toEqual([
      ["a", "host"],
      ["b", "host"],
      ["c", "image"],
      ["d", "host"],
    ]);
    expect(rs[1]!.reason).toContain("cordoned");
    expect(rs[2]!.reason).toContain("/api/v1/images/debian13/copy");
    expect(place([...hosts, host("e")], vm({ pinned: "e" }), "spread")).toEqual({ host: "e" });
    expect(refusals(place([...hosts, host("e")], vm({ pinned: "b" }), "spread")).map((r) => r.host)).toEqual(["b"]);
  });
});

describe("host memory", () => {
  const meminfo = "MemTotal:       24683520 kB\nMemFree:        23433216 kB\nMemAvailable:   23936000 kB\nBuffers:           51200 kB\nCached:           716800 kB\nSwapCached:            0 kB\n";

  test("/proc/meminfo and libvirt's node memory stats give the same figures", () => {
    const fromProc = memoryStatsFromMeminfo(meminfo);
    expect(fromProc).toEqual({ total: 24683520, free: 23433216, buffers: 51200, cached: 716800 });
    const fromLibvirt = memoryStatsFromLibvirt([
      { field: "total", value: 24683520n },
      { field: "free", value: 23433216n },
      { field: "buffers", value: 51200n },
      { field: "cached", value: 716800n },
    ]);
    expect(fromLibvirt).toEqual(fromProc);
    expect(hostMemoryMb(fromProc)).toEqual({ totalMb: 24105, availableMb: Math.floor((23433216 + 51200 + 716800) / 1024) });
  });

  test("stats without a total are no answer (the driver falls back to NODE_GET_INFO)", () => {
    expect(memoryStatsFromLibvirt([])).toBeNull();
    expect(memoryStatsFromLibvirt([{ field: "free", value: 1024n }])).toBeNull();
    expect(memoryStatsFromLibvirt([{ field: "total", value: 2048n }])).toEqual({ total: 2048, free: 0, buffers: 0, cached: 0 });
  });
});
