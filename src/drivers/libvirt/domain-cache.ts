/**
 * What rcloud keeps of each domain between listings: its parsed XML (rcloud's metadata,
 * disks, MAC, boot) and its disks' sizes, keyed by UUID. An entry is filled on first sight
 * and forgotten when the domain's events say it may have changed (events.ts: any lifecycle
 * event, a device added or removed, a metadata change), when the driver changes it itself,
 * and all at once when events may have been missed (the events session lost, a queue
 * overflow). While events are not tracked nothing is kept: every read goes to libvirt.
 *
 * The domain's state and CPU time are not kept here: the listing keeps its stats itself and
 * reads again those of the domains this cache forgets (records.ts, via onForget). A disk
 * resized behind rcloud's back shows after the domain's next event (rcloud itself resizes
 * disks only through the driver, which marks the domain changed).
 */
import type { RemoteNonnullDomain } from "../../libvirt/index.ts";
import type { DiskInfo, VmRecord } from "../types.ts";
import type { ParsedDomain } from "./domain-xml.ts";
import type { EventSink } from "./events.ts";

/** An rcloud VM's facts from its XML, with its disks' sizes. */
export interface DomainFacts {
  parsed: ParsedDomain;
  rcloud: NonNullable<ParsedDomain["rcloud"]>;
  disks: DiskInfo[];
  /** The record the last listing built from these facts (records.ts reuses it while nothing changed). */
  last?: VmRecord;
  /** The stats `last` was built from: the same stats again (kept between listings) give `last` at once. */
  lastStats?: object;
}

/** Reads a domain's facts from libvirt; null for a domain that is not an rcloud VM. */
export type FactsLoader = (dom: RemoteNonnullDomain) => Promise<DomainFacts | null>;

export class DomainCache implements EventSink {
  /**
   * UUID → facts (null: not an rcloud VM): the load, shared by concurrent readers, and once it
   * is done its value, which a listing takes without a promise per domain.
   */
  private readonly entries = new Map<string, { loading: Promise<DomainFacts | null>; value?: DomainFacts | null }>();
  /** UUID → VM id (null: not an rcloud VM) and when it was learnt; ids never change, so this outlives entries. */
  private readonly ids = new Map<string, { id: string | null; at: number }>();
  /** Counts id updates: a listing only prunes ids learnt before it began. */
  private clock = 0;
  private readonly forgetListeners: ((uuid: string | null) => void)[] = [];

  constructor(
    private readonly load: FactsLoader,
    /** Whether every change reaches changed()/lost() (events.ts); else nothing is kept. */
    private readonly tracking: () => boolean,
  ) {}

  /**
   * What a listing may take without reading: uuid → the facts of a domain if they are kept and
   * loaded (null: not rcloud's), else undefined. Asked once per listing, not per domain.
   */
  knownNow(): (uuid: string) => DomainFacts | null | undefined {
    if (!this.tracking()) return () => undefined;
    const entries = this.entries;
    return (uuid) => entries.get(uuid)?.value;
  }

  facts(dom: RemoteNonnullDomain, uuid: string): Promise<DomainFacts | null> {
    const hit = this.tracking() ? this.entries.get(uuid) : undefined;
    if (hit) return hit.loading;
    const entry: { loading: Promise<DomainFacts | null>; value?: DomainFacts | null } = {
      loading: this.load(dom).then((f) => {
        entry.value = f;
        this.ids.set(uuid, { id: f ? f.rcloud.id : null, at: ++this.clock });
        return f;
      }),
    };
    if (this.tracking()) {
      // A change while loading deletes the entry, so what the load read is not kept.
      this.entries.set(uuid, entry);
      entry.loading.catch(() => {
        if (this.entries.get(uuid) === entry) this.entries.delete(uuid);
      });
    }
    return entry.loading;
  }

  changed(uuid: string): void {
    this.entries.delete(uuid);
    for (const f of this.forgetListeners) f(uuid);
  }

  lost(): void {
    this.entries.clear();
    for (const f of this.forgetListeners) f(null);
  }

  /** Also called when a domain's facts are forgotten (null: all of them), for what else is kept per domain. */
  onForget(f: (uuid: string | null) => void): void {
    this.forgetListeners.push(f);
  }

  vmId(uuid: string): string | null | undefined {
    return this.ids.get(uuid)?.id;
  }

  /** A VM the driver has just made: its id is known before anything is read back. */
  made(uuid: string, id: string): void {
    this.entries.delete(uuid);
    this.ids.set(uuid, { id, at: ++this.clock });
  }

  /** A mark to pass to retain() when a full listing begins. */
  mark(): number {
    return this.clock;
  }

  /**
   * Drops what is kept of domains that are gone: `uuids` holds every UUID of a full listing
   * begun at `mark`. (A domain made meanwhile may be missing from it; its id is kept.)
   */
  retain(uuids: readonly string[], mark: number): void {
    // Most listings find nothing gone: everything kept is among the present.
    let entries = 0;
    let ids = 0;
    for (const uuid of uuids) {
      if (this.entries.has(uuid)) entries++;
      if (this.ids.has(uuid)) ids++;
    }
    if (entries === this.entries.size && ids === this.ids.size) return;
    const present = new Set(uuids);
    for (const uuid of this.entries.keys()) if (!present.has(uuid)) this.entries.delete(uuid);
    for (const [uuid, { at }] of this.ids) if (at <= mark && !present.has(uuid)) this.ids.delete(uuid);
  }
}
