/**
 * The VM service: the one facade the adapters use. Naming, access, quotas, placement and the
 * API's view of a VM, over a fleet of hosts (fleet.ts), each behind one VmDriver; create
 * requests are validated by validate-create.ts and placed by placement.ts. What its parts
 * share is vm-context.ts; snapshots, dumps, kernel boot and reconcile are in snapshot-ops.ts,
 * dumps.ts, boot-ops.ts and reconcile.ts. It knows nothing about libvirt or QEMU.
 */
import { ServiceError } from "../api-types/errors.ts";
import type { ApiBootFile, ApiConsole, ApiDump, ApiHost, ApiImage, ApiReconcile, ApiReconcileHost, ApiSnapshot, ApiSnapshotDeleted, ApiVm, BootVmRequest, CreateSnapshotRequest, CreateVmRequest, UpdateVmRequest } from "../api-types/json.ts";
import { type HostState, isActiveState, type OnCrash, type PlacementPolicy, QMP_QUERY_PATTERN } from "../api-types/values.ts";
import { type Caller, canAccess, projectForCreate, type QuotaConfig } from "../auth/scope.ts";
import type { ConsoleSession, DumpReader, HostInfo, ImageInfo, ListOptions, VmDriver, VmRecord, VmSpec } from "../drivers/types.ts";
import type { EventSink } from "../events/bus.ts";
import { abortableSleep } from "../util/abortable-sleep.ts";
import type { KeyedMutex } from "../util/mutex.ts";
import { currentRequestId } from "../util/request-context.ts";
import { byCreation, type ListedVm, toApiVm, VmJsonCache } from "./api-vm.ts";
import { bootFile, bootVm, resolveBoot, storeBootFile } from "./boot-ops.ts";
import { CrashRecords } from "./crashes.ts";
import { listDumps, readDump } from "./dumps.ts";
import { fromDriver } from "./errors.ts";
import { VmEventFeed } from "./event-feed.ts";
import { countsOnHost, type Fleet, type HostListing, LIST_PATIENCE_MS } from "./fleet.ts";
import { type FleetImage, findImage } from "./fleet-images.ts";
import { type Host, HostDownError, type HostRegistry } from "./hosts.ts";
import { place, type PlacementCandidate, refusal, type Refusal } from "./placement.ts";
import { checkPoolRoom, DEFAULT_POOL_RESERVE_BYTES } from "./pool-room.ts";
import { QuotaReservations } from "./quota-reservations.ts";
import { Reconciler } from "./reconcile.ts";
import { createSnapshot, deleteSnapshot, listSnapshots, revertSnapshot } from "./snapshot-ops.ts";
import { SshPortReservations } from "./ssh-ports.ts";
import { diskGb, effective, isEmptyChange, planUpdate, type UpdatePlan, undoChange } from "./update.ts";
import { invalid, type ServiceDefaults, validateCreate } from "./validate-create.ts";
import { known, type Located, VmContext } from "./vm-context.ts";

export type { ServiceDefaults };

/** Re-exported for the adapters, which talk to the service only. */
export type { ConsoleSession, HostInfo };

const QMP_QUERY_RE = new RegExp(QMP_QUERY_PATTERN);
const GiB = 1024 ** 3;
/** on_crash: restart: pauses before trying a failed restart again (then it is given up, and logged). */
const RESTART_RETRY_MS = [2_000, 10_000, 30_000];

export interface ServiceOptions {
  defaults: ServiceDefaults;
  /** Told how long each lifecycle operation took (metrics). */
  onOperation?: (op: string, ms: number, ok: boolean) => void;
  /** Per-project quotas; null = none. */
  quotas?: QuotaConfig | null;
  placement?: PlacementPolicy;
  /** What to do when a VM's QEMU dies under it (crashes.ts); default stop. */
  onCrash?: OnCrash;
  /** Told when on_crash: restart could not start a crashed VM again. */
  onRestartFailed?: (host: string, vm: string, error: string, retryInMs: number | null) => void;
}

export class VmService {
  private readonly ctx: VmContext;
  private readonly reconciler: Reconciler;
  private readonly locks: KeyedMutex;
  private readonly sshPorts = new SshPortReservations();
  private readonly quotaReservations: QuotaReservations;
  private readonly fleet: Fleet;
  private readonly defaults: ServiceDefaults;
  private readonly policy: PlacementPolicy;
  /** Each listed VM's JSON, for GET /vms. */
  private readonly vmJson = new VmJsonCache();

  constructor(
    readonly registry: HostRegistry,
    opts: ServiceOptions,
  ) {
    this.crashes = new CrashRecords(opts.onCrash ?? "stop", (host, name, id) => this.restartCrashed(host, name, id, opts.onRestartFailed));
    this.ctx = new VmContext(registry, opts.defaults, this.crashes, opts.onOperation ?? (() => {}));
    this.reconciler = new Reconciler(this.ctx);
    this.fleet = this.ctx.fleet;
    this.locks = this.ctx.locks;
    this.defaults = opts.defaults;
    this.quotaReservations = new QuotaReservations(opts.quotas ?? null);
    this.policy = opts.placement ?? "spread";
    for (const h of registry.hosts) h.driver.subscribe?.((e) => this.crashes.onDriverEvent(h.name, e));
  }

