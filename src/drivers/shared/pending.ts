/** A VM's pending changes: what its definition (next start) has that the running VM does not. */
import type { PendingChanges, VmBoot } from "../types.ts";

export interface VmSizes {
  vcpus: number;
  maxVcpus: number;
  memoryMb: number;
  maxMemoryMb: number;
  boot: VmBoot | null;
}

/** What `next` has that `now` does not (only the fields that differ); null when nothing. */
export function pendingChanges(next: VmSizes, now: VmSizes): PendingChanges | null {
  const p: PendingChanges = {};
  if (next.vcpus !== now.vcpus) p.vcpus = next.vcpus;
  if (next.maxVcpus !== now.maxVcpus) p.maxVcpus = next.maxVcpus;
  if (next.memoryMb !== now.memoryMb) p.memoryMb = next.memoryMb;
  if (next.maxMemoryMb !== now.maxMemoryMb) p.maxMemoryMb = next.maxMemoryMb;
  const boot = (b: VmBoot | null) => (b ? [b.kernel, b.initrd, b.cmdline].join("\0") : null);
  if (boot(next.boot) !== boot(now.boot)) p.boot = next.boot;
  return Object.keys(p).length > 0 ? p : null;
}
