/**
 * The VM service: naming, access, quotas, per-VM locking and the API's view of a VM; create
 * requests are validated by validate-create.ts. It talks to one VmDriver and knows nothing
 * about libvirt or QEMU.
 */
import { ServiceError } from "../api-types/errors.ts";
import type { ApiDisk, ApiImage, ApiVm, CreateVmRequest } from "../api-types/json.ts";
import { QMP_QUERY_PATTERN, VM_ID_PATTERN } from "../api-types/values.ts";
import { assertAccess, type Caller, canAccess, projectForCreate, type QuotaConfig } from "../auth/scope.ts";
import type { ConsoleInfo, ConsoleSession, HostInfo, ImageInfo, VmDriver, VmRecord, VmSpec } from "../drivers/types.ts";
import { KeyedMutex } from "../util/mutex.ts";
import { fromDriver } from "./errors.ts";
import type { ImageCatalog } from "./images.ts";
import { QuotaReservations } from "./quota-reservations.ts";
import { SshPortReservations } from "./ssh-ports.ts";
import { invalid, type ServiceDefaults, validateCreate } from "./validate-create.ts";

export type { ServiceDefaults };

/** Re-exported for the adapters, which talk to the service only. */
export type { ConsoleSession };

const ID_RE = new RegExp(VM_ID_PATTERN);
const QMP_QUERY_RE = new RegExp(QMP_QUERY_PATTERN);
const GiB = 1024 ** 3;

export class VmService {
  private readonly locks = new KeyedMutex();
  private readonly sshPorts = new SshPortReservations();
  /** Capacity checks in a burst of creates share one recent reading of the host. */
  private hostCache: { at: number; info: Promise<HostInfo> } | null = null;

  private recentHostInfo(): Promise<HostInfo> {
    const now = Date.now();
    if (!this.hostCache || now - this.hostCache.at > 2000) {
      const info = this.guard(() => this.driver.hostInfo());
      this.hostCache = { at: now, info };
      info.catch(() => (this.hostCache = null));
    }
    return this.hostCache.info;
  }

  constructor(
    /** For tests that reach into the driver; adapters use the service's own methods. */
    readonly driver: VmDriver,
    private readonly catalog: ImageCatalog,
    private readonly defaults: ServiceDefaults,
    /** Told how long each lifecycle operation took (metrics). */
    private readonly onOperation: (op: string, ms: number, ok: boolean) => void = () => {},
    /** Per-project quotas; null = none. */
    quotas: QuotaConfig | null = null,
  ) {
    this.quotaReservations = new QuotaReservations(quotas);
  }

  private readonly quotaReservations: QuotaReservations;

  /** VM id → name, from the last listing and from creates (a hint: always re-checked). */
  private readonly idToName = new Map<string, string>();


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