  /** Crashed VMs and on_crash (crashes.ts). */
  readonly crashes: CrashRecords;
  /** Aborted by drain(): on_crash restarts waiting to try again give up. */
  private readonly stopping = new AbortController();

  /**
   * on_crash: restart: the VM is started again, under its name's lock like any start; not if
   * it was deleted meanwhile (and another VM may have its name now). `id`: the crashed VM's, as
   * the driver's event said it; null: the VM of that name when the restart begins.
   */
  private async restartCrashed(hostName: string, name: string, id: string | null, onFailed?: (host: string, vm: string, error: string, retryInMs: number | null) => void): Promise<void> {
    const h = this.registry.get(hostName);
    if (!h) return;
    let crashed: string | null = id;
    // A start can fail for a passing reason (a loaded host, QEMU slow to answer on QMP): tried
    // again after a pause, a few times, like a service manager's restart policy.
    for (let attempt = 0; ; attempt++) {
      try {
        crashed ??= (await this.fleet.onHost(h, () => h.driver.get(name)))?.id ?? null;
        if (crashed === null) return;
        const vmId = crashed;
        await this.locks.run(`name:${name}`, async () => {
          const now = await this.fleet.onHost(h, () => h.driver.get(name));
          if (now?.id !== vmId) return; // deleted meanwhile: nothing to restart
          if (now.state !== "stopped" && now.state !== "crashed") return; // started by someone meanwhile
          await this.fleet.onHost(h, () => h.driver.start(name));
        });
        return;
      } catch (e) {
        const retryInMs = RESTART_RETRY_MS[attempt] ?? null;
        onFailed?.(hostName, name, (e as Error).message, retryInMs);
        if (retryInMs === null) return;
        await abortableSleep(retryInMs, this.stopping.signal);
        if (this.stopping.signal.aborted) return;
      }
    }
  }

  /** The first host's driver: for tests that reach into a one-host server's driver. */
  get driver(): VmDriver {
    return this.registry.hosts[0]!.driver;
  }

  /** Publishes every host's lifecycle events, host changes and the service's own operations to `sink`. */
  attachEvents(sink: EventSink): void {
    this.ctx.feed?.stop();
    const feed = new VmEventFeed(sink);
    for (const h of this.registry.hosts) {
      feed.watch(h.name, h.driver, async (name) => {
        const rec = await h.driver.get(name);
        return rec ? known(rec, h) : null;
      });
    }
    this.registry.onChange = (h, action, detail) => feed.hostChanged(h.name, action, detail);
    this.ctx.feed = feed;
  }

  /** Resolves when no lifecycle operation is running, or after `timeoutMs`. */
  drain(timeoutMs: number): Promise<boolean> {
    this.stopping.abort(); // no more on_crash restarts
    return this.ctx.drain(timeoutMs);
  }

  // ---- the hosts ----

  /** Which driver runs the VMs (libvirt or qemu). */
  get driverKind(): VmDriver["kind"] {
    return this.driver.kind;
  }

  /**
   * Whether rcloud can run VMs (GET /health): some host is online. One host: its own words.
   * `brief`: only the hosts' names and whether they answer (callers without a token).
   */
  health(opts: { brief?: boolean } = {}): { ok: boolean; detail: string } {
    const hosts = this.registry.hosts;
    const online = hosts.filter((h) => h.online);
    if (opts.brief) {
      const down = hosts.filter((h) => !h.online).map((h) => h.name);
      return { ok: online.length > 0, detail: `${online.length} of ${hosts.length} hosts online${down.length ? `; offline: ${down.join(", ")}` : ""}` };
    }
    if (hosts.length === 1) {
      const h = hosts[0]!;
      return h.online ? { ok: true, detail: `connected to ${h.displayUri}` } : { ok: false, detail: h.lastError ?? `connecting to ${h.displayUri}` };
    }
    const down = hosts.filter((h) => !h.online).map((h) => `${h.name} (${h.lastError ?? "connecting"})`);
    return { ok: online.length > 0, detail: `${online.length} of ${hosts.length} hosts online${down.length ? `; offline: ${down.join(", ")}` : ""}` };
  }

  /** `text` (an error message) as API clients may see it: no user name or local path of any host's URI. */
  redact(text: string): string {
    return this.registry.hosts.reduce((t, h) => h.redact(t), text);
  }

  /** The drivers' connection figures for /metrics, summed over the hosts. */
  connectionStats(): { reconnects: number; slowCalls: { inFlight: number; waiting: number; window: number } | null } {
    let reconnects = 0;
    let slowCalls: { inFlight: number; waiting: number; window: number } | null = null;
    for (const h of this.registry.hosts) {
      reconnects += h.driver.reconnects?.() ?? 0;
      const s = h.driver.slowCalls?.() ?? null;
      if (s) slowCalls = slowCalls ? { inFlight: slowCalls.inFlight + s.inFlight, waiting: slowCalls.waiting + s.waiting, window: slowCalls.window + s.window } : s;
    }
    return { reconnects, slowCalls };
  }

