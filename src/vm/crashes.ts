/**
 * VMs that crashed, and what rcloud does about it (`vm_defaults.on_crash`). The one place
 * that records `crashed` and `crash_reason`: QEMU dying under a VM (killed, out of memory, an
 * assertion) reaches it through the drivers' events here; a guest panic reports through
 * `recordCrash` too.
 *
 * - `restart`: the VM is started again at once (its crash_reason stays until it stops again).
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
}

/** Driver events that mean "the QEMU process ended without being told to". */
export function qemuDied(e: DriverEvent): boolean {
  return (e.action === "vm-stopped" && e.detail === "failed") || (e.action === "vm-crashed" && e.detail === "crashed");
}

export class CrashRecords {
  /** `<host>/<vm name>` → the last crash. */
  private readonly crashes = new Map<string, CrashRecord>();

  constructor(
    readonly policy: OnCrash,
    /** Starts the VM again (on_crash: restart); errors are the caller's to log. */
    private readonly restart: (host: string, name: string) => Promise<void>,
  ) {}

  /** Records that the VM crashed, and applies the policy. */
  recordCrash(host: string, name: string, reason: string): void {
    this.crashes.set(`${host}/${name}`, { reason, at: new Date().toISOString() });
    if (this.policy === "restart") void this.restart(host, name).catch(() => {});
  }

  /** A driver event of `host`: QEMU's death is a crash; a start (not by restart) or an undefine clears it. */
  onDriverEvent(host: string, e: DriverEvent): void {
    const key = `${host}/${e.vmName}`;
    if (qemuDied(e)) this.recordCrash(host, e.vmName, `QEMU exited unexpectedly (${e.detail})`);
    else if (e.action === "vm-undefined" || (e.action === "vm-started" && this.policy !== "restart")) this.crashes.delete(key);
  }

  /** Forgets the crash (the VM was started or deleted by a user). */
  clear(host: string, name: string): void {
    this.crashes.delete(`${host}/${name}`);
  }

  /** The VM's last crash as recorded here (QEMU died), if any. */
  get(host: string, name: string): CrashRecord | undefined {
    return this.crashes.get(`${host}/${name}`);
  }

  /** The state and crash_reason the API shows for a VM the driver reports in `state`. */
  view(host: string, name: string, state: VmState): { state: VmState; crashReason: string | null } {
    const c = this.crashes.get(`${host}/${name}`);
    if (!c) return { state, crashReason: null };
    if (state === "stopped" && this.policy === "preserve") return { state: "crashed", crashReason: c.reason };
    return { state, crashReason: c.reason };
  }
}
