/**
 * The service's view of the hosts: listings with a deadline (a host that does not answer in
 * time is shown from its last listing, never waited for), recent facts and image lists, the
 * capacity each host has given away (VMs placed plus creates in flight), and calls that fail
 * fast when their host is offline. No VM rules here: service.ts has those.
 */
import { ServiceError } from "../api-types/errors.ts";
import type { ApiHost } from "../api-types/json.ts";
import type { HostInfo, ImageInfo, ListOptions, VmRecord } from "../drivers/types.ts";
import { fromDriver } from "./errors.ts";
import { type FleetImage, mergeImages } from "./fleet-images.ts";
import { type Host, HostDownError, type HostRegistry } from "./hosts.ts";
import { faultPoint } from "../util/fault-points.ts";
import { memoryLimitMb } from "./capacity.ts";

/** GET /vms answers within 2 s: a host's listing is waited for this long at most. */
export const LIST_DEADLINE_MS = 1500;
/** When no host answered within LIST_DEADLINE_MS, how long a listing waits before 503. */
export const LIST_PATIENCE_MS = 15_000;
/** Facts (CPUs, memory, pool space) are re-read at most this often per host. */
const FACTS_MAX_AGE_MS = 2000;
/** Image lists are re-read at most this often per host. */
const IMAGES_MAX_AGE_MS = 3000;
/** An offline host's driver is asked for its images this long at most. */
const OFFLINE_IMAGES_WAIT_MS = 300;
/** A finished create counts on its host until a listing shows it, or this long. */
const PLACED_GRACE_MS = 60_000;

export interface HostListing {
  host: Host;
  records: VmRecord[];
  /** false: the host did not answer in time; `records` are its last listing. */
  fresh: boolean;
  error: string | null;
}

interface Usage {
  vcpus: number;
  memoryMb: number;
  group: string | null;
  /** null while the create (or growth) runs; then when the entry stops counting. */
  until: number | null;
  /**
   * A PATCH growing VM `grows` (entry `${id}:grow`): vcpus and memoryMb are the size it grows
   * to, and the VM counts at least that much. `settledAt`: once the PATCH ended, the listing
   * sequence number a listing must have begun after to show the new size.
   */
  grows?: string;
  settledAt?: number;
}

const NOTHING = { vcpus: 0, memoryMb: 0 };

/** Whether a VM takes its share of the host: stopped VMs give theirs back. */
export function countsOnHost(r: VmRecord): boolean {
  return r.state !== "stopped";
}

export class Fleet {
  private readonly images = new Map<string, { at: number; list: Promise<ImageInfo[]>; last: ImageInfo[] | null }>();
  /** Creates in flight and just finished, by host then VM id. */
  private readonly usage = new Map<string, Map<string, Usage>>();
  private readonly factsInFlight = new Map<string, Promise<HostInfo>>();
  /** Numbers listings and changes to the hosts' caches: a listing shows the changes made before it began. */
  private seq = 0;
  /**
   * Per host: the VMs rcloud created, changed (replaced) or deleted (null) since the listing
   * that began last of those applied, with when; and when that listing began. A listing
   * answering later than such a change, but begun before it, does not undo it in the cache.
   */
  private readonly changes = new Map<string, { listed: number; vms: Map<string, { at: number; rec: VmRecord | null }> }>();

  constructor(readonly registry: HostRegistry) {}

  get hosts(): Host[] {
    return this.registry.hosts;
  }

  /** A host that does not answer: with one host that is the hypervisor; in a fleet, one host of several. */
  private downCode(): "host_unavailable" | "hypervisor_unavailable" {
    return this.hosts.length === 1 ? "hypervisor_unavailable" : "host_unavailable";
  }

  /** The host named so, or 404 naming the known ones. */
  mustHost(name: string): Host {
    const h = typeof name === "string" ? this.registry.get(name) : undefined;
    if (!h) throw new ServiceError("not_found", `no host '${String(name).slice(0, 64)}'; known: ${this.hosts.map((x) => x.name).join(", ")}`);
    return h;
  }

