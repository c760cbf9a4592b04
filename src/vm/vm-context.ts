/** What the VM service's parts share: the fleet, per-VM locks, lookups and their hints, the event feed, timing, and the API view of a record. */
import { ServiceError } from "../api-types/errors.ts";
import type { ApiVm } from "../api-types/json.ts";
import { VM_ID_PATTERN } from "../api-types/values.ts";
import { assertAccess, type Caller } from "../auth/scope.ts";
import type { VmRecord } from "../drivers/types.ts";
import { KeyedMutex } from "../util/mutex.ts";
import { currentRequestId } from "../util/request-context.ts";
import { toApiVm } from "./api-vm.ts";
import type { CrashRecord, CrashRecords } from "./crashes.ts";
import type { KnownVm, VmEventFeed } from "./event-feed.ts";
import { Fleet } from "./fleet.ts";
import type { Host, HostRegistry } from "./hosts.ts";
import type { ServiceDefaults } from "./validate-create.ts";

const ID_RE = new RegExp(VM_ID_PATTERN);

/** A VM and the host it lives on. */
export interface Located {
  host: Host;
  rec: VmRecord;
}

export class VmContext {
  readonly locks = new KeyedMutex();
  readonly fleet: Fleet;
  /** VM id → where it was last seen (a hint: always re-checked). */
  private readonly byId = new Map<string, { host: string; name: string }>();
  /** VM name → the host it was last seen on (a hint). */
  private readonly byName = new Map<string, string>();
  /** Records remembered in byId/byName and the event feed, with their host. */
  private readonly remembered = new WeakMap<VmRecord, string>();
  /** Where VM and host events go (GET /events); null until the service's attachEvents. */
  feed: VmEventFeed | null = null;

  constructor(
    readonly registry: HostRegistry,
    readonly defaults: ServiceDefaults,
    /** Crashed VMs and on_crash (crashes.ts). */
    readonly crashes: CrashRecords,
    /** Told how long each lifecycle operation took (metrics). */
    private readonly onOperation: (op: string, ms: number, ok: boolean) => void,
  ) {
    this.fleet = new Fleet(registry);
  }

