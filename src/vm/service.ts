/**
 * The VM service: validation, naming, placement checks, per-VM locking and the API's view
 * of a VM. It talks to one VmDriver and knows nothing about libvirt or QEMU.
 */
import { randomBytes } from "node:crypto";
import { existsSync, statSync } from "node:fs";
import { isAbsolute } from "node:path";
import { assertAccess, type Caller, canAccess, checkQuota, projectForCreate, type QuotaConfig, quotaFor, type Usage } from "../auth/scope.ts";
import { buildSeedIso, MAX_SSH_KEYS, SeedError, type SeedErrorCode, validateSshPublicKey } from "../cloudinit/index.ts";
import type { ConsoleInfo, ConsoleSession, DiskBus, HostInfo, ImageInfo, NetworkMode, VmDriver, VmRecord, VmSpec } from "../drivers/types.ts";
import { containedPath } from "../util/contained-path.ts";
import { loginUserProblem } from "../util/login-user.ts";
import { KeyedMutex } from "../util/mutex.ts";
import { ServiceError } from "../api-types/errors.ts";
import type { ApiDisk, ApiImage, ApiVm, CreateVmRequest } from "../api-types/json.ts";
import { BRIDGE_PATTERN, DISK_BUSES, QMP_QUERY_PATTERN, VM_ID_PATTERN, VM_NAME_PATTERN } from "../api-types/values.ts";
import { fromDriver } from "./errors.ts";
import { checkMemoryFits } from "./capacity.ts";
import type { ImageCatalog } from "./images.ts";

/** Re-exported for the adapters, which talk to the service only. */
export type { ConsoleSession };

export interface ServiceDefaults {
  vcpus: number;
  memoryMb: number;
  rootDiskGb: number;
  networkMode: NetworkMode;
  networkBridge: string;
  userNetworkRestrict: boolean;
  diskDriver: DiskBus;
  sshUser: string;
  kernelDir: string | null;
  stopTimeoutS: number;
  maxExtraDisks: number;
  /**
   * vCPUs one VM may have per host CPU: vCPUs are time-shared, so a VM may have more than
   * the host has cores (a 4-vCPU test VM on a 2-core laptop is normal), within reason.
   */
  vcpuOvercommit: number;
  /** A VM's memory may be up to the host's times this: memory is not time-shared, so 1 by default. */
  memoryOvercommit: number;
}

const NAME_RE = new RegExp(VM_NAME_PATTERN);
const ID_RE = new RegExp(VM_ID_PATTERN);
const BRIDGE_RE = new RegExp(BRIDGE_PATTERN);
const QMP_QUERY_RE = new RegExp(QMP_QUERY_PATTERN);
const GiB = 1024 ** 3;
/** Below this much free space in the pool, creating a VM's overlays is refused. */
const MIN_FREE_POOL_BYTES = 512 * 1024 ** 2;

function newId(): string {
  const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
  return "vm-" + [...randomBytes(8)].map((b) => alphabet[b % 36]).join("");
}

function invalid(field: string, message: string): ServiceError {
  return new ServiceError("validation_error", `${field}: ${message}`, { field });
}

function intIn(field: string, v: unknown, min: number, max: number): number {
  if (typeof v !== "number" || !Number.isInteger(v)) throw invalid(field, "must be an integer");
  if (v < min || v > max) throw invalid(field, `must be between ${min} and ${max}, got ${v}`);
  return v;
}

