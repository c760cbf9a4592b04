/** Reconcile (at start, on each host's connect, POST /reconcile) and the undo of creates abandoned while their host was away. */
import type { ApiReconcile, ApiReconcileHost } from "../api-types/json.ts";
import type { VmRecord } from "../drivers/types.ts";
import type { Host } from "./hosts.ts";
import type { VmContext } from "./vm-context.ts";

/** How long POST /reconcile waits for abandoned creates to be undone (their host may stay away). */
const ABANDONED_SETTLE_MS = 60_000;

export class Reconciler {
  /**
   * Creates whose caller was told they failed (their host went away) while the driver call
   * still ran, each with the undo that deletes the VM if the host carries the create out.
   */
  private readonly abandoned = new Map<{ host: Host; id: string; name: string; settled: boolean }, Promise<void>>();

  constructor(private readonly ctx: VmContext) {}

  /** The caller was told the create failed: if the frozen host finishes `call` later, the VM is deleted. */
  abandon(host: Host, id: string, name: string, call: Promise<VmRecord>): void {
    const entry = { host, id, name, settled: false };
    const undo: Promise<void> = call
      .then((rec) => host.driver.delete(rec.name))
      .then(
        () => void this.abandoned.delete(entry),
        () => {}, // the create failed after all (the driver rolled it back), or the delete did: reconcile tries again
      )
      .finally(() => void (entry.settled = true));
    this.abandoned.set(entry, undo);
  }

  /**
   * Reconciles every host that answers (docs/reliability.md): what creates and deletes cut
   * short left (rcloud killed midway) is finished or removed by the host's driver, which
   * leaves alone every VM whose create is still running. An offline host is reported, not
   * waited for; it is reconciled when it connects again.
   */
  async reconcile(): Promise<ApiReconcile> {
    // Creates answered 503 while their host was down may still be carried out by it and are
    // then undone (abandon above): let those settle first, so what reconcile reports is final.
    if (this.abandoned.size > 0) await Promise.race([Promise.all(this.abandoned.values()), Bun.sleep(ABANDONED_SETTLE_MS)]);
    // An undo that failed (the host was busy or away again): the VM, if it exists, goes now.
    for (const a of [...this.abandoned.keys()]) {
      if (!a.settled || !a.host.online) continue;
      // Gone: no VM of that name, or one made since by another create (another id).
      const gone = async () => {
        const rec = await a.host.driver.get(a.name).catch(() => undefined); // undefined: cannot tell now
        return rec === null || (rec !== undefined && rec.id !== a.id);
      };
      if (!(await gone())) await a.host.driver.delete(a.name).catch(() => {});
      if (await gone()) this.abandoned.delete(a);
    }
    return { hosts: await Promise.all(this.ctx.registry.hosts.map((h) => this.reconcileHost(h))) };
  }

  /** One host's reconcile (also run by the server each time a host connects). */
  async reconcileHost(h: Host): Promise<ApiReconcileHost> {
    const none = { host: h.name, removed: [], adopted: [] };
    if (!h.online) return { ...none, error: `host ${h.name} is offline: ${h.lastError ?? "not connected yet"}` };
    try {
      const r = await this.ctx.fleet.onHost(h, () => h.driver.reconcile());
      return { host: h.name, removed: r.removed.map((a) => ({ kind: a.kind, name: a.name, vm_id: a.vmId })), adopted: r.adopted, error: null };
    } catch (e) {
      return { ...none, error: (e as Error).message };
    }
  }
}
