/** libvirt's domain states and flags as rcloud names and uses them. */
import type { VmState } from "../types.ts";

export const DomainState = { NOSTATE: 0, RUNNING: 1, BLOCKED: 2, PAUSED: 3, SHUTDOWN: 4, SHUTOFF: 5, CRASHED: 6, PMSUSPENDED: 7 } as const;
/** Undefine with managed save, snapshot metadata, NVRAM and checkpoint metadata. */
export const UNDEFINE_ALL = 1 | 2 | 4 | 16;

export function stateName(s: number): VmState {
  switch (s) {
    case DomainState.RUNNING:
    case DomainState.BLOCKED:
      return "running";
    case DomainState.PAUSED:
      return "paused";
    case DomainState.SHUTDOWN:
      return "stopping";
    case DomainState.SHUTOFF:
      return "stopped";
    case DomainState.CRASHED:
      return "crashed";
    case DomainState.PMSUSPENDED:
      return "suspended";
    default:
      return "unknown";
  }
}

export function uuidString(u: Uint8Array): string {
  const h = Buffer.from(u).toString("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
