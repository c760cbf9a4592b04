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

/** VIR_DOMAIN_CRASHED_PANICKED. */
const CRASHED_PANICKED = 1;

/**
 * Why a domain crashed, from its state and reason: held after a panic (on_crash preserve);
 * null otherwise. Powered off with reason "crashed" is left to the service (src/vm/crashes.ts):
 * libvirt says so both after a panic with on_crash destroy and when QEMU died, and only the
 * event that came with it tells which.
 */
export function crashReasonOf(state: number, reason: number): string | null {
  if (state === DomainState.CRASHED) return reason === CRASHED_PANICKED ? GUEST_PANICKED : `crashed (libvirt reason ${reason})`;
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

/** Texts UuidTexts keeps per generation; it holds at most two generations. */
export const UUID_TEXTS_GENERATION = 4096;

interface UuidText {
  bytes: Uint8Array;
  text: string;
}

/**
 * uuidString() with the texts kept: a listing meets the same UUIDs every time, and a string
 * met before is cheaper to look up by in the maps keyed by it (the engine keeps a string's
 * hash with it). Keyed by the UUID's first 6 bytes as a number, the rest compared. Kept in
 * two generations: when the current one is full it becomes the previous one, and a text met
 * again is carried into the current one, so the domains a host has keep their texts while
 * those of domains long gone are dropped (a soak found every UUID ever seen kept, up to
 * 100,000 of them, before this).
 */
export class UuidTexts {
  private current = new Map<number, UuidText>();
  private previous = new Map<number, UuidText>();

  of(u: Uint8Array): string {
    const key = (((u[0]! << 24) | (u[1]! << 16) | (u[2]! << 8) | u[3]!) >>> 0) * 65536 + ((u[4]! << 8) | u[5]!);
    const hit = this.current.get(key);
    if (hit && sameBytes(hit.bytes, u)) return hit.text;
    const old = this.previous.get(key);
    const entry = old && sameBytes(old.bytes, u) ? old : { bytes: u.slice(), text: uuidString(u) };
    if (this.current.size >= UUID_TEXTS_GENERATION) {
      this.previous = this.current;
      this.current = new Map();
    }
    this.current.set(key, entry);
    return entry.text;
  }

  /** Texts held (both generations), for tests. */
  get size(): number {
    return this.current.size + this.previous.size;
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
