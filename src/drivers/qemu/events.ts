/**
 * The QEMU driver's lifecycle events, from QMP: SHUTDOWN (guest-initiated), STOP, RESUME,
 * GUEST_PANICKED and RESET, and the process exiting (QMP's socket closes and the PID is gone),
 * in the words libvirt uses for the same things (a stopped domain is "shutdown", "destroyed",
 * "crashed" or "failed").
 */
import type { QmpEvent } from "../../qmp/index.ts";
import type { DriverEvent } from "../types.ts";

/** The QMP events that say something about a VM's lifecycle. */
export const LIFECYCLE_QMP_EVENTS = ["SHUTDOWN", "STOP", "RESUME", "GUEST_PANICKED", "RESET"];

type Lifecycle = Pick<DriverEvent, "action" | "detail">;

/** What a QMP event means for the VM; null when nothing to report. */
export function qmpLifecycle(ev: QmpEvent): Lifecycle | null {
  const reason = typeof ev.data["reason"] === "string" ? ev.data["reason"] : null;
  switch (ev.event) {
    case "SHUTDOWN":
      // A host-side quit is reported by the exit that follows ("destroyed"), as libvirt does.
      return ev.data["guest"] === true ? { action: "vm-shutdown", detail: reason ?? "guest" } : null;
    case "STOP":
      return { action: "vm-paused", detail: "paused" };
    case "RESUME":
      return { action: "vm-resumed", detail: "unpaused" };
    case "GUEST_PANICKED": {
      const info = ev.data["action"];
      return { action: "vm-crashed", detail: typeof info === "string" ? `panicked (${info})` : "panicked" };
    }
    case "RESET":
      return { action: "vm-rebooted", detail: reason ?? "reset" };
    default:
      return null;
  }
}

/** What QEMU's exit is called: from its last SHUTDOWN reason, a panic, and whether rcloud stopped it. */
export function exitDetail(shutdownReason: string | null, panicked: boolean, byRcloud: boolean): string {
  if (panicked || shutdownReason === "guest-panic") return "crashed";
  if (shutdownReason === "guest-shutdown") return "shutdown";
  if (shutdownReason !== null && shutdownReason.startsWith("host-")) return "destroyed";
  return byRcloud ? "destroyed" : "failed";
}

/** Listeners of one driver; a listener that throws does not keep the others from hearing. */
export class DriverListeners {
  private readonly listeners = new Set<(e: DriverEvent) => void>();

  add(listener: (e: DriverEvent) => void): () => void {
    this.listeners.add(listener);
    return () => void this.listeners.delete(listener);
  }

  emit(e: DriverEvent): void {
    for (const l of this.listeners) {
      try {
        l(e);
      } catch {
        // a listener's failure is its own
      }
    }
  }
}