  private async timed<T>(op: string, fn: () => Promise<T>): Promise<T> {
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

  // ---- the hypervisor ----

  /** Which driver runs the VMs (libvirt or qemu). */
  get driverKind(): VmDriver["kind"] {
    return this.driver.kind;
  }

  /** Whether the hypervisor answers (GET /health). */
  health(): Promise<{ ok: boolean; detail: string }> {
    return this.driver.health();
  }

  /** The driver's connection figures for /metrics: reconnects so far, and the slow-call window (libvirt). */
  connectionStats(): { reconnects: number; slowCalls: { inFlight: number; waiting: number; window: number } | null } {
    return { reconnects: this.driver.reconnects?.() ?? 0, slowCalls: this.driver.slowCalls?.() ?? null };
  }

  // ---- reads ----

  /** Every VM the caller may see: a user token's project only; all for admins (or with auth off). */
  async list(caller: Caller | null = null): Promise<ApiVm[]> {
    const records = (await this.records()).filter((r) => canAccess(caller, r.owner));
    return Promise.all(records.map((r) => this.toApi(r)));
  }

  async get(ref: string, caller: Caller | null = null): Promise<ApiVm> {
    return this.toApi(await this.resolve(ref, caller));
  }

  images(): ApiImage[] {
    return this.catalog.list().map(toApiImage);
  }

  image(ref: string): ApiImage {
    const img = this.catalog.find(ref);
    if (!img) throw new ServiceError("not_found", `no image '${ref}'; GET /api/v1/images lists the available ones`);
    return toApiImage(img);
  }

  /** The host and every VM record, read once (status, metrics). */
  async snapshot(): Promise<{ host: HostInfo; records: VmRecord[] }> {
    const [host, records] = await Promise.all([this.guard(() => this.driver.hostInfo()), this.records()]);
    return { host, records };
  }

  /** Host facts and VM counts; the counts are of the VMs the caller may see (its project's for a user token). */
  async status(caller: Caller | null = null): Promise<{ host: HostInfo; vms: Record<string, number>; allocated: { vcpus: number; memory_mb: number; vms: number } }> {
    const snap = await this.snapshot();
    const host = snap.host;
    const records = snap.records.filter((r) => canAccess(caller, r.owner));
    const byState: Record<string, number> = {};
    let vcpus = 0;
    let memory = 0;
    for (const r of records) {
      byState[r.state] = (byState[r.state] ?? 0) + 1;
      if (r.state !== "stopped") {
        vcpus += r.vcpus;
        memory += r.memoryMb;
      }
    }
    return { host, vms: byState, allocated: { vcpus, memory_mb: memory, vms: records.length } };
  }

  /** An interactive console session on a running VM (the caller must own the VM). */
  async openConsole(ref: string, caller: Caller | null = null): Promise<ConsoleSession> {
    const rec = await this.resolve(ref, caller);
    if (rec.state !== "running" && rec.state !== "paused") {
      throw new ServiceError("invalid_state", `${rec.name} is ${rec.state}; start it to use its console`);
    }
    return this.guard(() => this.driver.openConsole(rec.name));
  }

  async console(ref: string, caller: Caller | null = null): Promise<ConsoleInfo> {
    const rec = await this.resolve(ref, caller);
    return this.guard(() => this.driver.console(rec.name));
  }

  // ---- lifecycle ----

  async create(req: CreateVmRequest, caller: Caller | null = null): Promise<ApiVm> {
    const owner = projectForCreate(caller, req.project);
    const spec = await this.validateCreate(req, owner);
    return this.timed("create", async () => {
      const release = owner !== null ? await this.quotaReservations.reserve(owner, spec, () => this.records()) : () => {};
      try {
        return await this.createLocked(spec);
      } finally {
        release();
      }
    });
  }

  private createLocked(spec: VmSpec): Promise<ApiVm> {
    return this.locks.run(`name:${spec.name}`, async () => {
      if (await this.guard(() => this.driver.get(spec.name))) {
        throw new ServiceError("name_taken", `a VM named '${spec.name}' already exists; pick another name or delete it first`);
      }
      let port: number | null = null;
      try {
        if (spec.network.mode === "user") {
          port = this.sshPorts.allocate(await this.guard(() => this.driver.usedSshPorts()));
          spec.network.sshPort = port;
        }
        const rec = await this.guard(() => this.driver.create(spec));
        this.idToName.set(rec.id, rec.name);
        return this.toApi(rec);
      } finally {
        if (port !== null) this.sshPorts.release(port);
      }
    });
  }

  async start(ref: string, caller: Caller | null = null): Promise<ApiVm> {
    return this.timed("start", () => this.mutate(ref, caller, (name) => this.driver.start(name)));
  }

  async stop(ref: string, opts: { force?: boolean; timeoutS?: number } = {}, caller: Caller | null = null): Promise<ApiVm> {
    const timeoutS = opts.timeoutS ?? this.defaults.stopTimeoutS;
    if (!Number.isInteger(timeoutS) || timeoutS < 0 || timeoutS > 3600) throw invalid("timeout", "must be an integer number of seconds between 0 and 3600");
    return this.timed("stop", () => this.mutate(ref, caller, (name) => this.driver.stop(name, { force: opts.force ?? false, timeoutMs: timeoutS * 1000 })));
  }

  async reboot(ref: string, caller: Caller | null = null): Promise<ApiVm> {
    return this.timed("reboot", () => this.mutate(ref, caller, (name) => this.driver.reboot(name)));
  }

  async delete(ref: string, caller: Caller | null = null): Promise<{ id: string; name: string; status: "destroyed" }> {
    const rec = await this.resolve(ref, caller);
    return this.locks.run(`name:${rec.name}`, async () => {
      await this.timed("delete", () => this.guard(() => this.driver.delete(rec.name)));
      return { id: rec.id, name: rec.name, status: "destroyed" as const };
    });
  }

  async qmp(ref: string, command: string, args?: Record<string, unknown>, caller: Caller | null = null): Promise<unknown> {
    if (!QMP_QUERY_RE.test(command)) {
      throw invalid("execute", "only read-only query-* commands are allowed through this endpoint");
    }
    const rec = await this.resolve(ref, caller);
    if (rec.state !== "running" && rec.state !== "paused") throw new ServiceError("invalid_state", `${rec.name} is ${rec.state}; QMP needs a running VM`);
    return this.guard(() => this.driver.qmp(rec.name, command, args));
  }

  // ---- helpers ----

  private async mutate(ref: string, caller: Caller | null, op: (name: string) => Promise<void>): Promise<ApiVm> {
    const rec = await this.resolve(ref, caller);
    return this.locks.run(`name:${rec.name}`, async () => {
      await this.guard(() => op(rec.name));
      const after = await this.guard(() => this.driver.get(rec.name));
      if (!after) throw new ServiceError("not_found", `VM '${rec.name}' disappeared`);
      return this.toApi(after);
    });
  }

  /**
   * `{id}` in the API may be the id (vm-xxxxxxxx) or the name. A VM of another project than
   * the caller's is 403 forbidden (after the lookup, so a missing VM is still 404).
   */
  async resolve(ref: string, caller: Caller | null = null): Promise<VmRecord> {
    const rec = await this.lookup(ref);
    assertAccess(caller, rec.owner, rec.name);
    return rec;
  }

  private async lookup(ref: string): Promise<VmRecord> {
    if (typeof ref !== "string" || ref.length === 0 || ref.length > 64 || !/^[A-Za-z0-9._-]+$/.test(ref)) {
      throw new ServiceError("not_found", `no VM '${String(ref).slice(0, 64)}'`);
    }
    if (ID_RE.test(ref)) {
      // By id: the name remembered for it, checked (names are reused after deletes); a full
      // listing only for ids not seen yet.
      const known = this.idToName.get(ref);
      if (known) {
        const rec = await this.guard(() => this.driver.get(known));
        if (rec?.id === ref) return rec;
        this.idToName.delete(ref);
      }
      const rec = (await this.records()).find((r) => r.id === ref);
      if (rec) return rec;
    }
    const rec = await this.guard(() => this.driver.get(ref));
    if (!rec) throw new ServiceError("not_found", `no VM with id or name '${ref}'`);
    return rec;
  }

  /** Every VM from the driver, remembering each id's name for lookups by id. */
  private async records(): Promise<VmRecord[]> {
    const records = await this.guard(() => this.driver.list());
    this.idToName.clear();
    for (const r of records) this.idToName.set(r.id, r.name);
    return records;
  }

  private async guard<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      throw fromDriver(e);
    }
  }

  /** Semantic validation of a create request (validate-create.ts) against a recent reading of the host. */
  async validateCreate(req: CreateVmRequest, owner: string | null): Promise<VmSpec> {
    return validateCreate(req, owner, { defaults: this.defaults, catalog: this.catalog, host: await this.recentHostInfo() });
  }

  private async toApi(r: VmRecord): Promise<ApiVm> {
    let ip: string | null = null;
    if (r.state === "running") {
      try {
        ip = await this.driver.ipAddress(r);
      } catch {
        ip = null; // address discovery is best effort
      }
    }
    const disks: ApiDisk[] = r.disks
      .filter((d) => d.type === "root" || d.type === "data")
      .map((d) => ({ type: d.type as "root" | "data", size_gb: d.size_gb, driver: d.driver, format: d.format, serial: d.serial }));
    return {
      id: r.id,
      name: r.name,
      uuid: r.uuid,
      state: r.state,
      vcpus: r.vcpus,
      memory_mb: r.memoryMb,
      disks,
      network: { mode: r.network.mode, bridge: r.network.bridge, ip_address: ip, mac_address: r.network.mac, ssh_port: r.network.sshPort },
      image: r.image,
      ip_address: ip,
      ssh_port: r.network.sshPort,
      ssh_user: r.sshUser,
      kernel: r.boot?.kernel ?? null,
      initrd: r.boot?.initrd ?? null,
      cmdline: r.boot?.cmdline ?? null,
      created_at: r.createdAt,
      updated_at: r.updatedAt,
      project: r.owner,
      host: "local",
      host_state: "online",
      placement_group: r.placementGroup,
    };
  }
}

function toApiImage(i: ImageInfo): ApiImage {
  return {
    id: i.id,
    name: i.alias ?? i.id,
    file_name: i.fileName,
    alias: i.alias,
    format: i.format,
    virtual_size_gb: Math.round((i.virtualSizeBytes / GiB) * 100) / 100,
    disk_size_mb: Math.round((i.diskSizeBytes / 1024 ** 2) * 10) / 10,
    hosts: ["local"],
  };
}
