import { expect, test } from "bun:test";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { heapReport, reportHeapOnSignal, type HeapReport } from "../../src/util/heap-report.ts";

test("a heap report counts live objects by type after a collection", async () => {
  const kept = Array.from({ length: 5000 }, () => new Map());
  const report = await heapReport();
  expect(report.heap_bytes).toBeGreaterThan(0);
  expect(report.rss_bytes).toBeGreaterThan(report.heap_bytes);
  expect(report.object_type_counts.Map ?? 0).toBeGreaterThanOrEqual(kept.length);
  expect(report.object_count).toBeGreaterThan(kept.length);
});

test("SIGUSR2 writes a report into the directory", async () => {
  const dir = mkdtempSync(join(tmpdir(), "rc-heap-"));
  try {
    reportHeapOnSignal(dir, (m) => {
      throw new Error(m);
    });
    process.kill(process.pid, "SIGUSR2");
    let files: string[] = [];
    for (let i = 0; i < 100 && files.length === 0; i++) {
      await Bun.sleep(50);
      files = readdirSync(dir).filter((f) => /^heap-\d+\.json$/.test(f));
    }
    expect(files).toHaveLength(1);
    const report = JSON.parse(readFileSync(join(dir, files[0]!), "utf8")) as HeapReport;
    expect(report.object_count).toBeGreaterThan(0);
    expect(Object.keys(report.object_type_counts).length).toBeGreaterThan(10);
  } finally {
    process.removeAllListeners("SIGUSR2");
    rmSync(dir, { recursive: true, force: true });
  }
});
