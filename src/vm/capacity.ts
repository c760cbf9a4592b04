/** What a host may give its VMs: the overcommit rules of vm_defaults (placement.ts applies them). */

/** Most memory one VM may have: the host's total times vm_defaults.memory_overcommit, whole MiB. */
export function memoryLimitMb(hostMemoryMb: number, overcommit: number): number {
  return Math.floor(hostMemoryMb * overcommit);
}
