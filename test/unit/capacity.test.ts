/** The memory overcommit rule and the host memory figures both drivers report. */
import { describe, expect, test } from "bun:test";
import { hostMemoryMb, memoryStatsFromLibvirt, memoryStatsFromMeminfo } from "../../src/util/host-memory.ts";
import { checkMemoryFits, memoryLimitMb } from "../../src/vm/capacity.ts";
import { ServiceError } from "../../src/api-types/errors.ts";

function refusal(memoryMb: number, hostMb: number, overcommit: number): ServiceError {
  try {
    checkMemoryFits(memoryMb, hostMb, overcommit);
  } catch (e) {
    if (e instanceof ServiceError) return e;
    throw e;
  }
  throw new Error(`${memoryMb} MiB on a ${hostMb} MiB host × ${overcommit} was not refused`);
}

describe("vm_defaults.memory_overcommit", () => {
  test("a VM may have up to the host's memory times the ratio, in whole MiB", () => {
    expect(memoryLimitMb(4825, 1)).toBe(4825);
    expect(memoryLimitMb(4825, 2)).toBe(9650);
    expect(memoryLimitMb(1001, 1.5)).toBe(1501);
    expect(memoryLimitMb(24105, 0.5)).toBe(12052);
    expect(() => checkMemoryFits(8192, 8192, 1)).not.toThrow();
    expect(() => checkMemoryFits(8192, 4825, 2)).not.toThrow();
  });

  test("beyond the limit the refusal names the key, the limit and the host's memory", () => {
    const e = refusal(8192, 4825, 1);
    expect(e.code).toBe("capacity_exceeded");
    expect(e.message).toContain("vm_defaults.memory_overcommit");
    expect(e.message).toContain("4825 MiB");
    expect(e.details).toMatchObject({ field: "memory_mb", host_memory_mb: 4825, memory_limit_mb: 4825 });
    expect(refusal(1502, 1001, 1.5).details).toMatchObject({ memory_limit_mb: 1501 });
    expect(refusal(12053, 24105, 0.5).message).toContain("12052 MiB");
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
