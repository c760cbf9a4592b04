/**
 * Host memory as both drivers report it. libvirt's node memory stats for all cells
 * (virNodeGetMemoryStats) are Linux's /proc/meminfo fields under other names, in KiB, so the
 * qemu driver reads /proc/meminfo and both go through here: the same host reports the same
 * numbers whichever driver runs it.
 */

/** KiB values of the fields libvirt names total, free, buffers and cached. */
export interface MemoryStatsKib {
  total: number;
  free: number;
  buffers: number;
  cached: number;
}

/** Total memory, and what a new guest could use: free plus buffers and page cache (reclaimable). */
export function hostMemoryMb(kib: MemoryStatsKib): { totalMb: number; availableMb: number } {
  return { totalMb: Math.floor(kib.total / 1024), availableMb: Math.floor((kib.free + kib.buffers + kib.cached) / 1024) };
}

/** /proc/meminfo's MemTotal, MemFree, Buffers and Cached are libvirt's total, free, buffers and cached. */
export function memoryStatsFromMeminfo(text: string): MemoryStatsKib {
  const kib = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+)`, "m").exec(text)?.[1] ?? 0);
  return { total: kib("MemTotal"), free: kib("MemFree"), buffers: kib("Buffers"), cached: kib("Cached") };
}

/** libvirt's node memory stats (KiB); null without a total (then the caller falls back to NODE_GET_INFO). */
export function memoryStatsFromLibvirt(params: readonly { field: string; value: bigint }[]): MemoryStatsKib | null {
  const kib = new Map(params.map((p) => [p.field, Number(p.value)]));
  const total = kib.get("total");
  if (total === undefined || total <= 0) return null;
  return { total, free: kib.get("free") ?? 0, buffers: kib.get("buffers") ?? 0, cached: kib.get("cached") ?? 0 };
}