  async hosts(): Promise<ApiHost[]> {
    return Promise.all(this.registry.hosts.map((h) => this.fleet.describe(h)));
  }

  host(name: string): Promise<ApiHost> {
    return this.fleet.describe(this.fleet.mustHost(name));
  }

  /** Cordons (no new VMs) or uncordons a host; kept across restarts. */
  async cordon(name: string, on: boolean): Promise<ApiHost> {
    const h = this.fleet.mustHost(name);
    await this.registry.cordon(h.name, on);
    return this.fleet.describe(h);
  }

  // ---- reconcile (reconcile.ts) ----

  /** Reconciles every host that answers; an offline host is reported, not waited for (reconcile.ts). */
  reconcile(): Promise<ApiReconcile> {
    return this.reconciler.reconcile();
  }

  /** One host's reconcile (also run by the server each time a host connects). */
  reconcileHost(h: Host): Promise<ApiReconcileHost> {
    return this.reconciler.reconcileHost(h);
  }

  // ---- reads ----

  /** Every VM the caller may see (a user token's project only; all for admins), optionally of one host. */
  async list(caller: Caller | null = null, opts: { host?: string } = {}): Promise<ApiVm[]> {
    return (await this.listed(caller, opts)).map(toApiVm);
  }

  /** list() as the UTF-8 JSON body of GET /vms, `{"vms":[...]}`, from each VM's kept bytes (api-vm.ts). */
  async listJson(caller: Caller | null = null, opts: { host?: string } = {}): Promise<Blob> {
    return this.vmJson.list(await this.listed(caller, opts));
  }

  private async listed(caller: Caller | null, opts: { host?: string }): Promise<ListedVm[]> {
    const hosts = opts.host === undefined ? this.registry.hosts : [this.fleet.mustHost(opts.host)];
    const listings = await this.listings(hosts);
    const perHost: ListedVm[][] = [];
    const addresses: Promise<void>[] = [];
    for (const l of listings) {
      const host = l.host.name;
      const hostState = l.host.state;
      const vms: ListedVm[] = [];
      for (const record of l.records) {
        if (!canAccess(caller, record.owner)) continue;
        const rec = this.ctx.withCrash(host, record);
        const v: ListedVm = { rec, host, hostState, fresh: l.fresh, ip: null };
        vms.push(v);
        if (l.fresh && rec.state === "running") addresses.push(this.ctx.address(l.host, rec).then((ip) => void (v.ip = ip)));
      }
      perHost.push(vms);
    }
    await Promise.all(addresses);
    return byCreation(perHost);
  }

  /** The listings of `hosts`; 503 when none of them answered (nothing current to show). */
  private async listings(hosts: Host[]): Promise<HostListing[]> {
    let listings = await Promise.all(hosts.map((h) => this.fleet.list(h)));
    // Nothing answered in time, but a host that is online is only busy: with nothing current
    // to show, waiting for it beats a 503 (a loaded single host is not a dead one).
    if (listings.every((l) => !l.fresh) && listings.some((l) => l.host.online)) {
      listings = await Promise.all(hosts.map((h) => this.fleet.list(h, LIST_PATIENCE_MS)));
    }
    if (listings.length > 0 && listings.every((l) => !l.fresh)) {
      const why = listings.map((l) => (hosts.length === 1 ? l.error : `${l.host.name}: ${l.error}`)).join("; ");
      throw new ServiceError("hypervisor_unavailable", hosts.length === 1 ? why : `no host answered: ${why}`);
    }
    for (const l of listings) this.ctx.remember(l.host, l.records, true);
    return listings;
  }

  async get(ref: string, caller: Caller | null = null): Promise<ApiVm> {
    const { host, rec } = await this.resolve(ref, caller);
    return this.ctx.toApi(rec, host, true);
  }

  async images(): Promise<ApiImage[]> {
    return (await this.fleet.fleetImages()).map(toApiImage);
  }

  async image(ref: string): Promise<ApiImage> {
    const img = findImage(await this.fleet.fleetImages(), ref);
    if (!img) throw new ServiceError("not_found", `no image '${String(ref).slice(0, 64)}'; GET /api/v1/images lists the available ones`);
    return toApiImage(img);
  }