export class VmService {
  private readonly locks = new KeyedMutex();
  private readonly reservedPorts = new Set<number>();
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
    private readonly quotas: QuotaConfig | null = null,
  ) {}

  /** VM id → name, from the last listing and from creates (a hint: always re-checked). */
  private readonly idToName = new Map<string, string>();

  /** Creates past their quota check and not yet finished, by project then VM id. */
  private readonly inflight = new Map<string, Map<string, { name: string; usage: Usage }>>();

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
      const release = owner !== null ? await this.reserveQuota(owner, spec) : () => {};
      try {
        return await this.createLocked(spec);
      } finally {
        release();
      }
    });
  }

  /**
   * Checks the project's quota and reserves the new VM's share, atomically: one check at a
   * time per project, counting the project's VMs from the driver plus creates still in flight.
   * Returns the release to call when the create has finished (either way).
   */
  private async reserveQuota(project: string, spec: VmSpec): Promise<() => void> {
    const quota = quotaFor(this.quotas, project);
    if (quota === null) return () => {};
    return this.locks.run(`quota:${project}`, async () => {
      // Snapshot the creates in flight *before* listing: one that finishes during the list
      // is then either in the list or in the snapshot, never in neither.
      const pending = this.inflight.get(project) ?? new Map<string, { name: string; usage: Usage }>();
      const inFlight = [...pending];
      const records = (await this.records()).filter((r) => r.owner === project);
      const usage: Usage = { vms: 0, vcpus: 0, memory_mb: 0, disk_gb: 0 };
      const add = (u: Usage) => {
        usage.vms += u.vms;
        usage.vcpus += u.vcpus;
        usage.memory_mb += u.memory_mb;
        usage.disk_gb += u.disk_gb;
      };
      const seen = new Set(records.map((r) => r.id));
      for (const r of records) {
        const disk = r.disks.filter((d) => d.type === "root" || d.type === "data").reduce((n, d) => n + d.size_gb, 0);
        add({ vms: 1, vcpus: r.vcpus, memory_mb: r.memoryMb, disk_gb: disk });
      }
      for (const [id, p] of inFlight) if (!seen.has(id)) add(p.usage);
      const mine: Usage = {
        vms: 1,
        vcpus: spec.vcpus,
        memory_mb: spec.memoryMb,
        disk_gb: spec.rootDiskGb + spec.dataDisks.reduce((n, d) => n + d.sizeGb, 0),
      };
      checkQuota(project, quota, usage, mine);
      pending.set(spec.id, { name: spec.name, usage: mine });
      this.inflight.set(project, pending);
      return () => {
        pending.delete(spec.id);
        if (pending.size === 0 && this.inflight.get(project) === pending) this.inflight.delete(project);
      };
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
          port = await this.allocatePort();
          spec.network.sshPort = port;
        }
        const rec = await this.guard(() => this.driver.create(spec));
        this.idToName.set(rec.id, rec.name);
        return this.toApi(rec);
      } finally {
        if (port !== null) this.reservedPorts.delete(port);
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

  private async allocatePort(): Promise<number> {
    const used = await this.guard(() => this.driver.usedSshPorts());
    for (let attempt = 0; attempt < 50; attempt++) {
      const listener = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
      const port = listener.port;
      listener.stop(true);
      if (!used.has(port) && !this.reservedPorts.has(port)) {
        this.reservedPorts.add(port);
        return port;
      }
    }
    throw new ServiceError("internal_error", "could not find a free port on 127.0.0.1 for SSH forwarding");
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
    };
  }

  /** Semantic validation of a create request; returns a complete spec or throws. */
  async validateCreate(req: CreateVmRequest, owner: string | null): Promise<VmSpec> {
    const d = this.defaults;
    if (typeof req.name !== "string" || !NAME_RE.test(req.name)) {
      throw invalid("name", "must be a DNS label: 1-63 lower-case letters, digits and '-', not starting or ending with '-'");
    }
    if (ID_RE.test(req.name)) throw invalid("name", "must not look like a VM id (vm-xxxxxxxx)");

    const imageRef = req.image ?? req.base_image;
    if (imageRef === undefined) throw invalid("image", "is required (an id, file name or alias from GET /api/v1/images)");
    if (req.image !== undefined && req.base_image !== undefined && req.image !== req.base_image) {
      throw invalid("image", "image and base_image disagree; give one of them");
    }
    const image = this.catalog.find(imageRef);
    if (!image) {
      const known = this.catalog.list().map((i) => i.alias ?? i.id);
      throw new ServiceError("image_not_found", `no base image '${imageRef}'; available: ${known.join(", ") || "none"}`, { field: "image", available: known });
    }

    const host = await this.recentHostInfo();
    const vcpus = intIn("vcpus", req.vcpus ?? d.vcpus, 1, 512);
    if (vcpus > host.cpus * d.vcpuOvercommit) {
      throw new ServiceError(
        "capacity_exceeded",
        `vcpus: ${vcpus} is more than ${host.cpus * d.vcpuOvercommit} (${d.vcpuOvercommit} per host CPU, vm_defaults.vcpu_overcommit; the host has ${host.cpus})`,
        { field: "vcpus", host_cpus: host.cpus },
      );
    }
    if (req.memory_mb !== undefined && req.memory_gb !== undefined) throw invalid("memory_mb", "give memory_mb or memory_gb, not both");
    const memoryMb = req.memory_gb !== undefined ? intIn("memory_gb", req.memory_gb, 1, 4096) * 1024 : intIn("memory_mb", req.memory_mb ?? d.memoryMb, 64, 4194304);
    checkMemoryFits(memoryMb, host.memoryMb, d.memoryOvercommit);
    const minRoot = Math.ceil(image.virtualSizeBytes / GiB);
    const rootDiskGb = intIn("root_disk_gb", req.root_disk_gb ?? Math.max(d.rootDiskGb, minRoot), 1, 65536);
    if (rootDiskGb < minRoot) throw invalid("root_disk_gb", `must be at least ${minRoot} (the size of image ${image.id})`);

    const extra = req.extra_disks ?? [];
    if (!Array.isArray(extra)) throw invalid("extra_disks", "must be a list");
    if (extra.length > d.maxExtraDisks) throw invalid("extra_disks", `at most ${d.maxExtraDisks} extra disks`);
    const dataDisks = extra.map((x, i) => {
      const bus = (x.type ?? d.diskDriver) as DiskBus;
      if (!DISK_BUSES.includes(bus)) throw invalid(`extra_disks[${i}].type`, `must be one of ${DISK_BUSES.join(", ")}`);
      return { sizeGb: intIn(`extra_disks[${i}].size_gb`, x.size_gb, 1, 65536), bus };
    });
    // Disks are thin qcow2 (kdevops hosts routinely give every VM 4 x 100 GiB data disks on
    // smaller pools), so sizes may exceed the pool; a pool with no room left refuses new VMs.
    const storage = host.storage;
    if (storage && storage.capacityBytes > 0 && storage.availableBytes < MIN_FREE_POOL_BYTES) {
      throw new ServiceError(
        "capacity_exceeded",
        `the storage pool ${storage.pool} has only ${Math.floor(storage.availableBytes / 1024 ** 2)} MiB free; free space or grow ${storage.path}`,
        { field: "root_disk_gb" },
      );
    }

    const mode = (req.network?.mode ?? d.networkMode) as NetworkMode;
    if (!["bridge", "user", "none"].includes(mode)) throw invalid("network.mode", "must be bridge, user or none");
    const bridge = mode === "bridge" ? (req.network?.bridge ?? d.networkBridge) : null;
    if (bridge !== null && !BRIDGE_RE.test(bridge)) throw invalid("network.bridge", "must be a libvirt network or host bridge name ([A-Za-z0-9_.:-], up to 64)");
    const restrict = req.network?.restrict ?? d.userNetworkRestrict;

    // Everything the cloud-init seed builder would refuse is refused here, naming the field.
    const sshUser = req.ssh_user ?? d.sshUser;
    const userProblem = loginUserProblem(sshUser);
    if (userProblem !== null) throw invalid("ssh_user", req.ssh_user === undefined ? `${userProblem} (the server's vm_defaults.ssh_user)` : userProblem);
    const given = [...(req.ssh_public_key !== undefined ? [req.ssh_public_key] : []), ...(req.ssh_public_keys ?? [])];
    if (given.length > MAX_SSH_KEYS) throw invalid("ssh_public_keys", `at most ${MAX_SSH_KEYS} SSH keys, got ${given.length}`);
    const keyField = (i: number) => (req.ssh_public_key !== undefined ? (i === 0 ? "ssh_public_key" : `ssh_public_keys[${i - 1}]`) : `ssh_public_keys[${i}]`);
    const keys = given.map((k, i) => {
      if (typeof k !== "string") throw invalid(keyField(i), "must be a string");
      const v = validateSshPublicKey(k.trim());
      if (!v.ok) throw invalid(keyField(i), v.reason);
      return k.trim();
    });

    let boot: VmSpec["boot"] = null;
    if (req.kernel !== undefined || req.initrd !== undefined || req.cmdline !== undefined) {
      if (req.kernel === undefined) throw invalid("kernel", "is required when initrd or cmdline is given");
      boot = {
        kernel: this.bootFile("kernel", req.kernel),
        initrd: req.initrd !== undefined ? this.bootFile("initrd", req.initrd) : null,
        cmdline: req.cmdline ?? null,
      };
      if (boot.cmdline !== null && (boot.cmdline.length > 4096 || /[\x00-\x1f\x7f]/.test(boot.cmdline))) {
        throw invalid("cmdline", "must be at most 4096 printable characters");
      }
    }

    const id = newId();
    return {
      id,
      name: req.name,
      vcpus,
      memoryMb,
      image,
      rootDiskGb,
      dataDisks,
      network: { mode, bridge, restrict, sshPort: null },
      ssh: { user: sshUser, authorizedKeys: keys },
      // Without keys there is nothing for cloud-init to do that the image does not already.
      seedIso: keys.length > 0 ? seedIso({ instanceId: id, hostname: req.name, user: sshUser, sshAuthorizedKeys: keys }) : null,
      boot,
      createdAt: new Date().toISOString(),
      owner,
      start: req.start ?? true,
    };
  }

  /** Direct-kernel-boot files must be regular files inside vm_defaults.kernel_dir. */
  private bootFile(field: string, path: string): string {
    const dir = this.defaults.kernelDir;
    if (!dir) throw invalid(field, "direct kernel boot is disabled on this server (set vm_defaults.kernel_dir)");
    if (typeof path !== "string" || !isAbsolute(path) || path.includes("\0")) throw invalid(field, "must be an absolute path");
    // Inside the directory first (by real path), with one answer for every path outside it,
    // so callers cannot probe which host files exist.
    const real = containedPath(dir, path);
    if (real === null) throw invalid(field, `must be a file inside ${dir} (vm_defaults.kernel_dir)`);
    if (!existsSync(real)) throw invalid(field, `${path} does not exist in ${dir}`);
    if (!statSync(real).isFile()) throw invalid(field, "must be a regular file");
    return real;
  }
}

/** The request field each refusal of the seed builder is about. */
const SEED_FIELDS: Record<Exclude<SeedErrorCode, "INTERNAL">, string> = {
  BAD_INSTANCE_ID: "name",
  BAD_HOSTNAME: "name",
  BAD_USER: "ssh_user",
  BAD_SSH_KEY: "ssh_public_keys",
  NO_SSH_KEYS: "ssh_public_keys",
  BAD_NETWORK_CONFIG: "network",
};

/** The NoCloud seed; validateCreate checks its inputs first, so this is a backstop for a new builder rule. */
function seedIso(input: Parameters<typeof buildSeedIso>[0]): Uint8Array {
  try {
    return buildSeedIso(input);
  } catch (e) {
    if (e instanceof SeedError && e.code !== "INTERNAL") throw invalid(SEED_FIELDS[e.code], e.message);
    throw e;
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
  };
}