  /**
   * A call on `h`: 503 host_unavailable at once when the host is offline or goes offline
   * under it; driver errors mapped to the API's codes; success counts as contact.
   */
  async onHost<T>(h: Host, call: () => Promise<T>): Promise<T> {
    try {
      const v = await h.whileUp(call);
      h.markContact();
      return v;
    } catch (e) {
      if (e instanceof HostDownError) throw new ServiceError(this.downCode(), e.message, { host: h.name }, { cause: e });
      const mapped = fromDriver(e);
      if (mapped.code === "hypervisor_unavailable") h.probeSoon();
      throw mapped;
    }
  }

  /**
   * `call` on `h` if it answers within LIST_DEADLINE_MS, else `fallback` (for reads a create
   * or a listing must not wait on a frozen host for); errors propagate.
   */
  async within<T, F>(h: Host, call: () => Promise<T>, fallback: F): Promise<T | F> {
    const p = this.onHost(h, call);
    p.catch(() => {}); // a late failure is nobody's business
    return Promise.race([p, Bun.sleep(LIST_DEADLINE_MS).then(() => fallback)]);
  }

  /** Every listed VM of the host, or its last listing when it does not answer within `deadlineMs`. */
  async list(h: Host, deadlineMs = LIST_DEADLINE_MS, opts?: ListOptions): Promise<HostListing> {
    if (!h.online) return { host: h, records: h.records ?? [], fresh: false, error: h.lastError ?? "offline" };
    const began = ++this.seq;
    // whileUp: a host that goes offline under the call ends the wait at once.
    const call = h.whileUp(() => h.driver.list(opts)).then(async (listed) => {
      await faultPoint("list.before-cache");
      h.markContact();
      const records = this.applyListing(h, listed, began);
      this.settle(h, records, began);
      return records;
    });
    let error: string | null = null;
    const records = await Promise.race([
      call.catch((e: unknown) => {
        if (e instanceof HostDownError) {
          error = e.message;
          return null;
        }
        const mapped = fromDriver(e);
        if (mapped.code === "hypervisor_unavailable") h.probeSoon();
        error = h.redact(mapped.message);
        return null;
      }),
      Bun.sleep(deadlineMs).then(() => null),
    ]);
    if (records) return { host: h, records, fresh: true, error: null };
    return { host: h, records: h.records ?? [], fresh: false, error: error ?? `no answer within ${deadlineMs} ms` };
  }

  /** The host's facts, at most FACTS_MAX_AGE_MS old (one reading shared by a burst of creates). */
  async facts(h: Host): Promise<HostInfo> {
    if (h.facts && Date.now() - h.facts.at < FACTS_MAX_AGE_MS) return h.facts.info;
    let p = this.factsInFlight.get(h.name);
    if (!p) {
      p = this.onHost(h, () => h.driver.hostInfo()).then((info) => {
        h.facts = { at: Date.now(), info };
        return info;
      });
      this.factsInFlight.set(h.name, p);
      void p.finally(() => this.factsInFlight.delete(h.name)).catch(() => {});
    }
    return p;
  }

  /** The host's images, at most IMAGES_MAX_AGE_MS old; an offline host's last list. */
  async hostImages(h: Host): Promise<ImageInfo[]> {
    const known = await this.knownImages(h);
    if (known === null) throw new ServiceError(this.downCode(), `the images of host ${h.name} cannot be listed now (${h.lastError ?? "it does not answer"})`, { host: h.name });
    return known;
  }

  /** The host's images, or null when it cannot say now and never said (it is down). */
  private async knownImages(h: Host): Promise<ImageInfo[] | null> {
    const hit = this.images.get(h.name);
    if (!h.online) {
      // Its driver may still know (the QEMU driver's directory is local); a frozen host is not waited for.
      const now = await Promise.race([h.driver.images().catch(() => null), Bun.sleep(OFFLINE_IMAGES_WAIT_MS).then(() => null)]);
      return now ?? hit?.last ?? null;
    }
    if (hit && Date.now() - hit.at < IMAGES_MAX_AGE_MS) return hit.list.catch(() => hit.last);
    const list = this.onHost(h, () => h.driver.images());
    list.catch((e: unknown) => this.imageErrors.set(h.name, h.redact((e as Error).message)));
    const entry = { at: Date.now(), list, last: hit?.last ?? null };
    this.images.set(h.name, entry);
    list.then(
      (l) => (entry.last = l),
      () => this.images.delete(h.name),
    );
    return list.catch(() => entry.last);
  }