  /** Copies a base image to another host through the hosts' volume streams. */
  async copyImage(ref: string, to: string, from: string | undefined, caller: Caller | null = null): Promise<ApiImage> {
    if (caller !== null && caller.role !== "admin") throw new ServiceError("forbidden", "copying images between hosts needs an admin token");
    const img = findImage(await this.fleet.fleetImages(), ref);
    if (!img) throw new ServiceError("not_found", `no image '${String(ref).slice(0, 64)}'; GET /api/v1/images lists the available ones`);
    const dst = this.fleet.mustHost(to);
    if (img.hosts.includes(dst.name)) throw new ServiceError("conflict", `host ${dst.name} already has image ${img.info.id}`);
    const srcName = from ?? img.hosts.find((n) => this.registry.get(n)?.online);
    if (srcName === undefined) throw new ServiceError("host_unavailable", `no online host has image ${img.info.id} (it is on ${img.hosts.join(", ")})`);
    const src = this.fleet.mustHost(srcName);
    if (!img.hosts.includes(src.name)) throw invalid("from", `host ${src.name} does not have image ${img.info.id} (it is on ${img.hosts.join(", ")})`);
    return this.locks.run(`image:${img.info.id}@${dst.name}`, () =>
      this.ctx.timed("image_copy", async () => {
        const reader = await this.fleet.onHost(src, () => src.driver.readImage(img.info.id));
        await this.fleet.onHost(dst, () => dst.driver.writeImage(reader.image.fileName, reader.image.format, reader.sizeBytes, reader.data)).catch(async (e: unknown) => {
          await reader.data.cancel().catch(() => {});
          throw e;
        });
        this.fleet.forgetImages(dst);
        const after = findImage(await this.fleet.fleetImages(), img.info.id);
        return toApiImage(after ?? img);
      }),
    );
  }

  /** Every host's VM records with the host each lives on (status; metrics, which show CPU time, with `cpuTime`). */
  async snapshot(opts?: ListOptions): Promise<{ hosts: { host: Host; info: HostInfo | null; records: VmRecord[]; fresh: boolean }[] }> {
    const hosts = this.registry.hosts;
    const [listings, infos] = await Promise.all([
      Promise.all(hosts.map((h) => this.fleet.list(h, undefined, opts))),
      Promise.all(hosts.map((h) => (h.online ? this.fleet.within(h, () => this.fleet.facts(h), h.facts?.info ?? null).catch(() => null) : Promise.resolve(null)))),
    ]);
    return { hosts: listings.map((l, i) => ({ host: l.host, info: infos[i] ?? null, records: l.records, fresh: l.fresh })) };
  }

  /**
   * The fleet's capacity and the caller's VMs: counts of the VMs the caller may see (its
   * project's for a user token); 503 when no host answers.
   */
  async status(caller: Caller | null = null): Promise<{
    hosts: { name: string; state: HostState; info: HostInfo | null }[];
    vms: Record<string, number>;
    allocated: { vcpus: number; memory_mb: number; vms: number };
  }> {
    const snap = await this.snapshot();
    if (!snap.hosts.some((h) => h.info !== null)) {
      const why = snap.hosts.map((h) => (snap.hosts.length === 1 ? h.host.lastError : `${h.host.name}: ${h.host.lastError}`)).join("; ");
      throw new ServiceError("hypervisor_unavailable", why || "no host is answering");
    }
    const byState: Record<string, number> = {};
    let vcpus = 0;
    let memory = 0;
    let count = 0;
    for (const h of snap.hosts) {
      for (const r of h.records) {
        if (!canAccess(caller, r.owner)) continue;
        const state = h.fresh ? r.state : "unknown";
        byState[state] = (byState[state] ?? 0) + 1;
        count++;
        if (countsOnHost(r)) {
          vcpus += r.vcpus;
          memory += r.memoryMb;
        }
      }
    }
    return { hosts: snap.hosts.map((h) => ({ name: h.host.name, state: h.host.state, info: h.info })), vms: byState, allocated: { vcpus, memory_mb: memory, vms: count } };
  }

  /** An interactive console session on a running VM (the caller must own the VM). */
  async openConsole(ref: string, caller: Caller | null = null): Promise<ConsoleSession> {
    const { host, rec } = await this.resolve(ref, caller);
    if (!isActiveState(rec.state)) {
      throw new ServiceError("invalid_state", `${rec.name} is ${rec.state}; start it to use its console`);
    }
    return this.fleet.onHost(host, () => host.driver.openConsole(rec.name));
  }

  /** The last `maxBytes` of the VM's serial console log. */
  async consoleLog(ref: string, maxBytes: number, caller: Caller | null = null): Promise<Uint8Array> {
    const { host, rec } = await this.resolve(ref, caller);
    const driver = host.driver;
    if (!driver.consoleLog) {
      throw new ServiceError("unsupported", `the ${driver.kind} driver does not hand out console logs; GET /api/v1/vms/${rec.name}/console names the log file on the host`);
    }
    return this.fleet.onHost(host, () => driver.consoleLog!(rec.name, maxBytes));
  }

  async console(ref: string, caller: Caller | null = null): Promise<ApiConsole> {
    const { host, rec } = await this.resolve(ref, caller);
    const info = await this.fleet.onHost(host, () => host.driver.console(rec.name));
    return { type: info.type, log_file: info.logFile, logFile: info.logFile, command: info.command, ssh: info.ssh };
  }

  // ---- lifecycle ----

  async create(req: CreateVmRequest, caller: Caller | null = null): Promise<ApiVm> {
    return this.ctx.tracked("create", String(req?.name ?? ""), caller, () => this.createChecked(req, caller));
  }

