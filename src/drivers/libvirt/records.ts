/**
 * VM records from libvirt at a few calls per listing, whatever the number of VMs: one
 * CONNECT_GET_ALL_DOMAIN_STATS for every domain's state and CPU time (on the events session,
 * so every change made before it has reached the cache, see events.ts), and the rest of each
 * record (rcloud's metadata, vCPUs, memory, disks and their sizes, MAC, boot) from the domain
 * cache (domain-cache.ts), which reads a domain's XML only when it is new or has changed.
 *
 * Only state and CPU time are asked for: neither needs the QEMU monitor, so libvirt takes no
 * domain job and the listing never waits behind a domain that is busy (starting, migrating).
 * vCPUs and memory come from the live XML (libvirt's test driver reports no vcpu/balloon
 * stats, and QEMU's need a monitor call per running domain).
 */
import { ErrorCode, LibvirtError, remoteProcedures as P } from "../../libvirt/index.ts";
import type { RemoteDomainStatsRecord as DomainStats, RemoteNonnullDomain } from "../../libvirt/index.ts";
import type { VmRecord } from "../types.ts";
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

  constructor(
    private readonly sessions: Sessions,
    private readonly events: DomainEvents,
    private readonly cache: DomainCache,
  ) {}

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

  async list(): Promise<VmRecord[]> {
    const mark = this.cache.mark();
    const { retStats } = await this.stats([]);
    const uuids = retStats.map((s) => this.uuidTexts.of(s.dom.uuid));
    const records = await this.records(retStats, uuids);
    this.cache.retain(uuids, mark);
    return this.sorted(records);
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

function sameItems<T>(a: readonly T[], b: readonly T[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