  forgetImages(h: Host): void {
    this.images.delete(h.name);
  }

  /** The union of every host's images, with the hosts that hold each. */
  async fleetImages(): Promise<FleetImage[]> {
    const perHost = await Promise.all(this.hosts.map(async (h) => ({ host: h, images: await this.knownImages(h) })));
    this.unlisted = new Set(perHost.filter((p) => p.images === null).map((p) => p.host.name));
    return mergeImages(perHost.map((p) => ({ host: p.host.name, images: p.images ?? [] })));
  }

  /** Hosts whose images the last fleetImages() could not list (down, or failing just now). */
  unlisted = new Set<string>();
  /** Why a host's image listing last failed. */
  readonly imageErrors = new Map<string, string>();

  // ---- capacity given away ----

  private usageOf(h: Host): Map<string, Usage> {
    let m = this.usage.get(h.name);
    if (!m) this.usage.set(h.name, (m = new Map()));
    const now = Date.now();
    for (const [id, u] of m) if (u.until !== null && u.until < now) m.delete(id);
    return m;
  }

  /** Counts a create on `h` from now (placement decisions see it); returns its end. */
  reserve(h: Host, id: string, u: { vcpus: number; memoryMb: number; group: string | null }): (created: VmRecord | null) => void {
    this.usageOf(h).set(id, { ...u, until: null });
    return (created) => {
      const m = this.usageOf(h);
      if (!created) {
        m.delete(id);
        return;
      }
      // Until a listing shows it, the new VM still counts from here.
      m.set(id, { ...u, until: Date.now() + PLACED_GRACE_MS });
      this.changed(h, created.id, created);
    };
  }

  /** The cache of `h` with `rec` in it for `id` (null: gone), kept over listings begun before now. */
  private changed(h: Host, id: string, rec: VmRecord | null): void {
    this.changesOf(h).vms.set(id, { at: ++this.seq, rec });
    if (h.records) h.records = withChange(h.records, id, rec);
  }

  private changesOf(h: Host) {
    let c = this.changes.get(h.name);
    if (!c) this.changes.set(h.name, (c = { listed: 0, vms: new Map() }));
    return c;
  }

  /**
   * A listing that began at `began` answered: it becomes the cache, with the changes made
   * after it began laid over it; one begun before the listing the cache has already is not
   * applied. Returns the records the host has as far as rcloud knows.
   */
  private applyListing(h: Host, listed: VmRecord[], began: number): VmRecord[] {
    const c = this.changesOf(h);
    if (began < c.listed && h.records) return h.records;
    c.listed = began;
    let records = listed;
    for (const [id, ch] of c.vms) {
      if (ch.at < began) c.vms.delete(id); // the listing shows it
      else records = withChange(records, id, ch.rec);
    }
    h.records = records;
    return records;
  }

  /** Whether a VM named so is on `h` as far as rcloud knows (its cache and its creates since). */
  hasName(h: Host, name: string): boolean {
    if (h.records?.some((r) => r.name === name)) return true;
    for (const ch of this.changes.get(h.name)?.vms.values() ?? []) if (ch.rec?.name === name) return true;
    return false;
  }

  /**
   * What the VM `id` counts on `h` except for the PATCH now checked must leave room for its
   * new size: reserves it until a listing begun after the PATCH shows it (or
   * PLACED_GRACE_MS), so concurrent PATCHes and creates see it. Call in the same tick as the
   * check against allocated(h, id). `end(ok)`: the PATCH is over (ok: applied).
   */
  reserveGrowth(h: Host, id: string, to: { vcpus: number; memoryMb: number }): (ok: boolean) => void {
    const key = `${id}:grow`;
    const entry: Usage = { ...to, group: null, until: null, grows: id };
    this.usageOf(h).set(key, entry);
    return (ok) => {
      const m = this.usageOf(h);
      if (m.get(key) !== entry) return;
      const now = h.records?.find((r) => r.id === id);
      // Failed, or stopped after it (replaced() put the record in): the cache says what counts.
      if (!ok || (now && !countsOnHost(now))) {
        m.delete(key);
        return;
      }
      entry.until = Date.now() + PLACED_GRACE_MS;
      entry.settledAt = this.seq;
    };
  }

