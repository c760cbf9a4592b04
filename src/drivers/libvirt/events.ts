/**
 * libvirt's domain events, on a session of their own: turned into rcloud's DriverEvents for
 * subscribers, and used to tell the domain cache (domain-cache.ts) which domains changed.
 *
 * The session also carries the calls that must see every change made before them (the
 * listing's stats call, see `afterEvents`): libvirtd queues an event before it answers the
 * call that caused it, flushes queued events to each client before it reads that client's
 * next request, and answers a client in order. So the reply to a call made on this session
 * after a change comes after that change's event, on the same socket.
 *
 * Lifecycle events (virDomainEventType, detail) → DriverEvent action, detail:
 *
 * | libvirt event | action | detail (libvirt's detail, VIR_DOMAIN_EVENT_<TYPE>_<DETAIL> in lower case) |
 * |---|---|---|
 * | DEFINED | vm-defined | added, updated, renamed, from-snapshot |
 * | UNDEFINED | vm-undefined | removed, renamed |
 * | STARTED | vm-started | booted, migrated, restored, from-snapshot, wakeup |
 * | SUSPENDED | vm-paused | paused, migrated, ioerror, watchdog, restored, from-snapshot, api-error, postcopy, postcopy-failed |
 * | RESUMED | vm-resumed | unpaused, migrated, from-snapshot, postcopy, postcopy-failed |
 * | STOPPED (CRASHED) | vm-crashed | crashed |
 * | STOPPED (other) | vm-stopped | shutdown, destroyed, migrated, saved, failed, from-snapshot |
 * | SHUTDOWN | vm-shutdown | finished, guest, host (the guest OS is done or QEMU was told to quit; STOPPED follows) |
 * | PMSUSPENDED | vm-paused | pmsuspended-memory, pmsuspended-disk |
 * | CRASHED | vm-crashed | panicked, crashloaded |
 * | REBOOT (event id 1) | vm-rebooted | reboot |
 *
 * A detail newer than libvirt 9.0 is reported as `unknown-<n>`; an unknown event type is not
 * reported (the cache still forgets the domain). Device added/removed and metadata changes
 * only reach the cache. QEMU starts a domain paused, so a start reports vm-resumed before
 * vm-started; a destroy reports vm-shutdown (host) before vm-stopped (destroyed).
 */
import { DomainEventId, type DomainEventMap, LibvirtClient, type LibvirtClientOptions, type ProcedureDescriptor, type RemoteNonnullDomain } from "../../libvirt/index.ts";
import { DriverError, type DriverEvent } from "../types.ts";
import { uuidString } from "./domain-state.ts";

type Action = DriverEvent["action"];

/** Per virDomainEventType (by number): the action and the detail words by detail number. */
const LIFECYCLE: readonly (readonly [Action, readonly string[]])[] = [
  ["vm-defined", ["added", "updated", "renamed", "from-snapshot"]],
  ["vm-undefined", ["removed", "renamed"]],
  ["vm-started", ["booted", "migrated", "restored", "from-snapshot", "wakeup"]],
  ["vm-paused", ["paused", "migrated", "ioerror", "watchdog", "restored", "from-snapshot", "api-error", "postcopy", "postcopy-failed"]],
  ["vm-resumed", ["unpaused", "migrated", "from-snapshot", "postcopy", "postcopy-failed"]],
  ["vm-stopped", ["shutdown", "destroyed", "crashed", "migrated", "saved", "failed", "from-snapshot"]],
  ["vm-shutdown", ["finished", "guest", "host"]],
  ["vm-paused", ["pmsuspended-memory", "pmsuspended-disk"]],
  ["vm-crashed", ["panicked", "crashloaded"]],
];
const STOPPED = 5;
const STOPPED_CRASHED = 2;

/** A lifecycle event as rcloud names it; null for an event type libvirt 9.0 does not have. */
export function lifecycleAction(event: number, detail: number): { action: Action; detail: string } | null {
  const entry = LIFECYCLE[event];
  if (!entry) return null;
  const word = entry[1][detail] ?? `unknown-${detail}`;
  return { action: event === STOPPED && detail === STOPPED_CRASHED ? "vm-crashed" : entry[0], detail: word };
}

/** What the events tell the domain cache. */
export interface EventSink {
  /** The domain with this UUID may have changed (its XML, state or existence). */
  changed(uuid: string): void;
  /** Events may have been missed (session lost, queue overflow): forget everything. */
  lost(): void;
  /** rcloud's VM id of a domain: null for a domain known not to be rcloud's, undefined if not known. */
  vmId(uuid: string): string | null | undefined;
}