  private async createChecked(req: CreateVmRequest, caller: Caller | null): Promise<ApiVm> {
    const owner = projectForCreate(caller, req.project);
    const images = await this.fleet.fleetImages();
    const spec = this.unlessHostsDown(() =>
      validateCreate(req, owner, {
        defaults: this.defaults,
        findImage: (ref) => findImage(images, ref)?.info ?? null,
        imageNames: () => images.map((i) => i.info.alias ?? i.info.id),
      }),
    );
    const image = findImage(images, spec.image.id)!;
    if (req.host !== undefined) this.pinnedHost(req.host);
    return this.ctx.timed("create", async () => {
      const release = owner !== null ? await this.quotaReservations.reserve(owner, spec, () => this.allRecords()) : () => {};
      try {
        return await this.createLocked(spec, image, req.host ?? null, req.debug?.gdb === true);
      } finally {
        release();
      }
    });
  }

  /** An image no host lists may be on a host that does not answer: say that rather than "no such image". */
  private unlessHostsDown<T>(fn: () => T): T {
    try {
      return fn();
    } catch (e) {
      const down = this.registry.hosts.filter((h) => !h.online || this.fleet.unlisted.has(h.name));
      if (!(e instanceof ServiceError && e.code === "image_not_found") || down.length === 0) throw e;
      const reason = (h: Host) => h.lastError ?? this.fleet.imageErrors.get(h.name) ?? "connecting";
      const why = down.map((h) => (this.registry.hosts.length === 1 ? reason(h) : `${h.name}: ${reason(h)}`)).join("; ");
      throw new ServiceError("hypervisor_unavailable", `${e.message}; the images of ${down.length === this.registry.hosts.length ? "every host" : "some hosts"} cannot be listed now: ${why}`);
    }
  }

  /** A create's `host`: 422 naming the field when no such host. */
  private pinnedHost(name: string): Host {
    const h = this.registry.get(name);
    if (!h) throw invalid("host", `no host '${name}'; known: ${this.registry.hosts.map((x) => x.name).join(", ")}`);
    return h;
  }

  private createLocked(spec: VmSpec, image: FleetImage, pinned: string | null, gdb: boolean): Promise<ApiVm> {
    return this.locks.run(`name:${spec.name}`, async () => {
      await this.checkNameFree(spec.name);
      await this.refreshForPlacement();
      const candidates = this.candidates(image, spec.placementGroup);
      // From here to reserve() nothing awaits: concurrent creates see each other's choices.
      const placed = place(candidates, { vcpus: spec.vcpus, memoryMb: spec.memoryMb, image: image.info.id, pinned }, this.policy);
      if ("refusals" in placed) throw refusalError(placed.refusals, pinned, this.registry.hosts.length);
      const host = this.registry.get(placed.host)!;
      const done = this.fleet.reserve(host, spec.id, { vcpus: spec.vcpus, memoryMb: spec.memoryMb, group: spec.placementGroup });
      const ports: number[] = [];
      let created: VmRecord | null = null;
      try {
        const onHost = (await this.fleet.hostImages(host)).find((i) => i.id === image.info.id);
        if (!onHost) throw new ServiceError("image_not_found", `host ${host.name} no longer has image ${image.info.id}`, { field: "image" });
        spec.image = onHost;
        if (spec.boot) {
          const { kernel, initrd, cmdline } = spec.boot;
          spec.boot = { kernel: await bootFile(this.ctx, host, "kernel", kernel), initrd: initrd === null ? null : await bootFile(this.ctx, host, "initrd", initrd), cmdline };
        }
        spec.shares = await this.shareDirs(host, spec.shares);
        checkPoolRoom(host.name, await this.fleet.facts(host), spec, this.defaults.poolReserveBytes ?? DEFAULT_POOL_RESERVE_BYTES);
        if (spec.network.mode === "user" || gdb) {
          // SSH forwards and gdbstubs share the host's ports: one reservation set for both.
          const used = await this.fleet.onHost(host, () => host.driver.usedSshPorts());
          const take = () => {
            const port = this.sshPorts.allocate(used);
            ports.push(port);
            return port;
          };
          if (spec.network.mode === "user") spec.network.sshPort = take();
          if (gdb) spec.gdbPort = take();
        }
        this.ctx.feed?.beginCreate(spec.name);
        const call = host.driver.create(spec);
        created = await this.fleet.onHost(host, () => call).catch((e: unknown) => {
          this.ctx.feed?.createFailed(spec.name);
          // The caller was told it failed: if the frozen host finishes the create later, undo it.
          if (e instanceof ServiceError && e.cause instanceof HostDownError) this.reconciler.abandon(host, spec.id, spec.name, call);
          throw e;
        });
        this.ctx.feed?.created(known(created, host), currentRequestId(), spec.start);
        this.ctx.remember(host, [created]);
        return await this.ctx.toApi(created, host, true);
      } finally {
        done(created);
        for (const port of ports) this.sshPorts.release(port);
      }
    });
  }

