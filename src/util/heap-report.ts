/**
 * Memory reports on demand, for telling a leak from a heap that settles: with
 * RCLOUD_HEAP_REPORT_DIR set, each SIGUSR2 runs a full garbage collection and writes
 * heap-<unix ms>.json there — the process's memory figures and the live JavaScript objects
 * counted by type (JSC's heapStats). Inert without the variable. `bun run soak --heap-stats`
 * uses it.
 */
import { renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export interface HeapReport {
  at: string;
  rss_bytes: number;
  /** Bytes of live JavaScript heap after the collection. */
  heap_bytes: number;
  /** Memory the heap holds outside itself (array buffers, strings' backing stores). */
  extra_bytes: number;
  object_count: number;
  object_type_counts: Record<string, number>;
}

export async function heapReport(): Promise<HeapReport> {
  const { heapStats } = await import("bun:jsc");
  Bun.gc(true);
  const stats = heapStats();
  return {
    at: new Date().toISOString(),
    rss_bytes: process.memoryUsage().rss,
    heap_bytes: stats.heapSize,
    extra_bytes: stats.extraMemorySize,
    object_count: stats.objectCount,
    object_type_counts: stats.objectTypeCounts,
  };
}

/** Writes a report into `dir` on every SIGUSR2. */
export function reportHeapOnSignal(dir: string, onError: (message: string) => void): void {
  process.on("SIGUSR2", () => {
    heapReport().then(
      (report) => {
        // Written aside and renamed, so a reader never sees half a report.
        const file = join(dir, `heap-${Date.now()}.json`);
        writeFileSync(`${file}.part`, JSON.stringify(report));
        renameSync(`${file}.part`, file);
      },
      (e: unknown) => onError(`heap report failed: ${(e as Error).message}`),
    );
  });
}
