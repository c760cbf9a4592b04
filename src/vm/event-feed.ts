/**
 * What the VM service tells the event bus: the driver's lifecycle events (libvirt domain
 * events, QMP events) with the VM's id and project added, and rcloud's own operations
 * (vm-created, vm-deleted, operation-failed, with the request id). Everything goes out in the
 * order it happened, through one chain; a VM being created has its driver events held back
 * until vm-created is out (and dropped if the create fails: that VM never existed).
 */
import { ServiceError } from "../api-types/errors.ts";
import type { ApiEvent } from "../api-types/json.ts";
import type { Caller } from "../auth/scope.ts";
import type { DriverEvent, VmDriver } from "../drivers/types.ts";
import type { EventInput, EventSink } from "../events/bus.ts";

export interface KnownVm {
  id: string;
  name: string;
  owner: string | null;
  /** The host it runs on. */
  host: string;
}

/** What happened to a host (type `host`). */
export type HostAction = "host-online" | "host-offline" | "host-cordoned" | "host-uncordoned";

/** How long a delete waits for the driver's own word that the VM is gone (libvirt sends it after the reply). */
const UNDEFINE_WAIT_MS = 2_000;

export class VmEventFeed {
  /** VMs by name: id and project for the events about them. */
  private readonly known = new Map<string, KnownVm>();
  private chain: Promise<void> = Promise.resolve();
  /** Names being created → their driver events so far. */
  private readonly creating = new Map<string, { host: string; e: DriverEvent; lookup: (name: string) => Promise<KnownVm | null> }[]>();
  /** Names being deleted: whether the driver has reported the VM undefined, and who waits for that. */
  private readonly deleting = new Map<string, { seen: boolean; resolve: (() => void) | null }>();
  /** Hosts whose driver reports lifecycle events; for the others rcloud's own operations stand in. */
  private readonly reporting = new Set<string>();
  private readonly unsubscribes: (() => void)[] = [];

  constructor(private readonly sink: EventSink) {}

  /**
   * Listens to one host's driver. `lookup`: the VM of that name on the host, or null (not one
   * of rcloud's), for events about VMs not seen yet.
   */
  watch(host: string, driver: VmDriver, lookup: (name: string) => Promise<KnownVm | null>): void {
    const off = driver.subscribe?.((e) => this.fromDriver(host, e, lookup));
    if (!off) return;
    this.reporting.add(host);
    this.unsubscribes.push(off);
  }

  stop(): void {
    for (const off of this.unsubscribes.splice(0)) off();
    this.reporting.clear();
  }

  remember(vm: KnownVm): void {
    this.known.set(vm.name, { id: vm.id, name: vm.name, owner: vm.owner, host: vm.host });
  }

  /** A host came or went, or was (un)cordoned. */
  hostChanged(host: string, action: HostAction, detail: string): void {
    this.enqueue(() => ({ type: "host", action, vm: null, project: null, detail, request_id: null, host }));
  }

  // ---- the drivers' events -------------------------------------------------------------

  private fromDriver(host: string, e: DriverEvent, lookup: (name: string) => Promise<KnownVm | null>): void {
    const held = this.creating.get(e.vmName);
    if (held) {
      held.push({ host, e, lookup });
      return;
    }
    if (e.action === "vm-defined") return; // creates are rcloud's vm-created
    if (e.action === "vm-undefined") {
      const deleting = this.deleting.get(e.vmName);
      if (deleting) {
        deleting.seen = true;
        deleting.resolve?.();
        return;
      }
      this.enqueue(() => {
        // Removed behind rcloud's back: the VM known by that name, if it is the one removed.
        const vm = this.known.get(e.vmName);
        if (!vm || vm.host !== host || (e.vmId !== null && e.vmId !== vm.id)) return null;
        this.known.delete(e.vmName);
        return this.input("operation", "vm-deleted", vm, `the hypervisor removed the VM outside rcloud (${e.detail})`, { request_id: null });
      });
      return;
    }
    this.enqueue(async () => {
      let vm = this.known.get(e.vmName);
      // Not known here, or known as another VM of that name (the name was reused): looked up again.
      if (!vm || vm.host !== host || (e.vmId !== null && e.vmId !== vm.id)) vm = (await this.find(e.vmName, lookup)) ?? undefined;
      if (!vm || (e.vmId !== null && e.vmId !== vm.id)) return null;
      return this.input("lifecycle", e.action, vm, e.detail);
    });
  }

  private async find(name: string, lookup: (name: string) => Promise<KnownVm | null>): Promise<KnownVm | null> {
    try {
      const vm = await lookup(name);
      if (vm) this.remember(vm);
      return vm;
    } catch {
      return null; // the hypervisor is away: an event we cannot place is dropped
    }
  }

  // ---- rcloud's operations -------------------------------------------------------------

  /** A create of `name` begins: its driver events wait for vm-created. */
  beginCreate(name: string): void {
    this.creating.set(name, []);
  }