  /** The VM as an operation on it left it (a PATCH, a start): its entry in the host's cache replaced. */
  replaced(h: Host, rec: VmRecord): void {
    this.changed(h, rec.id, rec);
  }

  /** A listing shows what is placed: entries it covers stop counting separately. */
  private settle(h: Host, records: VmRecord[], began: number): void {
    const m = this.usageOf(h);
    if (m.size === 0) return; // most listings: no create in flight or just finished
    for (const r of records) if (m.get(r.id)?.until !== null) m.delete(r.id);
    for (const [key, u] of m) if (u.settledAt !== undefined && u.settledAt < began) m.delete(key);
  }

  /** The VM is gone from `h`: it no longer counts. */
  forget(h: Host, id: string): void {
    this.usageOf(h).delete(id);
    this.changed(h, id, null);
  }

  /**
   * vCPUs and memory of the VMs that count on `h`, creates in flight and growths reserved
   * included; `except`: without that VM (what a PATCH of it must fit beside).
   */
  allocated(h: Host, except?: string): { vcpus: number; memoryMb: number } {
    const per = new Map<string, { vcpus: number; memoryMb: number }>();
    for (const r of h.records ?? []) per.set(r.id, countsOnHost(r) ? r : NOTHING);
    const usage = this.usageOf(h);
    for (const [id, u] of usage) if (u.grows === undefined && !per.has(id)) per.set(id, u);
    // A VM growing counts its new size while the cache may still show the old one.
    for (const u of usage.values()) {
      if (u.grows === undefined) continue;
      const was = per.get(u.grows) ?? NOTHING;
      per.set(u.grows, { vcpus: Math.max(was.vcpus, u.vcpus), memoryMb: Math.max(was.memoryMb, u.memoryMb) });
    }
    let vcpus = 0;
    let memoryMb = 0;
    for (const [id, a] of per) {
      if (id === except) continue;
      vcpus += a.vcpus;
      memoryMb += a.memoryMb;
    }
    return { vcpus, memoryMb };
  }

  /** VMs of placement group `group` on `h`, creates in flight included. */
  groupMembers(h: Host, group: string | null): number {
    if (group === null) return 0;
    const seen = new Set<string>();
    let n = 0;
    for (const r of h.records ?? []) {
      seen.add(r.id);
      if (r.placementGroup === group) n++;
    }
    for (const [id, u] of this.usageOf(h)) if (!seen.has(id) && u.grows === undefined && u.group === group) n++;
    return n;
  }

  /** GET /hosts: reads each online host's facts and VMs (each within its deadline). */
  async describe(h: Host): Promise<ApiHost> {
    if (h.online) await Promise.all([this.within(h, () => this.facts(h), null).catch(() => null), this.list(h)]);
    const info = h.facts?.info ?? null;
    const alloc = this.allocated(h);
    return {
      name: h.name,
      uri: h.displayUri,
      driver: h.driver.kind,
      state: h.state,
      labels: h.labels,
      hostname: info?.hostname ?? null,
      cpus: info?.cpus ?? null,
      memory_mb: info?.memoryMb ?? null,
      available_memory_mb: info?.freeMemoryMb ?? null,
      allocated: { vcpus: alloc.vcpus, memory_mb: alloc.memoryMb },
      capacity: {
        vcpus: info ? info.cpus * h.vcpuOvercommit : null,
        memory_mb: info ? memoryLimitMb(info.memoryMb, h.memoryOvercommit) : null,
      },
      vms: (h.records ?? []).length,
      versions: { hypervisor: info ? `${info.hypervisor} ${info.hypervisorVersion}` : null, libvirt: info?.libvirtVersion ?? null },
      last_contact: h.lastContact?.toISOString() ?? null,
      last_error: h.lastError,
    };
  }
}

/** `records` with `rec` for VM `id` (replaced or added), or without it (null). */
function withChange(records: VmRecord[], id: string, rec: VmRecord | null): VmRecord[] {
  const i = records.findIndex((r) => r.id === id);
  if (rec === null) return i < 0 ? records : records.toSpliced(i, 1);
  return i < 0 ? [...records, rec] : records.with(i, rec);
}
