/** Host facts for the qemu driver: memory from /proc/meminfo, storage via statfs, QEMU's version. */
import { readFileSync, statfsSync } from "node:fs";
import { hostMemoryMb, memoryStatsFromMeminfo } from "../../util/host-memory.ts";
import { DriverError } from "../types.ts";
import { run } from "./process.ts";

/** The same figures the libvirt driver gets from NODE_GET_MEMORY_STATS (util/host-memory.ts). */
export function meminfo(): { totalMb: number; availableMb: number } {
  return hostMemoryMb(memoryStatsFromMeminfo(readFileSync("/proc/meminfo", "utf8")));
}

export function storage(path: string): { capacityBytes: number; allocationBytes: number; availableBytes: number } {
  const s = statfsSync(path);
  return { capacityBytes: s.blocks * s.bsize, allocationBytes: (s.blocks - s.bfree) * s.bsize, availableBytes: s.bavail * s.bsize };
}

/** `qemu-system-x86_64 --version` → "7.2.22"; also proves the binary runs. */
export async function qemuVersion(binary: string): Promise<string> {
  const out = await run([binary, "--version"], `checking ${binary}`, 15_000);
  const v = /version\s+(\d+\.\d+(?:\.\d+)?)/i.exec(out)?.[1];
  if (!v) throw new DriverError("unavailable", `${binary} --version did not print a QEMU version: ${out.trim().slice(0, 200)}`);
  return v;
}
