/**
 * VMs that crashed, and what rcloud does about it (`vm_defaults.on_crash`). The one place
 * that records `crashed` and `crash_reason`: QEMU dying under a VM (killed, out of memory, an
 * assertion) reaches it through the drivers' events here; a guest panic reports through
 * `recordCrash` too.
 *
 * - `restart`: the VM is started again at once, and again after a pause if that start fails
 *   (VmService.restartCrashed); its crash_reason stays until it stops again.
 * - `stop`: it stays stopped, with its crash_reason.
 * - `preserve`: it shows as `crashed` with its crash_reason until someone starts or deletes it.
 *
 * Kept in memory: after an rcloud restart a crashed VM shows as stopped (libvirt and the
 * QEMU driver keep no crash marker of their own that survives a libvirtd restart either).
 */
import type { OnCrash, VmState } from "../api-types/values.ts";
import type { DriverEvent } from "../drivers/types.ts";

export interface CrashRecord {
  reason: string;
  at: string;
  /** qemu: the process died (on_crash applies); panic: the guest panicked (on_panic, the drivers' own). */
  kind: "qemu" | "panic";
}

/** crash_reason of a guest panic, as the drivers say it (src/drivers/shared/crash.ts). */
const GUEST_PANICKED = "guest panicked";

/** Driver events that mean "the QEMU process ended without being told to". */
export function qemuDied(e: DriverEvent): boolean {
  return (e.action === "vm-stopped" && e.detail === "failed") || (e.action === "vm-crashed" && e.detail === "crashed");
}

export class CrashRecords {
  /** `<host>/<vm name>` → the last crash. */
  private readonly crashes = new Map<string, CrashRecord>();

  constructor(
    readonly policy: OnCrash,
    /** Starts the VM again (on_crash: restart), if it is still the one of that id (null: not known); errors are the caller's to log. */
    private readonly restart: (host: string, name: string, id: string | null) => Promise<void>,
  ) {}

  /** Records that the VM crashed, and applies the policy (`id`: the VM's, if the event says it). */
  recordCrash(host: string, name: string, reason: string, id: string | null = null): void {
    this.crashes.set(`${host}/${name}`, { reason, at: new Date().toISOString(), kind: "qemu" });
    if (this.policy === "restart") void this.restart(host, name, id).catch(() => {});
  }

  /** A driver event of `host`: QEMU's death is a crash; a start (not by restart) or an undefine clears it. */
  onDriverEvent(host: string, e: DriverEvent): void {
    const key = `${host}/${e.vmName}`;
    // libvirt powers a panicked guest off (on_panic: stop) with "stopped, crashed": the panic's, not a dead QEMU.
    if (qemuDied(e) && !(e.detail === "crashed" && this.crashes.get(key)?.kind === "panic")) this.recordCrash(host, e.vmName, `QEMU exited unexpectedly (${e.detail})`, e.vmId);
    // A panic's action is on_panic's (the drivers'); here it is only remembered, because libvirt
    // reports a guest powered off after a panic just as it reports a QEMU that died.
    else if (e.action === "vm-crashed" && e.detail === "panicked") this.crashes.set(key, { reason: GUEST_PANICKED, at: new Date().toISOString(), kind: "panic" });
    else if (e.action === "vm-undefined" || (e.action === "vm-started" && this.policy !== "restart")) this.crashes.delete(key);
  }

  /** Forgets the crash (the VM was started or deleted by a user). */
  clear(host: string, name: string): void {
    this.crashes.delete(`${host}/${name}`);
  }

  /** The VM's last crash as recorded here (QEMU died, or the guest panicked), if any. */
  get(host: string, name: string): CrashRecord | undefined {
    // Asked for every VM of every listing, and there is rarely a crash: no key made for nothing.
    if (this.crashes.size === 0) return undefined;
    return this.crashes.get(`${host}/${name}`);
  }

  /** The state and crash_reason the API shows for a VM the driver reports in `state`. */
  view(host: string, name: string, state: VmState): { state: VmState; crashReason: string | null } {
    const c = this.crashes.get(`${host}/${name}`);
    if (!c) return { state, crashReason: null };
    if (c.kind === "panic") {
      // Shown crashed until the next start, also when powered off after it (on_panic: stop).
      if (state === "stopped" || state === "crashed") return { state: "crashed", crashReason: c.reason };
      return { state, crashReason: null }; // restarted (on_panic: restart)
    }
    if (state === "stopped" && this.policy === "preserve") return { state: "crashed", crashReason: c.reason };
    return { state, crashReason: c.reason };
  }
}
