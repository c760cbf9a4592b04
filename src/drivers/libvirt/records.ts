/**
 * VM records from libvirt at a few calls per listing, whatever the number of VMs. The first
 * listing (and any after events may have been missed) reads every domain's state and CPU time
 * with one CONNECT_GET_ALL_DOMAIN_STATS; later ones keep those stats and read again only the
 * domains whose events said they changed, in one stats call for just those, after a cheap
 * barrier call on the events session: libvirtd sends every event queued before a reply ahead
 * of it on that socket (events.ts), so once the barrier's reply is in, every change made
 * before the listing began has marked its domain. A listing of a fleet where nothing changed
 * is one small round trip per host. The rest of each record (rcloud's metadata, vCPUs, memory,
 * disks and their sizes, MAC, boot) comes from the domain cache (domain-cache.ts), which reads
 * a domain's XML only when it is new or has changed.
 *
 * Only state and CPU time are asked for: neither needs the QEMU monitor, so libvirt takes no
 * domain job and the listing never waits behind a domain that is busy (starting, migrating).
 * vCPUs and memory come from the live XML (libvirt's test driver reports no vcpu/balloon
 * stats, and QEMU's need a monitor call per running domain). The CPU time of a domain without
 * events since the last full read is as old as that read: a caller that shows CPU time
 * (metrics) asks for a full read (`ListOptions.cpuTime`).
 */
import { ErrorCode, LibvirtError, remoteProcedures as P } from "../../libvirt/index.ts";
import type { RemoteDomainStatsRecord as DomainStats, RemoteNonnullDomain } from "../../libvirt/index.ts";
import type { ListOptions, VmRecord } from "../types.ts";
import type { DomainCache, DomainFacts } from "./domain-cache.ts";
import { crashReasonOf, DomainState, stateName, UuidTexts } from "./domain-state.ts";
import { crashState } from "../shared/crash.ts";
import { parseDomainXml } from "./domain-xml.ts";
import type { DomainEvents } from "./events.ts";
import type { Sessions, VmStorage } from "./storage.ts";

/** VIR_DOMAIN_STATS_STATE | VIR_DOMAIN_STATS_CPU_TOTAL. */
const LISTING_STATS = 1 | 2;

/** Reads a domain's XML and its disks' sizes: the cache's loader. */
export async function readFacts(sessions: Sessions, storage: VmStorage, dom: RemoteNonnullDomain): Promise<DomainFacts | null> {
  const { xml } = await sessions().call(P.domainGetXmlDesc, { dom, flags: 0 });
  const parsed = parseDomainXml(xml);
  const rcloud = parsed.rcloud;
  if (!rcloud) return null;
  const disks = await Promise.all(parsed.disks.map(async (d) => ({ ...d, size_gb: await storage.sizeGb(d.path) })));
  const root = disks.find((d) => d.type === "root");
  if (root && root.size_gb === 0 && rcloud.rootDiskGb) root.size_gb = rcloud.rootDiskGb;
  return { parsed, rcloud, disks };
}

/**
 * The record of a domain from its stats and facts. A VM whose name, state and CPU time are as
 * in the last listing (a stopped VM, most of a large fleet) gets that listing's record again:
 * records are shared, read-only.
 */
function recordOf(stats: DomainStats, uuid: string, f: DomainFacts): VmRecord {
  if (f.last && f.lastStats === stats) return f.last;
  f.lastStats = stats;
  let stateNumber: number = DomainState.NOSTATE;
  let reasonNumber = 0;
  let cpuTime = 0n;
  for (const p of stats.params) {
    const v = p.value;
    if (p.field === "state.state" && v.type === 1) stateNumber = v.i;
    else if (p.field === "state.reason" && v.type === 1) reasonNumber = v.i;
    else if (p.field === "cpu.time" && v.type === 4) cpuTime = v.ul;
  }
  const { state, crashReason } = crashState(stateName(stateNumber), crashReasonOf(stateNumber, reasonNumber));
  // libvirt 9.0's QEMU driver reports its own CPU time for a domain that is not running.
  const cpuTimeNs = stateNumber === DomainState.SHUTOFF ? 0n : cpuTime;
  const last = f.last;
  if (last && last.name === stats.dom.name && last.state === state && last.crashReason === crashReason && last.cpuTimeNs === cpuTimeNs) return last;
  const m = f.rcloud;
  f.last = {
    id: m.id,
    name: stats.dom.name,
    uuid,
    state,
    vcpus: f.parsed.vcpus,
    maxVcpus: Math.max(f.parsed.maxVcpus, f.parsed.vcpus),
    // The balloon's target rcloud recorded; <memory> is the most the VM may have.
    memoryMb: m.memoryMb ?? f.parsed.memoryMb,
    maxMemoryMb: f.parsed.memoryMb,
    // Changes waiting for the next start live in the running domain's metadata only.
    pending: stateNumber === DomainState.SHUTOFF ? null : m.pending,
    image: m.image,
    disks: f.disks,
    network: { mode: m.network.mode, bridge: m.network.bridge, mac: f.parsed.mac, sshPort: m.network.sshPort, restrict: m.network.restrict },
    sshUser: m.sshUser,
    boot: f.parsed.boot,
    createdAt: m.createdAt,
    updatedAt: m.updatedAt,
    owner: m.owner,
    placementGroup: m.placementGroup,
    cpuTimeNs,
    gdbPort: m.gdbPort,
    onPanic: m.onPanic,
    crashReason,
    shares: f.parsed.shares,
  };
  return f.last;
}

