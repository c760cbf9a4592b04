/**
 * Crashed VMs, the same on both drivers: what a record shows (state `crashed` and why), and
 * the names of guest memory dumps. A crash is shown from the moment it happens until the VM's
 * next start, also when the VM was powered off after it (on_panic: stop).
 */
import { DUMP_NAME_PATTERN, type VmState } from "../../api-types/values.ts";

/** crash_reason of a guest panic (the pvpanic device fired). */
export const GUEST_PANICKED = "guest panicked";
/** crash_reason when the hypervisor says crashed without saying why. */
export const CRASHED_UNKNOWN = "the hypervisor reports the VM crashed";

const DUMP_RE = new RegExp(DUMP_NAME_PATTERN);

/**
 * The state and crash_reason a record shows: `live` is what the hypervisor says now, `reason`
 * the crash recorded since the last start (null: none). A stopped VM with a recorded crash is
 * crashed; a running one is not (it was restarted).
 */
export function crashState(live: VmState, reason: string | null): { state: VmState; crashReason: string | null } {
  if (live === "crashed") return { state: "crashed", crashReason: reason ?? CRASHED_UNKNOWN };
  if (live === "stopped" && reason !== null) return { state: "crashed", crashReason: reason };
  return { state: live, crashReason: null };
}

/** `dump-<UTC date and time>.elf`, e.g. dump-20261202T160501Z.elf. */
export function dumpName(at: Date): string {
  return `dump-${at.toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z")}.elf`;
}

export function isDumpName(name: string): boolean {
  return DUMP_RE.test(name);
}