  /** The shares' real paths as the VM's host has them (inside its share_dirs); refusals name the field. */
  private async shareDirs(h: Host, shares: VmSpec["shares"]): Promise<VmSpec["shares"]> {
    const out: VmSpec["shares"] = [];
    for (const [i, s] of shares.entries()) {
      const field = `shares[${i}].host_path`;
      const where = this.registry.hosts.length > 1 ? ` (on host ${h.name})` : "";
      try {
        out.push({ ...s, hostPath: await this.fleet.onHost(h, () => h.driver.shareDir(s.hostPath)) });
      } catch (e) {
        if (!(e instanceof ServiceError)) throw e;
        if (e.code === "not_found") throw new ServiceError("share_not_allowed", `${field}: ${e.message}${where}`, { field });
        if (e.code === "invalid_state") throw invalid(field, `${e.message}${where}`);
        if (e.code === "unsupported") throw new ServiceError("unsupported", `${field}: ${e.message}`, { field });
        throw e;
      }
    }
    return out;
  }

  /** Every host is asked (an offline one answers from its last listing): names are unique across the fleet. */
  private async checkNameFree(name: string): Promise<void> {
    const found = await Promise.all(
      this.registry.hosts.map(async (h) => {
        // Its cache, with the creates and deletes since its last listing (which may be slow to answer).
        const cached = this.fleet.hasName(h, name) ? h : null;
        if (!h.online) return cached;
        // A host that does not answer in time is judged by its last listing.
        const rec = await this.fleet.within(h, () => h.driver.get(name), "late" as const);
        return rec === "late" ? cached : rec ? h : null;
      }),
    );
    const on = found.find((h) => h !== null);
    if (on) {
      const where = this.registry.hosts.length > 1 ? ` (on host ${on.name})` : "";
      throw new ServiceError("name_taken", `a VM named '${name}' already exists${where}; pick another name or delete it first`);
    }
  }

  /** Online hosts' facts and listings are read if missing or old. */
  private async refreshForPlacement(): Promise<void> {
    await Promise.all(
      this.registry.hosts.map(async (h) => {
        if (!h.online) return;
        await this.fleet.within(h, () => this.fleet.facts(h), null).catch(() => null);
        if (h.records === null) await this.fleet.list(h);
      }),
    );
  }

  /** Every host as placement sees it now: built in the same tick as place() and reserve(). */
  private candidates(image: FleetImage, group: string | null): PlacementCandidate[] {
    const hosts = this.registry.hosts;
    return hosts.map((h) => ({
      name: h.name,
      state: h.state,
      hasImage: image.hosts.includes(h.name),
      cpus: h.facts?.info.cpus ?? null,
      memoryMb: h.facts?.info.memoryMb ?? null,
      vcpuOvercommit: h.vcpuOvercommit,
      memoryOvercommit: h.memoryOvercommit,
      allocated: this.fleet.allocated(h),
      groupMembers: this.fleet.groupMembers(h, group),
    }));
  }

  async start(ref: string, caller: Caller | null = null): Promise<ApiVm> {
    return this.ctx.tracked("start", ref, caller, () => this.mutate(ref, caller, "start", async (h, name) => {
      await h.driver.start(name);
      this.crashes.clear(h.name, name);
    }));
  }

  async stop(ref: string, opts: { force?: boolean; timeoutS?: number } = {}, caller: Caller | null = null): Promise<ApiVm> {
    return this.ctx.tracked("stop", ref, caller, async () => {
      const timeoutS = opts.timeoutS ?? this.defaults.stopTimeoutS;
      if (!Number.isInteger(timeoutS) || timeoutS < 0 || timeoutS > 3600) throw invalid("timeout", "must be an integer number of seconds between 0 and 3600");
      return this.mutate(ref, caller, "stop", (h, name) => h.driver.stop(name, { force: opts.force ?? false, timeoutMs: timeoutS * 1000 }));
    });
  }

  /**
   * PATCH: changes a VM in place. update.ts validates and plans; the host's placement rules
   * and the project's quota must allow what the VM grows to; the driver applies it live or
   * for the next start. With `restart`, the VM is stopped gracefully first and started after;
   * if it does not start with the change, the change is undone and it is started as it was.
   */
  async update(ref: string, req: UpdateVmRequest, caller: Caller | null = null): Promise<ApiVm> {
    return this.ctx.underLock(ref, caller, "update", async (host, rec) => {
      const plan = planUpdate(req, rec, this.defaults);
      await resolveBoot(this.ctx, host, rec, plan);
      const grown = await this.checkGrowth(host, rec, plan);
      let ok = false;
      try {
        const add = { vms: 0, vcpus: plan.next.vcpus - rec.vcpus, memory_mb: plan.next.memoryMb - rec.memoryMb, disk_gb: plan.next.diskGb - diskGb(rec) };
        const grows = add.vcpus > 0 || add.memory_mb > 0 || add.disk_gb > 0;
        const release = rec.owner !== null && grows ? await this.quotaReservations.reserveChange(rec.owner, rec, add, () => this.allRecords()) : () => {};
        try {
          await this.applyPlan(host, rec, plan);
        } finally {
          release();
        }
        const after = await this.ctx.current(host, rec.name);
        ok = true;
        return after;
      } finally {
        grown(ok);
      }
    });
  }