export class DomainRecords {
  private readonly uuidTexts = new UuidTexts();
  /**
   * The creation times of the last listing's records in libvirt's order, and the order that
   * sorts them: libvirt lists its domains in the same order while none comes or goes, so most
   * listings need no sorting.
   */
  private lastOrder: { created: string[]; order: number[] } | null = null;
  /** The last full read's stats in libvirt's order, their UUIDs, and UUID → position. */
  private kept: { stats: DomainStats[]; uuids: string[]; index: Map<string, number> } | null = null;
  /** UUIDs of kept domains marked changed since; "all": a full read is needed. */
  private dirty: Set<string> | "all" = "all";
  /** Whether a full read is under way: its marks are sorted out once it is in (fullRead). */
  private fullReading = false;
  /** The stats read under way (oneAtATime). */
  private reading: Promise<unknown> | null = null;

  constructor(
    private readonly sessions: Sessions,
    private readonly events: DomainEvents,
    private readonly cache: DomainCache,
  ) {
    cache.onForget((uuid) => this.mark(uuid));
  }

  /**
   * Stats of `doms` (all domains when empty). While events are tracked, over the events
   * session (see events.ts); otherwise nothing is kept, so any session will do (a driver
   * recovering after a reconnect lists before the events session is back).
   */
  private stats(doms: RemoteNonnullDomain[]): Promise<{ retStats: DomainStats[] }> {
    const args = { doms, stats: LISTING_STATS, flags: 0 };
    return this.events.tracking ? this.events.afterEvents(P.connectGetAllDomainStats, args) : this.sessions().call(P.connectGetAllDomainStats, args);
  }

  /**
   * Records of the domains in `stats` that are rcloud VMs, in order; a domain gone meanwhile
   * is left out. Domains whose facts are kept cost no promise; the others are read at once.
   */
  private async records(stats: DomainStats[], uuids: string[]): Promise<VmRecord[]> {
    const out: (VmRecord | null)[] = new Array(stats.length).fill(null);
    const reads: Promise<void>[] = [];
    const knownNow = this.cache.knownNow();
    for (let i = 0; i < stats.length; i++) {
      const s = stats[i]!;
      const uuid = uuids[i]!;
      const known = knownNow(uuid);
      if (known !== undefined) {
        out[i] = known && recordOf(s, uuid, known);
        continue;
      }
      reads.push(
        this.cache.facts(s.dom, uuid).then(
          (f) => void (out[i] = f && recordOf(s, uuid, f)),
          (e) => {
            // Undefined between the stats and the XML: simply gone.
            if (!(e instanceof LibvirtError && e.code === ErrorCode.NO_DOMAIN)) throw e;
          },
        ),
      );
    }
    await Promise.all(reads);
    return out.filter((r): r is VmRecord => r !== null);
  }

  async list(opts: ListOptions = {}): Promise<VmRecord[]> {
    const useKept = !opts.cpuTime && this.keepable();
    // Once its reply is in, every change made before this listing has marked its domain.
    if (useKept) await this.events.afterEvents(P.connectGetLibVersion, undefined);
    const read = await this.oneAtATime(async () => (useKept ? await this.refreshKept() : null) ?? (await this.fullRead()));
    const records = await this.records(read.stats, read.uuids);
    if (read.mark !== null) this.cache.retain(read.uuids, read.mark);
    return this.sorted(records);
  }

  private keepable(): boolean {
    return this.kept !== null && !this.fullReadNeeded() && this.events.tracking;
  }

  /** (A method, so that TypeScript does not narrow `dirty` across the awaits that change it.) */
  private fullReadNeeded(): boolean {
    return this.dirty === "all";
  }

  /**
   * Reads of stats one after the other: a listing must not take the kept stats while another
   * is bringing them up to date (it would miss the marks that one took).
   */
  private async oneAtATime<T>(read: () => Promise<T>): Promise<T> {
    while (this.reading) await this.reading.catch(() => {});
    const p = read();
    this.reading = p;
    try {
      return await p;
    } finally {
      if (this.reading === p) this.reading = null;
    }
  }

