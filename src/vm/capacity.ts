/** What one VM may ask of the host: the overcommit rules of vm_defaults. */
import { ServiceError } from "../api-types/errors.ts";

/** Most memory one VM may have: the host's total times vm_defaults.memory_overcommit, whole MiB. */
export function memoryLimitMb(hostMemoryMb: number, overcommit: number): number {
  return Math.floor(hostMemoryMb * overcommit);
}

/** Refuses a VM bigger than memoryLimitMb, naming the key that would allow it. */
export function checkMemoryFits(memoryMb: number, hostMemoryMb: number, overcommit: number): void {
  const limit = memoryLimitMb(hostMemoryMb, overcommit);
  if (memoryMb <= limit) return;
  throw new ServiceError(
    "capacity_exceeded",
    `memory: ${memoryMb} MiB exceeds the host's ${limit} MiB (its memory × ${overcommit}, vm_defaults.memory_overcommit; the host has ${hostMemoryMb} MiB)`,
    { field: "memory_mb", host_memory_mb: hostMemoryMb, memory_limit_mb: limit },
  );
}