  /** Runs a lifecycle operation; a failure is published as operation-failed (with the request id). */
  async tracked<T>(op: string, ref: string, caller: Caller | null, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      this.feed?.failed(op, ref, caller, e, currentRequestId());
      throw e;
    }
  }

  /** Lifecycle operations running now (graceful shutdown waits for them). */
  private running = 0;
  private idle: (() => void)[] = [];

  /** Resolves when no lifecycle operation is running, or after `timeoutMs`. */
  async drain(timeoutMs: number): Promise<boolean> {
    if (this.running === 0) return true;
    return Promise.race([
      new Promise<boolean>((r) => this.idle.push(() => r(true))),
      Bun.sleep(timeoutMs).then(() => false),
    ]);
  }

  async timed<T>(op: string, fn: () => Promise<T>): Promise<T> {
    const t0 = performance.now();
    this.running++;
    try {
      const v = await fn();
      this.onOperation(op, performance.now() - t0, true);
      return v;
    } catch (e) {
      this.onOperation(op, performance.now() - t0, false);
      throw e;
    } finally {
      if (--this.running === 0) for (const r of this.idle.splice(0)) r();
    }
  }

  /**
   * Runs `fn` on the VM as it is now, holding the VM's lock like every change. The VM is looked
   * up (and the caller's access checked) before the lock, so under it the VM of that name is
   * read again: one deleted meanwhile, and maybe replaced by another of the same name (another
   * project's, even), is 404, never the other VM.
   */
  async underLock<T>(ref: string, caller: Caller | null, op: string, fn: (host: Host, rec: VmRecord) => Promise<T>): Promise<T> {
    return this.lockedAt(await this.resolve(ref, caller), ref, op, fn);
  }

  /** underLock for a VM the caller has looked up already (`found`, access checked). */
  lockedAt<T>(found: Located, ref: string, op: string, fn: (host: Host, rec: VmRecord) => Promise<T>): Promise<T> {
    const { host } = found;
    return this.timed(op, () =>
      this.locks.run(`name:${found.rec.name}`, async () => {
        const rec = await this.fleet.onHost(host, () => host.driver.get(found.rec.name));
        if (!rec || rec.id !== found.rec.id) throw new ServiceError("not_found", `VM '${ref}' disappeared`);
        return fn(host, rec);
      }),
    );
  }

  /**
   * `{id}` in the API may be the id (vm-xxxxxxxx) or the name, on any host. A VM of another
   * project than the caller's is 403 forbidden (after the lookup, so a missing VM is still 404).
   */
  async resolve(ref: string, caller: Caller | null = null): Promise<Located> {
    const found = await this.lookup(ref);
    assertAccess(caller, found.rec.owner, found.rec.name);
    return found;
  }

  private async lookup(ref: string): Promise<Located> {
    if (typeof ref !== "string" || ref.length === 0 || ref.length > 64 || !/^[A-Za-z0-9._-]+$/.test(ref)) {
      throw new ServiceError("not_found", `no VM '${String(ref).slice(0, 64)}'`);
    }
    const byId = ID_RE.test(ref);
    // Where it was last seen, checked there (names are reused after deletes).
    const hint = byId ? this.byId.get(ref) : this.byName.has(ref) ? { host: this.byName.get(ref)!, name: ref } : undefined;
    const hinted = hint ? this.registry.get(hint.host) : undefined;
    if (hint && hinted) {
      const rec = await this.fleet.onHost(hinted, () => hinted.driver.get(hint.name));
      if (rec && (byId ? rec.id === ref : true)) return { host: hinted, rec };
      if (byId) this.byId.delete(ref);
      else this.byName.delete(ref);
    }
    // Not known where: every online host is asked; the first that has it answers.
    const online = this.registry.hosts.filter((h) => h.online);
    const found = await firstFound(
      online.map(async (h): Promise<Located | null> => {
        const rec = byId ? (await this.fleet.onHost(h, () => h.driver.list())).find((r) => r.id === ref) : await this.fleet.onHost(h, () => h.driver.get(ref));
        return rec ? { host: h, rec } : null;
      }),
    );
    if (found) {
      this.remember(found.host, [found.rec]);
      return found;
    }
    const onDownHost = this.registry.hosts.find((h) => !h.online && h.records?.some((r) => r.id === ref || r.name === ref));
    if (onDownHost) throw new ServiceError("host_unavailable", `VM '${ref}' is on host ${onDownHost.name}, which is not answering (${onDownHost.lastError ?? "offline"})`, { host: onDownHost.name });
    if (online.length === 0) {
      const why = this.registry.hosts.map((h) => h.lastError).filter(Boolean).join("; ");
      throw new ServiceError("hypervisor_unavailable", why || "no host is answering");
    }
    throw new ServiceError("not_found", `no VM with id or name '${ref}'`);
  }

  /** Where VMs are (hints for lookups, names for the event feed); `listing`: skip records remembered before. */
  remember(h: Host, records: VmRecord[], listing = false): void {
    for (const r of records) {
      // A listing hands out most records again unchanged; a lookup that had to search writes its hints anew.
      if (listing && this.remembered.get(r) === h.name) continue;
      this.remembered.set(r, h.name);
      this.byId.set(r.id, { host: h.name, name: r.name });
      this.byName.set(r.name, h.name);
      this.feed?.remember(known(r, h));
    }
  }

  /** The VM as it is after an operation on it (remembered, and as the API shows it); 404 if it went away meanwhile. */
  async current(host: Host, name: string): Promise<ApiVm> {
    const after = await this.fleet.onHost(host, () => host.driver.get(name));
    if (!after) throw new ServiceError("not_found", `VM '${name}' disappeared`);
    this.remember(host, [after]);
    this.fleet.replaced(host, after);
    return this.toApi(after, host, true);
  }

  /** Drops the hints of a deleted VM. */
  forget(rec: VmRecord): void {
    this.byId.delete(rec.id);
    this.byName.delete(rec.name);
  }

  async toApi(record: VmRecord, h: Host, fresh: boolean): Promise<ApiVm> {
    const rec = this.withCrash(h.name, record);
    const ip = fresh && rec.state === "running" ? await this.address(h, rec) : null;
    return toApiVm({ rec, host: h.name, hostState: h.state, fresh, ip });
  }

  /** Overlays of records with a crash recorded here, kept per record and crash so the listing's kept JSON stays valid. */
  private readonly crashOverlays = new WeakMap<VmRecord, { crash: CrashRecord; out: VmRecord }>();

  /**
   * The record as the API shows it: a crash seen here (crashes.ts: QEMU died, or the guest
   * panicked) sets state and crash_reason; else what the driver reports (a guest held after a
   * panic, which libvirt keeps across rcloud restarts).
   * Records are never changed in place (the listing keeps JSON by record), so this is a copy.
   */
  withCrash(host: string, rec: VmRecord): VmRecord {
    const crash = this.crashes.get(host, rec.name);
    if (!crash) return rec;
    const kept = this.crashOverlays.get(rec);
    if (kept?.crash === crash) return kept.out;
    const view = this.crashes.view(host, rec.name, rec.state);
    const out: VmRecord = { ...rec, state: view.state, crashReason: view.crashReason ?? rec.crashReason };
    this.crashOverlays.set(rec, { crash, out });
    return out;
  }

  /** A running VM's address; discovery is best effort (null when the host cannot say). */
  async address(h: Host, rec: VmRecord): Promise<string | null> {
    try {
      return await h.driver.ipAddress(rec);
    } catch {
      return null;
    }
  }
}

/** What the event feed keeps of a VM. */
export function known(r: VmRecord, h: Host): KnownVm {
  return { id: r.id, name: r.name, owner: r.owner, host: h.name };
}

/** The first task to find something; null when none does; the first error when one failed and none found. */
function firstFound<T>(tasks: Promise<T | null>[]): Promise<T | null> {
  if (tasks.length === 0) return Promise.resolve(null);
  return new Promise((resolve, reject) => {
    let left = tasks.length;
    let error: unknown = null;
    for (const t of tasks) {
      t.then(
        (v) => {
          if (v !== null) resolve(v);
          else if (--left === 0) (error === null ? resolve(null) : reject(error));
        },
        (e: unknown) => {
          error ??= e;
          if (--left === 0) reject(error);
        },
      );
    }
  });
}