  /** Every domain's stats; kept if events were tracked all along, so no change went unmarked meanwhile. */
  private async fullRead(): Promise<{ stats: DomainStats[]; uuids: string[]; mark: number }> {
    const mark = this.cache.mark();
    const trackedBefore = this.events.tracking;
    this.dirty = new Set();
    this.fullReading = true;
    let retStats: DomainStats[];
    try {
      retStats = (await this.stats([])).retStats;
    } finally {
      this.fullReading = false;
    }
    const uuids = retStats.map((s) => this.uuidTexts.of(s.dom.uuid));
    const index = indexOf(uuids);
    // Domains marked while the read was under way are read again next time (the read may
    // predate their change); one it did not find (made or gone since) needs another full read.
    const dirty = this.dirty as Set<string> | "all";
    if (dirty !== "all" && [...dirty].some((uuid) => !index.has(uuid))) this.dirty = "all";
    this.kept = trackedBefore && this.events.tracking && !this.fullReadNeeded() ? { stats: retStats, uuids, index } : null;
    return { stats: retStats, uuids, mark };
  }

  /**
   * The kept stats brought up to date with the domains marked since, or null when a full read
   * is needed: nothing kept, events not tracked, a domain come or gone (an event about a
   * domain the kept read did not have), or one of the marked gone meanwhile.
   */
  private async refreshKept(): Promise<{ stats: DomainStats[]; uuids: string[]; mark: null } | null> {
    const kept = this.kept;
    const dirty = this.dirty;
    if (!kept || dirty === "all" || !this.events.tracking) return null;
    if (dirty.size === 0) return { stats: kept.stats, uuids: kept.uuids, mark: null };
    const at = [...dirty].map((uuid) => kept.index.get(uuid));
    if (at.some((i) => i === undefined)) return null;
    // Marks from here on are for the next listing.
    this.dirty = new Set();
    let fresh: DomainStats[];
    try {
      fresh = (await this.stats(at.map((i) => kept.stats[i!]!.dom))).retStats;
    } catch (e) {
      // A domain undefined meanwhile: libvirt skips it or says it is not there.
      if (e instanceof LibvirtError && e.code === ErrorCode.NO_DOMAIN) return null;
      throw e;
    }
    if (this.kept !== kept) return null;
    const byUuid = new Map(fresh.map((f) => [this.uuidTexts.of(f.dom.uuid), f]));
    const stats = kept.stats.slice();
    for (const i of at) {
      const f = byUuid.get(kept.uuids[i!]!);
      if (!f) return null;
      stats[i!] = f;
    }
    this.kept = { ...kept, stats };
    return { stats, uuids: kept.uuids, mark: null };
  }

  /** What the domain cache forgets (a domain's events, or all when some may have been missed) marks its stats as old. */
  private mark(uuid: string | null): void {
    if (this.dirty === "all") return;
    if (uuid === null) this.dirty = "all";
    else if (this.fullReading || this.kept?.index.has(uuid)) this.dirty.add(uuid);
    else this.dirty = "all";
  }

  /** `records` sorted by creation, ISO 8601 times being in time order as strings (a stable sort: equal times keep libvirt's order). */
  private sorted(records: VmRecord[]): VmRecord[] {
    const created = records.map((r) => r.createdAt);
    const last = this.lastOrder;
    let order: number[];
    if (last && sameItems(last.created, created)) order = last.order;
    else {
      order = created.map((_, i) => i).sort((a, b) => (created[a]! < created[b]! ? -1 : created[a]! > created[b]! ? 1 : a - b));
      this.lastOrder = { created, order };
    }
    return order.map((i) => records[i]!);
  }

  /** The record of one domain (looked up by the caller); null when it is gone or not rcloud's. */
  async get(dom: RemoteNonnullDomain): Promise<VmRecord | null> {
    const { retStats } = await this.stats([dom]);
    return (await this.records(retStats, retStats.map((s) => this.uuidTexts.of(s.dom.uuid))))[0] ?? null;
  }

  /** The facts of one domain (cached), for operations that need its disks or console log. */
  facts(dom: RemoteNonnullDomain): Promise<DomainFacts | null> {
    return this.cache.facts(dom, this.uuidTexts.of(dom.uuid));
  }

  /** The driver changed this domain itself. */
  changed(dom: RemoteNonnullDomain): void {
    this.cache.changed(this.uuidTexts.of(dom.uuid));
  }
}

function indexOf(uuids: readonly string[]): Map<string, number> {
  const index = new Map<string, number>();
  uuids.forEach((u, i) => index.set(u, i));
  return index;
}

function sameItems<T>(a: readonly T[], b: readonly T[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