  /** The create succeeded (`started`: the VM was started too). */
  created(vm: KnownVm, requestId: string | null, started: boolean): void {
    const held = this.creating.get(vm.name) ?? [];
    this.creating.delete(vm.name);
    this.remember(vm);
    this.enqueue(() => this.input("operation", "vm-created", vm, "created", { request_id: requestId, operation: "create" }));
    // Events of that name held meanwhile: the new VM's, or another VM's (by id, or on another host) go their usual way.
    for (const h of held) this.fromDriver(h.host, h.e, h.lookup);
    this.operated("start", vm, started);
  }

  /** The create failed: the VM never existed, nor did its events. */
  createFailed(name: string): void {
    this.creating.delete(name);
  }

  /**
   * A lifecycle operation succeeded. Drivers that report events have said what happened;
   * for the others rcloud says it (`when`: only if the operation changed something).
   */
  operated(op: "start" | "stop" | "reboot", vm: KnownVm, when = true): void {
    if (this.reporting.has(vm.host) || !when) return;
    const action = op === "start" ? "vm-started" : op === "stop" ? "vm-stopped" : "vm-rebooted";
    this.enqueue(() => this.input("lifecycle", action, vm, `by rcloud (${op})`));
  }

  /** The VM is deleted: vm-deleted once the driver's own events about it are out (bounded wait). */
  deleted(vm: KnownVm, requestId: string | null): void {
    const deleting = this.deleting.get(vm.name);
    const publish = () => {
      // A delete of a new VM of that name may have begun meanwhile: only this delete's entries go.
      if (this.deleting.get(vm.name) === deleting) this.deleting.delete(vm.name);
      this.enqueue(() => {
        if (this.known.get(vm.name)?.id === vm.id) this.known.delete(vm.name);
        return this.input("operation", "vm-deleted", vm, "deleted", { request_id: requestId, operation: "delete" });
      });
    };
    if (!this.reporting.has(vm.host) || !deleting || deleting.seen) return publish();
    const timer = setTimeout(publish, UNDEFINE_WAIT_MS);
    deleting.resolve = () => {
      clearTimeout(timer);
      publish();
    };
  }

  /** A snapshot was taken, reverted to or deleted: `detail` is the snapshot's name. */
  snapshotted(action: "snapshot-created" | "snapshot-reverted" | "snapshot-deleted", vm: KnownVm, snapshot: string, requestId: string | null): void {
    const operation = action === "snapshot-created" ? "snapshot-create" : action === "snapshot-reverted" ? "snapshot-revert" : "snapshot-delete";
    this.enqueue(() => this.input("operation", action, vm, snapshot, { request_id: requestId, operation }));
  }

  /** Called before a delete starts, so the driver's vm-undefined is recognised as ours. */
  beginDelete(vm: KnownVm): void {
    if (this.reporting.has(vm.host)) this.deleting.set(vm.name, { seen: false, resolve: null });
  }

  /** The delete failed: the VM stays. */
  deleteFailed(name: string): void {
    this.deleting.delete(name);
  }

  /** An operation was refused or failed: who asked, what, and the API's answer. */
  failed(op: string, ref: string, caller: Caller | null, error: unknown, requestId: string | null): void {
    const err = error instanceof ServiceError ? error : null;
    const found = this.known.get(ref) ?? [...this.known.values()].find((v) => v.id === ref) ?? null;
    // A project token's failure is its project's business (and it learns nothing of other
    // projects' VMs); otherwise the VM's project's.
    const confined = caller !== null && caller.role !== "admin";
    const vm = confined && found?.owner !== caller.project ? null : found;
    const project = confined ? caller.project : (vm?.owner ?? null);
    const subject = vm ? { id: vm.id, name: vm.name } : { id: null, name: ref.slice(0, 64) };
    this.enqueue(() => ({
      type: "operation",
      action: "operation-failed",
      vm: subject,
      project,
      // An unexpected error's text is for the server log (it may name host paths), as in the API's answer.
      detail: err && !err.internal ? err.message : "internal error; the server log has the details under this request_id",
      request_id: requestId,
      host: vm?.host ?? null,
      operation: op,
      error_code: err?.code ?? "internal_error",
    }));
  }

  // ---- helpers -------------------------------------------------------------------------

  private input(type: "lifecycle" | "operation", action: string, vm: KnownVm, detail: string, extra: Partial<ApiEvent> = {}): EventInput {
    return { type, action, vm: { id: vm.id, name: vm.name }, project: vm.owner, detail, request_id: null, host: vm.host, ...extra };
  }

  /** Publishes in order: an event that needs a lookup holds back the ones after it. */
  private enqueue(make: () => EventInput | null | Promise<EventInput | null>): void {
    this.chain = this.chain.then(async () => {
      try {
        const input = await make();
        if (input) this.sink.publish(input);
      } catch {
        // an event that cannot be made is not published; the operation itself is unaffected
      }
    });
  }
}
