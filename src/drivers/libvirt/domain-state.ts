/** libvirt's domain states and flags as rcloud names and uses them. */
import { GUEST_PANICKED } from "../shared/crash.ts";
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

/** VIR_DOMAIN_CRASHED_PANICKED, VIR_DOMAIN_SHUTOFF_CRASHED. */
const CRASHED_PANICKED = 1;
const SHUTOFF_CRASHED = 3;

/**
 * Why a domain crashed, from its state and reason: held after a panic (on_crash preserve),
 * or powered off after one (on_crash destroy); null when it did not crash.
 */
export function crashReasonOf(state: number, reason: number): string | null {
  if (state === DomainState.CRASHED) return reason === CRASHED_PANICKED ? GUEST_PANICKED : `crashed (libvirt reason ${reason})`;
  if (state === DomainState.SHUTOFF && reason === SHUTOFF_CRASHED) return GUEST_PANICKED;
  return null;
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

/** 8-4-4-4-12 hex digits; a listing makes one per domain, so by table rather than through Buffer. */
export function uuidString(u: Uint8Array): string {
  let s = "";
  for (let i = 0; i < 16; i++) {
    s += HEX[u[i]!];
    if (i === 3 || i === 5 || i === 7 || i === 9) s += "-";
  }
  return s;
}

export function uuidBytes(u: string): Uint8Array {
  return Buffer.from(u.replace(/-/g, ""), "hex");
}