  private async applyPlan(host: Host, rec: VmRecord, plan: UpdatePlan): Promise<void> {
    const driver = host.driver;
    const on = <T>(call: () => Promise<T>) => this.fleet.onHost(host, call);
    if (plan.stopFirst) await on(() => driver.stop(rec.name, { force: false, timeoutMs: this.defaults.stopTimeoutS * 1000 }));
    if (!isEmptyChange(plan.change)) {
      try {
        await on(() => driver.update(rec.name, plan.change));
      } catch (e) {
        // As it was: running again if this request stopped it.
        if (plan.stopFirst) await on(() => driver.start(rec.name)).catch(() => {});
        throw e;
      }
    }
    if (!plan.startAfter) return;
    try {
      await on(() => driver.start(rec.name));
    } catch (e) {
      if (isEmptyChange(plan.change)) throw e;
      // It does not start with the change: back to what it was (disks removed stay removed).
      const changed = await on(() => driver.get(rec.name));
      const undo = changed ? undoChange(rec, changed) : {};
      let undoInternal = false;
      const undone = await on(() => driver.update(rec.name, undo))
        .then(() => on(() => driver.start(rec.name)))
        .then(
          () => "the change was undone and the VM started as it was",
          (u: unknown) => {
            undoInternal = fromDriver(u).internal;
            return `undoing the change failed too: ${(u as Error).message}`;
          },
        );
      const err = fromDriver(e);
      // Either failure unexpected: an internal error, the whole message for the log.
      const internal = err.internal || undoInternal;
      throw new ServiceError(internal ? "internal_error" : err.code, `${rec.name} did not start with the change: ${err.message}; ${undone}`, err.details, { cause: e, internal });
    }
  }

  /**
   * What the VM grows to must fit its host by the placement rules, beside everything else that
   * counts there (its own share counted once, as the host's cache has it); the new size is
   * reserved in the same step, so PATCHes and creates running at once see it. Returns the
   * end of that reservation (fleet.reserveGrowth).
   */
  private async checkGrowth(host: Host, rec: VmRecord, plan: UpdatePlan): Promise<(ok: boolean) => void> {
    const cur = effective(rec);
    if (plan.next.vcpus <= cur.vcpus && plan.next.memoryMb <= cur.memoryMb) return () => {};
    const info = await this.fleet.facts(host);
    // From here to reserveGrowth() nothing awaits.
    const candidate: PlacementCandidate = {
      name: host.name,
      state: "online", // a cordon keeps new VMs away, not growth of the ones there
      hasImage: true,
      cpus: info.cpus,
      memoryMb: info.memoryMb,
      vcpuOvercommit: host.vcpuOvercommit,
      memoryOvercommit: host.memoryOvercommit,
      allocated: this.fleet.allocated(host, rec.id),
      groupMembers: 0,
    };
    const no = refusal(candidate, { vcpus: plan.next.vcpus, memoryMb: plan.next.memoryMb, image: rec.image, pinned: host.name });
    if (no) throw new ServiceError("capacity_exceeded", `host ${host.name}: ${no.reason}`, { field: no.resource === "vcpus" ? "vcpus" : "memory_mb", hosts: [{ host: no.host, reason: no.reason }] });
    return this.fleet.reserveGrowth(host, rec.id, { vcpus: plan.next.vcpus, memoryMb: plan.next.memoryMb });
  }

  /** PUT /vms/{id}/kernel|initrd: the body stored as the VM's uploaded kernel or initrd (boot-ops.ts). */
  storeBootFile(ref: string, kind: "kernel" | "initrd", sizeBytes: number | null, data: ReadableStream<Uint8Array> | null, caller: Caller | null = null): Promise<ApiBootFile> {
    return storeBootFile(this.ctx, ref, kind, sizeBytes, data, caller);
  }

  /** POST /vms/{id}/boot: restarts the VM on its uploaded kernel or back on its disk's (boot-ops.ts). */
  boot(ref: string, req: BootVmRequest, caller: Caller | null = null): Promise<ApiVm> {
    return bootVm(this.ctx, ref, req, caller);
  }

  async reboot(ref: string, caller: Caller | null = null): Promise<ApiVm> {
    return this.ctx.tracked("reboot", ref, caller, () => this.mutate(ref, caller, "reboot", (h, name) => h.driver.reboot(name)));
  }

  async delete(ref: string, caller: Caller | null = null): Promise<{ id: string; name: string; status: "destroyed" }> {
    return this.ctx.tracked("delete", ref, caller, () => this.deleteChecked(ref, caller));
  }

  private deleteChecked(ref: string, caller: Caller | null): Promise<{ id: string; name: string; status: "destroyed" }> {
    return this.ctx.underLock(ref, caller, "delete", async (host, rec) => {
      const vm = known(rec, host);
      this.ctx.feed?.beginDelete(vm);
      await this.fleet.onHost(host, () => host.driver.delete(rec.name)).catch((e: unknown) => {
        this.ctx.feed?.deleteFailed(rec.name);
        throw e;
      });
      this.ctx.feed?.deleted(vm, currentRequestId());
      this.crashes.clear(host.name, rec.name);
      this.fleet.forget(host, rec.id);
      this.ctx.forget(rec);
      return { id: rec.id, name: rec.name, status: "destroyed" as const };
    });
  }

  // ---- snapshots (snapshot-ops.ts; rules in snapshots.ts) ----