const WATCHED = [DomainEventId.LIFECYCLE, DomainEventId.REBOOT, DomainEventId.DEVICE_ADDED, DomainEventId.DEVICE_REMOVED, DomainEventId.METADATA_CHANGE] as const;
type Watched = (typeof WATCHED)[number];

/** The domain an event is about: lifecycle, reboot and device-removed messages wrap it in `msg`. */
function domainOf(m: DomainEventMap[Watched]): RemoteNonnullDomain {
  return "msg" in m ? m.msg.dom : m.dom;
}

export class DomainEvents {
  private session: LibvirtClient | null = null;
  private readonly queues: { return(): Promise<unknown>; dropped: number }[] = [];
  private readonly listeners = new Set<(event: DriverEvent) => void>();
  /** Whether every change since the sink last heard `lost` has reached it. */
  private trackingValue = false;
  /** Subscriptions still delivering (one ends when re-subscribing after a reconnect fails). */
  private live = 0;

  constructor(private readonly sink: EventSink) {}

  /** True while the subscriptions are live and nothing was missed since the sink last heard `lost`. */
  get tracking(): boolean {
    return this.trackingValue && this.live === WATCHED.length && this.session?.state === "open";
  }

  /** Sessions re-opened after a lost connection. */
  get reconnects(): number {
    return Math.max(0, (this.session?.sessions ?? 1) - 1);
  }

  /** Opens the events session and subscribes; events flow until close(). */
  async open(uri: string, opts: LibvirtClientOptions): Promise<void> {
    const session = await LibvirtClient.connect(uri, opts);
    this.session = session;
    try {
      for (const id of WATCHED) {
        const queue = await session.subscribeDomainEvents(id);
        this.queues.push(queue);
        this.live++;
        void this.consume(id, queue).finally(() => this.live--);
      }
    } catch (e) {
      await this.close();
      throw e;
    }
    // Events sent while the session was down are lost; the client re-subscribes before "connect".
    session.on("disconnect", () => this.miss());
    session.on("connect", () => {
      this.sink.lost();
      this.trackingValue = true;
    });
    this.trackingValue = true;
  }

  private miss(): void {
    this.trackingValue = false;
    this.sink.lost();
  }

  private async consume<K extends Watched>(id: K, queue: AsyncIterableIterator<DomainEventMap[K]> & { dropped: number }): Promise<void> {
    try {
      for await (const m of queue) {
        if (queue.dropped > 0) {
          // The queue overflowed: some change went unseen.
          queue.dropped = 0;
          this.sink.lost();
        }
        this.handle(id, m);
      }
    } catch {
      // the session was closed for good, or re-subscribing failed; `live` says so
    }
  }

  private handle(id: Watched, m: DomainEventMap[Watched]): void {
    const dom = domainOf(m);
    const uuid = uuidString(dom.uuid);
    const vmId = this.sink.vmId(uuid);
    if (id !== DomainEventId.REBOOT) this.sink.changed(uuid);
    let mapped: { action: Action; detail: string } | null = null;
    if (id === DomainEventId.LIFECYCLE) {
      const { event, detail } = (m as DomainEventMap[typeof DomainEventId.LIFECYCLE]).msg;
      mapped = lifecycleAction(event, detail);
    } else if (id === DomainEventId.REBOOT) {
      mapped = { action: "vm-rebooted", detail: "reboot" };
    }
    // Domains known not to be rcloud VMs are not reported.
    if (!mapped || vmId === null) return;
    this.emit({ vmName: dom.name, vmId: vmId ?? null, ...mapped });
  }

  /** Tells subscribers about something the driver did itself (a dump saved after a panic). */
  emit(event: DriverEvent): void {
    for (const listener of this.listeners) {
      try {
        listener(event);
      } catch {
        // a listener's failure is its own
      }
    }
  }

  subscribe(listener: (event: DriverEvent) => void): () => void {
    this.listeners.add(listener);
    return () => void this.listeners.delete(listener);
  }

  /**
   * A call on the events session, resolved once every event libvirtd queued before it has
   * reached the sink: the events arrive before the reply on this socket, and their handlers
   * run in the microtasks their arrival queued, all done before the next macrotask.
   */
  async afterEvents<A, R>(desc: ProcedureDescriptor<A, R>, args: A): Promise<R> {
    if (!this.session) throw new DriverError("unavailable", "not connected to libvirt (events session)");
    const reply = await this.session.call(desc, args);
    await new Promise<void>((resolve) => setImmediate(resolve));
    return reply;
  }

  async close(): Promise<void> {
    this.trackingValue = false;
    const session = this.session;
    this.session = null;
    await Promise.all(this.queues.splice(0).map((q) => q.return().catch(() => {})));
    await session?.close();
  }
}