  snapshots(ref: string, caller: Caller | null = null): Promise<ApiSnapshot[]> {
    return listSnapshots(this.ctx, ref, caller);
  }

  /** Takes a snapshot under the VM's lock: memory when it runs, its disks when stopped (snapshots.ts). */
  createSnapshot(ref: string, req: CreateSnapshotRequest, caller: Caller | null = null): Promise<ApiSnapshot> {
    return createSnapshot(this.ctx, ref, req, caller);
  }

  /** Reverts to a snapshot: a memory snapshot leaves the VM running where it was, a disk-only one stopped. */
  revertSnapshot(ref: string, snapshot: string, caller: Caller | null = null): Promise<ApiVm> {
    return revertSnapshot(this.ctx, ref, snapshot, caller);
  }

  deleteSnapshot(ref: string, snapshot: string, caller: Caller | null = null): Promise<ApiSnapshotDeleted> {
    return deleteSnapshot(this.ctx, ref, snapshot, caller);
  }

  async qmp(ref: string, command: string, args?: Record<string, unknown>, caller: Caller | null = null): Promise<unknown> {
    if (!QMP_QUERY_RE.test(command)) {
      throw invalid("execute", "only read-only query-* commands are allowed through this endpoint");
    }
    const { host, rec } = await this.resolve(ref, caller);
    if (!isActiveState(rec.state)) throw new ServiceError("invalid_state", `${rec.name} is ${rec.state}; QMP needs a running VM`);
    return this.fleet.onHost(host, () => host.driver.qmp(rec.name, command, args));
  }

  // ---- helpers ----

  /** Start, stop or reboot, under the VM's lock (on the VM looked up, never a new one of its name). */
  private mutate(ref: string, caller: Caller | null, what: "start" | "stop" | "reboot", op: (h: Host, name: string) => Promise<void>): Promise<ApiVm> {
    return this.ctx.underLock(ref, caller, what, async (host, rec) => {
      await this.fleet.onHost(host, () => op(host, rec.name));
      this.ctx.feed?.operated(what, known(rec, host));
      return this.ctx.current(host, rec.name);
    });
  }

  /**
   * `{id}` in the API may be the id (vm-xxxxxxxx) or the name, on any host. A VM of another
   * project than the caller's is 403 forbidden (after the lookup, so a missing VM is still 404).
   */
  resolve(ref: string, caller: Caller | null = null): Promise<Located> {
    return this.ctx.resolve(ref, caller);
  }

  /** Every VM on every host (offline hosts: their last listing), for quota checks. */
  private async allRecords(): Promise<VmRecord[]> {
    const listings = await this.listings(this.registry.hosts);
    return listings.flatMap((l) => l.records);
  }

  // ---- guest memory dumps (dumps.ts) ----

  /** The VM's guest memory dumps (on_panic: dump), oldest first. */
  dumps(ref: string, caller: Caller | null = null): Promise<ApiDump[]> {
    return listDumps(this.ctx, ref, caller);
  }

  /** One dump's bytes, streamed from its host; 404 dump_not_found for a name the VM has no dump by. */
  readDump(ref: string, dump: string, caller: Caller | null = null): Promise<DumpReader & { vm: string }> {
    return readDump(this.ctx, ref, dump, caller);
  }
}

/** Why no host took the VM, as one API error naming every host. */
function refusalError(refusals: Refusal[], pinned: string | null, hostCount: number): ServiceError {
  const offline = refusals.filter((r) => r.down === true);
  if (offline.length === refusals.length) {
    const names = offline.map((r) => r.host).join(", ");
    return pinned !== null
      ? new ServiceError("host_unavailable", `host ${pinned} is not answering; pick another host or wait until it is back`, { field: "host" })
      : new ServiceError("hypervisor_unavailable", hostCount === 1 ? `host ${names} is not answering` : `no host is answering (${names})`);
  }
  const resources = new Set(refusals.map((r) => r.resource));
  const only = resources.size === 1 ? [...resources][0]! : null;
  const field = only === "host" ? (pinned !== null ? "host" : undefined) : (only ?? undefined);
  const message = refusals.length === 1 ? `${hostCount > 1 ? `host ${refusals[0]!.host}: ` : ""}${refusals[0]!.reason}` : `no host can take this VM: ${refusals.map((r) => `${r.host}: ${r.reason}`).join("; ")}`;
  if (only === "image") return new ServiceError("image_not_found", message, { field: "image" });
  return new ServiceError("capacity_exceeded", message, { ...(field ? { field } : {}), hosts: refusals.map((r) => ({ host: r.host, reason: r.reason })) });
}

function toApiImage(f: FleetImage): ApiImage {
  const i: ImageInfo = f.info;
  return {
    id: i.id,
    name: i.alias ?? i.id,
    file_name: i.fileName,
    alias: i.alias,
    format: i.format,
    virtual_size_gb: Math.round((i.virtualSizeBytes / GiB) * 100) / 100,
    disk_size_mb: Math.round((i.diskSizeBytes / 1024 ** 2) * 10) / 10,
    hosts: f.hosts,
  };
}
