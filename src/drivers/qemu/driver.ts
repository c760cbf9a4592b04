/**
 * The direct QEMU driver: rcloud runs qemu-system-x86_64 itself (detached, and in its own
 * systemd scope under systemd, so VMs outlive rcloud; see confine.ts) and controls each VM over its QMP socket; no libvirtd. The state directory is
 * the source of truth (see state.ts); a VM's state comes from its process (pidfile, alive,
 * our QMP socket on its command line) and `query-status`. On start the driver takes the
 * state directory's lock and re-attaches to the QEMUs still running.
 */
import { randomUUID } from "node:crypto";
import { chmodSync, chownSync, closeSync, existsSync, fstatSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { cpus, hostname } from "node:os";
import { dirname, join } from "node:path";
import { reportedBus } from "../../api-types/values.ts";
import { QmpClient, QmpClosedError, QmpConnectError, QmpError, QmpTimeoutError } from "../../qmp/index.ts";
import {
  DriverError,
  type ConsoleInfo,
  type DriverEvent,
  type ConsoleSession,
  type DiskInfo,
  type DumpInfo,
  type DumpReader,
  type HostInfo,
  type ImageInfo,
  type ImageReader,
  type VmDriver,
  type VmRecord,
  type PendingChanges,
  type SnapshotInfo,
  type ReconciledArtefact,
  type ReconcileReport,
  type VmChange,
  type VmChangeResult,
  type UploadedBootFile,
  type VmSpec,
  type VmState,
} from "../types.ts";
import { faultPoint } from "../../util/fault-points.ts";
import { scanImageDir } from "../shared/image-files.ts";
import { createNoSpace, isNoSpace } from "../shared/no-space.ts";
import { localBootFile } from "./boot-file.ts";
import { localUpload, storeLocalUpload } from "./boot-uploads.ts";
import { createDisk, createOverlay, qemuImgFor } from "./disks.ts";
import { DriverListeners, exitDetail, LIFECYCLE_QMP_EVENTS, qmpLifecycle } from "./events.ts";
import { crashState, dumpName, GUEST_PANICKED, isDumpName } from "../shared/crash.ts";
import { readLocalImage, removePartialImages, writeLocalImage } from "./images.ts";
import { meminfo, qemuVersion, storage } from "./host.ts";
import { randomMac } from "../shared/mac.ts";
import { checkBridge } from "./net.ts";
import { resolveRunAs, runAsPrefix, scopePrefix, systemdBooted, type RunAsUser } from "./confine.ts";
import { cpuTimeNs, isOurQemu, qemuArgs, qemuLogTail, readPidfile, resolveAccel, startQemu, waitUntil, type Accel, type AccelChoice } from "./process.ts";
import { StateLock } from "./lock.ts";
import { checkSocketPaths, maxima, scanVms, vmPaths, writeVm, type StoredDisk, type StoredVm, type VmPaths } from "./state.ts";
import { launchConfig, pendingOf, updateQemuVm } from "./update.ts";
import * as snap from "./snapshots.ts";
import { startVirtiofsds, stopVirtiofsds } from "./virtiofsd.ts";
import { checkSharesUnmoved, localShareDir } from "../shared/share-dir.ts";

export interface QemuDriverOptions {
  /** qemu-system-x86_64 (config.qemu.binary). */
  binary: string;
  /** config.qemu.state_dir. */
  stateDir: string;
  /** kvm, tcg, or auto (kvm when /dev/kvm opens read-write); RCLOUD_QEMU_ACCEL. */
  accel: AccelChoice;
  /** config.qemu.run_as: "auto", a user name, or null (see confine.ts). */
  runAs: string | null;
  /** Where systemd keeps its runtime units; its existence means systemd is PID 1 (tests point it elsewhere). */
  systemdRunDir?: string;
  /** The base-image directory (images.base_images_dir). */
  baseImagesDir: string;
  /** Where direct-boot kernels and initrds may be (vm_defaults.kernel_dir); null = no direct boot. */
  kernelDir: string | null;
  /** vm_defaults.share_dirs: directories guests may share; empty = sharing off. */
  shareDirs?: readonly string[];
  /** The virtiofsd binary (tests may point elsewhere); default /usr/lib/qemu/virtiofsd. */
  virtiofsd?: string;
  /** Warnings about records that cannot be used, orphans removed, ... */
  log?: (level: "info" | "warn", msg: string, fields?: Record<string, unknown>) => void;
}

const GiB = 1024 ** 3;
const round2 = (n: number) => Math.round(n * 100) / 100;

interface Runtime {
  pid: number;
  client: QmpClient | null;
  connecting: Promise<QmpClient> | null;
  /** Events of this QEMU (QMP pumps, exit): see events.ts. */
  events: RuntimeEvents;
}

interface RuntimeEvents {
  /** Launching: the RESUME of the first `cont` is the start, not a resume. */
  starting: boolean;
  /** rcloud is stopping or deleting it: an exit without a SHUTDOWN reason is "destroyed". */
  stopping: boolean;
  /** The driver is closing: its QMP connections end, the VMs do not. */
  detached: boolean;
  exitReported: boolean;
  shutdownReason: string | null;
  panicked: boolean;
  /** Resolves when the current QMP client's events are all handled. */
  pumped: Promise<void>;
}

function newRuntime(pid: number): Runtime {
  return {
    pid,
    client: null,
    connecting: null,
    events: { starting: false, stopping: false, detached: false, exitReported: false, shutdownReason: null, panicked: false, pumped: Promise.resolve() },
  };
}

/** QEMU's RunState → ours. */
function stateOf(status: string): VmState {
  switch (status) {
    case "running":
      return "running";
    case "paused":
    case "prelaunch":
    case "debug":
    case "inmigrate":
    case "postmigrate":
    case "finish-migrate":
    case "save-vm":
    case "restore-vm":
    case "colo":
      return "paused";
    case "suspended":
      return "suspended";
    case "shutdown":
      return "stopping";
    case "internal-error":
    case "io-error":
    case "guest-panicked":
    case "watchdog":
      return "crashed";
    default:
      return "unknown";
  }
}

function translate(e: unknown, what: string): never {
  if (e instanceof DriverError && !(e.code === "failed" && isNoSpace(e))) throw e;
  if (isNoSpace(e)) throw new DriverError("no_space", `${what}: the disk is full: ${(e as Error).message}`, { cause: e });
  if (e instanceof QmpClosedError) throw new DriverError("invalid_state", `${what}: QEMU closed its QMP socket (the VM stopped): ${e.message}`, { cause: e });
  if (e instanceof QmpTimeoutError) throw new DriverError("unavailable", `${what}: QEMU did not answer: ${e.message}`, { cause: e });
  if (e instanceof QmpConnectError) throw new DriverError("unavailable", `${what}: cannot reach QEMU: ${e.message}`, { cause: e });
  if (e instanceof QmpError) throw new DriverError("failed", `${what}: ${e.message}`, { cause: e });
  // Anything else was not expected (EACCES on a state file, a bug): for the log, not the client.
  throw new DriverError("failed", `${what}: ${(e as Error)?.message ?? String(e)}`, { cause: e, internal: true });
}

export class QemuDriver implements VmDriver {
  readonly kind = "qemu" as const;
  private lock: StateLock | null = null;
  private initError = "not started";
  private accel: Accel = "tcg";
  private version = "";
  /** The user QEMU runs as (null: rcloud's own) and whether each VM gets its own systemd scope. */
  private runAs: RunAsUser | null = null;
  private scopes = false;
  private readonly qemuImg: string;
  private readonly records = new Map<string, StoredVm>();
  private readonly runtime = new Map<string, Runtime>();
  private staticHost: Omit<HostInfo, "freeMemoryMb" | "storage"> | null = null;
  private readonly listeners = new DriverListeners();
  /** VMs whose create is running (not in `records` until vm.json is written), for their events. */
  private readonly creating = new Map<string, StoredVm>();
  /** VM ids whose create runs, from its first file on: their directories are not orphans. */
  private readonly building = new Set<string>();
  /**
   * VM ids whose QEMU launch() is starting. Until launch registers the process, a reader must
   * not adopt it from its pidfile: it would open a QMP connection of its own, and QEMU serves
   * one QMP client at a time, so the launch's connection would never be greeted.
   */
  private readonly launching = new Set<string>();

  constructor(private readonly opts: QemuDriverOptions) {
    this.qemuImg = qemuImgFor(opts.binary);
  }

  private log(level: "info" | "warn", msg: string, fields?: Record<string, unknown>): void {
    this.opts.log?.(level, msg, fields);
  }

  private paths(id: string): VmPaths {
    return vmPaths(this.opts.stateDir, id);
  }

  /** Throws 503 until init() succeeded (and after close()). */
  private need(): void {
    if (!this.lock) throw new DriverError("unavailable", `qemu driver not ready: ${this.initError}`);
  }

  // ---- start and stop of the driver ------------------------------------------------

  async init(): Promise<void> {
    await this.close();
    this.initError = "starting";
    try {
      const dir = this.opts.stateDir;
      checkSocketPaths(dir);
      this.confine();
      this.accel = await resolveAccel(this.opts.accel, this.opts.binary, runAsPrefix(this.runAs));
      this.version = await qemuVersion(this.opts.binary);
      mkdirSync(join(dir, "vms"), { recursive: true, mode: 0o755 });
      this.checkRunAsReach(join(dir, "vms"));
      const lock = StateLock.acquire(dir);
      try {
        await this.reattach();
      } catch (e) {
        lock.release();
        throw e;
      }
      this.lock = lock;
      const partial = removePartialImages(this.opts.baseImagesDir);
      if (partial.length > 0) this.log("info", "removed image copies a previous run never finished", { dir: this.opts.baseImagesDir, files: partial });
      this.initError = "";
      this.log("info", "qemu driver ready", {
        state_dir: dir,
        accel: this.accel,
        qemu: this.version,
        vms: this.records.size,
        run_as: this.runAs?.name ?? null,
        systemd_scopes: this.scopes,
      });
    } catch (e) {
      this.initError = (e as Error).message;
      if (e instanceof DriverError) throw e;
      throw new DriverError("unavailable", `qemu driver: ${(e as Error).message}`, { cause: e });
    }
  }

  /** Decides the user QEMU runs as and whether it gets a systemd scope (confine.ts). */
  private confine(): void {
    const isRoot = process.getuid?.() === 0;
    const { user, warning } = resolveRunAs(this.opts.runAs, isRoot);
    if (warning) this.log("warn", warning);
    this.runAs = user;
    // Creating a transient unit needs root (or a polkit grant for all units, which is root too).
    this.scopes = systemdBooted(this.opts.systemdRunDir) && isRoot;
    if (systemdBooted(this.opts.systemdRunDir) && !isRoot) {
      this.log("warn", "systemd is PID 1 but rcloud is not root: QEMU stays in rcloud's cgroup, so stopping or restarting rcloud's service stops its VMs (docs/deployment.md)");
    }
  }

  /** The run_as user must be able to reach the VM directories (search permission on every parent). */
  private checkRunAsReach(vmsDir: string): void {
    if (!this.runAs) return;
    // Search (not read) permission for others on the driver's own directories; the VM
    // directories inside are root's and group run_as (handOver).
    const dir = this.opts.stateDir;
    chmodSync(dir, statSync(dir).mode & 0o7777 | 0o001);
    chmodSync(vmsDir, 0o711);
    const p = Bun.spawnSync([...runAsPrefix(this.runAs), "test", "-x", vmsDir], { stdin: "ignore", stdout: "ignore", stderr: "pipe" });
    if (p.exitCode !== 0) {
      throw new DriverError(
        "unavailable",
        `qemu.run_as user ${this.runAs.name} cannot reach ${vmsDir}: it needs search (x) permission on every directory above qemu.state_dir ` +
          `(chmod o+x on the directories above it) ${p.stderr.toString().trim()}`.trim(),
      );
    }
  }

  /**
   * A VM's files belong to the run_as user, except vm.json: the directory is root's, group
   * run_as, sticky (01770), so QEMU can create its sockets and logs but not replace vm.json.
   * Done before every launch, so VMs created before run_as was set are taken over too.
   */
  private handOver(vm: StoredVm, p: VmPaths): void {
    const u = this.runAs;
    if (!u) return;
    chownSync(p.dir, 0, u.gid);
    chmodSync(p.dir, 0o1770);
    for (const f of [...vm.disks.map((d) => p.disk(d.file)), p.serialLog]) {
      if (existsSync(f)) chownSync(f, u.uid, u.gid);
    }
  }

  /** systemd-run --scope and setpriv, as needed; both exec QEMU in place. */
  private prefix(vm: StoredVm): string[] {
    return [...(this.scopes ? scopePrefix(vm.id, vm.name) : []), ...runAsPrefix(this.runAs)];
  }

  /**
   * Loads every vm.json, re-attaches to the QEMUs still running (QMP), notices those that
   * died, and removes what creates cut short left behind (a directory without vm.json).
   */
  private async reattach(): Promise<void> {
    this.records.clear();
    const attaches: Promise<unknown>[] = [];
    for (const { id, vm, error } of scanVms(this.opts.stateDir)) {
      const p = this.paths(id);
      const pid = readPidfile(p.pidfile);
      const alive = pid !== null && isOurQemu(pid, p.qmp);
      if (!vm) {
        if (error) {
          this.log("warn", "ignoring a VM directory with an unusable vm.json", { dir: p.dir, error });
          continue;
        }
        this.startReport.removed.push(...(await this.removeIncomplete(id, alive ? pid : null)));
        continue;
      }
      this.records.set(id, vm);
      if (alive) {
        this.runtime.set(id, newRuntime(pid));
        attaches.push(this.monitor(id).catch((e) => this.log("warn", "cannot attach to a running VM's QMP socket", { vm: vm.name, error: (e as Error).message })));
      } else if (pid !== null) {
        this.log("info", "VM stopped while rcloud was away", { vm: vm.name });
        this.cleanupRuntimeFiles(p);
        this.startReport.adopted.push({ id, name: vm.name, state: "stopped", why: "its QEMU ended while rcloud was away" });
      }
      // A virtiofsd outliving its QEMU serves nobody.
      if (!alive) await stopVirtiofsds(vm.shares ?? [], p).catch((e) => this.log("warn", "cannot stop a stopped VM's virtiofsd", { vm: vm.name, error: (e as Error).message }));
    }
    await Promise.all(attaches);
  }

  /**
   * A VM directory without vm.json is a create that never completed (or a delete past its
   * vm.json): nothing was promised to anyone. Its QEMU (which holds the SSH port forward)
   * is killed and the directory (disks, seed, console log, sockets) removed.
   */
  private async removeIncomplete(id: string, pid: number | null): Promise<ReconciledArtefact[]> {
    const p = this.paths(id);
    const removed: ReconciledArtefact[] = [];
    if (pid !== null) {
      await this.kill(pid, p.qmp);
      removed.push({ kind: "process", name: String(pid), vmId: id });
    }
    rmSync(p.dir, { recursive: true, force: true });
    removed.push({ kind: "vm-directory", name: p.dir, vmId: id });
    this.log("info", "removed an incomplete VM", { id, qemu_killed: pid });
    return removed;
  }

  /** What the start's reattach removed and adopted, handed to the first reconcile. */
  private startReport: ReconcileReport = { removed: [], adopted: [] };

  async reconcile(): Promise<ReconcileReport> {
    this.need();
    const report = this.startReport;
    this.startReport = { removed: [], adopted: [] };
    try {
      for (const { id, vm, error } of scanVms(this.opts.stateDir)) {
        if (vm || error || this.building.has(id) || this.records.has(id)) continue;
        const p = this.paths(id);
        const pid = readPidfile(p.pidfile);
        report.removed.push(...(await this.removeIncomplete(id, pid !== null && isOurQemu(pid, p.qmp) ? pid : null)));
      }
      // QEMUs that ended unseen: their sockets and pidfile go, the VM shows stopped.
      for (const vm of this.records.values()) this.pidOf(vm.id);
      return report;
    } catch (e) {
      translate(e, "reconciling");
    }
  }

  async close(): Promise<void> {
    for (const rt of this.runtime.values()) {
      rt.events.detached = true;
      rt.client?.close();
    }
    this.runtime.clear();
    this.records.clear();
    this.lock?.release();
    this.lock = null;
    this.staticHost = null;
    this.initError = "closed";
  }

  async health(): Promise<{ ok: boolean; detail: string }> {
    if (!this.lock) return { ok: false, detail: `qemu driver not ready: ${this.initError}` };
    if (!this.lock.held()) return { ok: false, detail: `lost the lock ${this.lock.path} (another rcloud took the state directory?)` };
    return { ok: true, detail: `QEMU ${this.version} (${this.accel}), state directory ${this.opts.stateDir}` };
  }

  async hostInfo(): Promise<HostInfo> {
    this.need();
    try {
      if (!this.staticHost) {
        this.staticHost = {
          hostname: hostname(),
          cpus: cpus().length,
          memoryMb: meminfo().totalMb,
          hypervisor: "QEMU",
          hypervisorVersion: this.version,
          libvirtVersion: null,
          driver: "qemu",
          uri: `qemu+direct://${this.opts.stateDir}`,
        };
      }
      return {
        ...this.staticHost,
        freeMemoryMb: meminfo().availableMb,
        storage: { pool: "state_dir", path: this.opts.stateDir, ...storage(this.opts.stateDir) },
      };
    } catch (e) {
      translate(e, "host status");
    }
  }

  async images(): Promise<ImageInfo[]> {
    return scanImageDir(this.opts.baseImagesDir);
  }

  // ---- processes and QMP -----------------------------------------------------------

  /** The PID of the VM's QEMU if it runs (verified against PID reuse), else null. */
  private pidOf(id: string): number | null {
    const p = this.paths(id);
    const rt = this.runtime.get(id);
    if (!rt && this.launching.has(id)) return null; // not running until launch() says so
    const pid = rt?.pid ?? readPidfile(p.pidfile);
    if (pid !== null && isOurQemu(pid, p.qmp)) {
      if (!rt) this.runtime.set(id, newRuntime(pid));
      return pid;
    }
    if (rt) {
      rt.client?.close();
      this.runtime.delete(id);
      const vm = this.records.get(id);
      if (vm) this.reportExit(vm, rt);
    }
    return null;
  }

  /** The VM's QMP connection, (re)connected when needed; one per VM, shared by all callers. */
  private async monitor(id: string): Promise<QmpClient> {
    const rt = this.runtime.get(id);
    if (!rt) throw new DriverError("invalid_state", `VM ${id} is not running`);
    if (rt.client && !rt.client.closed) return rt.client;
    if (rt.connecting) return rt.connecting;
    const p = this.paths(id);
    rt.connecting = QmpClient.connect(p.qmp, { connectTimeoutMs: 3_000, greetingTimeoutMs: 5_000, commandTimeoutMs: 30_000 });
    try {
      const client = await rt.connecting;
      if (this.runtime.get(id) !== rt) {
        client.close();
        throw new DriverError("invalid_state", `VM ${id} stopped`);
      }
      this.adopt(id, rt, client);
      return client;
    } finally {
      rt.connecting = null;
    }
  }

  private adopt(id: string, rt: Runtime, client: QmpClient): void {
    rt.client = client;
    rt.events.pumped = this.pump(id, rt, client);
    client.onClose(() => {
      if (rt.client === client) rt.client = null;
      void this.watchExit(id, rt);
    });
  }

  // ---- events ----------------------------------------------------------------------

  subscribe(listener: (event: DriverEvent) => void): () => void {
    return this.listeners.add(listener);
  }

  private emit(vm: StoredVm, action: DriverEvent["action"], detail: string): void {
    this.listeners.emit({ vmName: vm.name, vmId: vm.id, action, detail });
  }

  /** Turns one QMP connection's events into driver events, until it closes. */
  private async pump(id: string, rt: Runtime, client: QmpClient): Promise<void> {
    for await (const ev of client.events(LIFECYCLE_QMP_EVENTS)) {
      if (ev.event === "SHUTDOWN" && typeof ev.data["reason"] === "string") rt.events.shutdownReason = ev.data["reason"];
      const vm = this.records.get(id) ?? this.creating.get(id);
      const what = qmpLifecycle(ev);
      if (vm && what && !rt.events.starting) this.emit(vm, what.action, what.detail);
      // Once per panic: QEMU sends GUEST_PANICKED again on every vCPU that reaches it.
      if (ev.event === "GUEST_PANICKED" && !rt.events.panicked && vm) {
        rt.events.panicked = true;
        void this.onPanic(vm, rt);
      }
      if (ev.event === "RESUME" || ev.event === "RESET") rt.events.panicked = false;
    }
  }

  /** QMP closed: if QEMU is gone too, the VM stopped (the reason from its last SHUTDOWN event). */
  private async watchExit(id: string, rt: Runtime): Promise<void> {
    if (rt.events.detached || rt.events.exitReported) return;
    const p = this.paths(id);
    if (!(await waitUntil(() => !isOurQemu(rt.pid, p.qmp), 5_000))) return; // alive: QMP reconnects on next use
    const vm = this.records.get(id) ?? this.creating.get(id);
    if (!vm) return;
    await rt.events.pumped;
    if (this.runtime.get(id) === rt) this.runtime.delete(id);
    await this.stopShares(vm);
    this.reportExit(vm, rt);
  }

  /** The VM's virtiofsds, once its QEMU is gone (they would exit on their own when QEMU disconnects). */
  private async stopShares(vm: StoredVm): Promise<void> {
    await stopVirtiofsds(vm.shares ?? [], this.paths(vm.id)).catch((e) => this.log("warn", "cannot stop virtiofsd", { vm: vm.name, error: (e as Error).message }));
  }

  /** After rcloud stopped the QEMU: drops its runtime and reports the exit, after its last QMP events. */
  private async forget(vm: StoredVm, rt: Runtime | undefined): Promise<void> {
    if (!rt) return;
    rt.client?.close();
    if (this.runtime.get(vm.id) === rt) this.runtime.delete(vm.id);
    await rt.events.pumped;
    this.reportExit(vm, rt);
  }

  /** vm-stopped, once per QEMU process. */
  private reportExit(vm: StoredVm, rt: Runtime): void {
    const ev = rt.events;
    if (ev.exitReported || ev.detached) return;
    ev.exitReported = true;
    this.emit(vm, "vm-stopped", exitDetail(ev.shutdownReason, ev.panicked, ev.stopping));
  }

  /**
   * Records that the VM crashed (vm.json, shown as state `crashed` with `crash_reason` until
   * its next launch, also once QEMU is gone): the one place crashes are recorded.
   */
  recordCrash(vm: StoredVm, reason: string): void {
    vm.crash = { reason, at: new Date().toISOString() };
    this.touch(vm);
  }

  /**
   * The guest panicked: QEMU holds it (-action panic=pause); on_panic says what next. A
   * failure is reported as an event, the VM stays crashed.
   */
  private async onPanic(vm: StoredVm, rt: Runtime): Promise<void> {
    this.recordCrash(vm, GUEST_PANICKED);
    const action = vm.on_panic ?? "preserve";
    try {
      if (action === "preserve") return;
      if (action === "stop") return void (await this.stop(vm.name, { force: true, timeoutMs: 0 }));
      const client = await this.monitor(vm.id);
      if (action === "dump") {
        const name = dumpName(new Date());
        const p = this.paths(vm.id);
        const part = `${p.dump(name)}.part`;
        // Written under a name the listing skips, renamed once complete; removed if it never is
        // (a QEMU still writing after the timeout writes on into the unlinked file).
        try {
          await client.execute("dump-guest-memory", { paging: false, protocol: `file:${part}`, format: "elf" }, { timeoutMs: 30 * 60_000 });
          renameSync(part, p.dump(name));
        } catch (e) {
          rmSync(part, { force: true });
          throw e;
        }
        this.emit(vm, "vm-dumped", name);
        return;
      }
      // restart: a reset takes the guest out of guest-panicked (to prelaunch), then it runs.
      await client.execute("system_reset");
      const status = async () => (await client.execute<{ status: string }>("query-status")).status;
      const deadline = Date.now() + 10_000;
      while ((await status()) === "guest-panicked") {
        if (Date.now() > deadline) throw new DriverError("failed", "QEMU stayed in guest-panicked after system_reset");
        await Bun.sleep(50);
      }
      if ((await status()) !== "running") await client.execute("cont");
      vm.crash = null;
      this.touch(vm);
    } catch (e) {
      if (this.runtime.get(vm.id) !== rt) return; // stopped or deleted meanwhile
      this.emit(vm, "vm-crashed", `on_panic ${action} failed: ${(e as Error).message}`);
      this.log("warn", "on_panic action failed", { vm: vm.name, action, error: (e as Error).message });
    }
  }

  private async liveState(id: string): Promise<{ state: VmState; pid: number | null }> {
    const pid = this.pidOf(id);
    if (pid === null) return { state: "stopped", pid: null };
    try {
      const c = await this.monitor(id);
      const { status } = await c.execute<{ status: string }>("query-status", undefined, { timeoutMs: 5_000 });
      return { state: stateOf(status), pid };
    } catch {
      // It may have died just now; or rcloud is stopping it (QMP already closed, the process
      // not gone yet); otherwise QEMU is alive but not answering.
      if (this.pidOf(id) === null) return { state: "stopped", pid: null };
      return { state: this.runtime.get(id)?.events.stopping ? "stopping" : "unknown", pid };
    }
  }

  /** SIGKILL, after checking the PID is still our QEMU; waits until it is gone. */
  private async kill(pid: number, qmpPath: string): Promise<void> {
    if (!isOurQemu(pid, qmpPath)) return;
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // gone meanwhile
    }
    if (!(await waitUntil(() => !isOurQemu(pid, qmpPath), 10_000))) throw new DriverError("failed", `QEMU (PID ${pid}) survived SIGKILL`);
  }

  private cleanupRuntimeFiles(p: VmPaths): void {
    for (const f of [p.qmp, p.serial, p.qga, p.pidfile]) rmSync(f, { force: true });
  }

  /** QMP right after start: the socket file exists a moment before QEMU listens on it. */
  private async firstConnect(pid: number, p: VmPaths): Promise<QmpClient> {
    const deadline = Date.now() + 10_000;
    for (;;) {
      try {
        return await QmpClient.connect(p.qmp, { connectTimeoutMs: 5_000, greetingTimeoutMs: 10_000, commandTimeoutMs: 30_000 });
      } catch (e) {
        if (!(e instanceof QmpConnectError) || Date.now() > deadline || !isOurQemu(pid, p.qmp)) throw e;
        await Bun.sleep(50);
      }
    }
  }

  /** Starts QEMU paused, checks it over QMP, then lets it run; `loadvm`: from that memory snapshot. */
  private async launch(vm: StoredVm, loadvm: string | null = null): Promise<number> {
    this.launching.add(vm.id);
    try {
      return await this.launchQemu(vm, loadvm);
    } finally {
      this.launching.delete(vm.id);
    }
  }

  private async launchQemu(vm: StoredVm, loadvm: string | null): Promise<number> {
    const p = this.paths(vm.id);
    if (vm.network.mode === "bridge") checkBridge(vm.network.bridge);
    for (const f of [vm.boot?.kernel, vm.boot?.initrd]) {
      if (f && !existsSync(f)) throw new DriverError("failed", `${vm.name}: boot file ${f} no longer exists`);
      // From kernel_dir (not an upload in the VM's directory): still there, not redirected since.
      if (f && dirname(f) !== p.dir) this.checkBootFileUnmoved(vm.name, f);
    }
    checkSharesUnmoved(this.opts.shareDirs ?? [], vm.name, (vm.shares ?? []).map((s) => ({ hostPath: s.host_path, tag: s.tag })));
    this.cleanupRuntimeFiles(p);
    this.handOver(vm, p);
    const logStart = existsSync(p.qemuLog) ? statSync(p.qemuLog).size : 0;
    await stopVirtiofsds(vm.shares ?? [], p); // a leftover would hold the socket path
    await startVirtiofsds(vm.shares ?? [], p, {
      prefix: (i) => (this.scopes ? scopePrefix(`${vm.id}-fs${i}`, `${vm.name} share ${i}`) : []),
      own: (path) => {
        if (this.runAs) chownSync(path, this.runAs.uid, this.runAs.gid);
      },
      ...(this.opts.virtiofsd ? { binary: this.opts.virtiofsd } : {}),
    });
    let pid: number;
    try {
      // -loadvm on the command line: QEMU 7.2 cannot load a snapshot over QMP in prelaunch.
      pid = await startQemu([...this.prefix(vm), ...qemuArgs(this.opts.binary, this.accel, vm, p), ...(loadvm !== null ? ["-loadvm", loadvm] : [])], p);
    } catch (e) {
      await this.stopShares(vm);
      throw e;
    }
    const rt: Runtime = newRuntime(pid);
    rt.events.starting = true;
    this.runtime.set(vm.id, rt);
    try {
      if (!isOurQemu(pid, p.qmp)) throw new DriverError("failed", `${vm.name}: QEMU exited right after starting (see ${p.qemuLog} and ${p.serialLog})`);
      // Readers meanwhile (monitor()) wait for this connection instead of opening a second.
      rt.connecting = this.firstConnect(pid, p);
      const client = await rt.connecting.finally(() => (rt.connecting = null));
      this.adopt(vm.id, rt, client);
      const { status } = await client.execute<{ status: string }>("query-status");
      if (status !== "prelaunch") throw new DriverError("failed", `${vm.name}: QEMU is ${status}, expected prelaunch`);
      // Memory below the maximum: the balloon's target, taken as soon as the guest's driver loads.
      if (vm.memory_mb < maxima(vm).maxMemoryMb) await client.execute("balloon", { value: vm.memory_mb * 1024 * 1024 });
      await client.execute("cont");
      vm.live = launchConfig(vm); // the caller writes vm.json
      vm.crash = null;
      rt.events.starting = false;
      this.emit(vm, "vm-started", loadvm !== null ? "from-snapshot" : "booted");
      return pid;
    } catch (e) {
      // Never started, as far as anyone listening knows.
      rt.events.detached = true;
      rt.client?.close();
      this.runtime.delete(vm.id);
      // Died while setting up (a disk or backing file it may not open...): QEMU's words, not QMP's.
      const died = !isOurQemu(pid, p.qmp);
      await this.kill(pid, p.qmp).catch(() => {});
      await this.stopShares(vm);
      const said = died ? qemuLogTail(p, logStart) : "";
      if (said) throw new DriverError("failed", `QEMU failed to start: ${said}`, { cause: e });
      throw e;
    }
  }

  // ---- records ---------------------------------------------------------------------

  private byName(name: string): StoredVm | null {
    for (const vm of this.records.values()) if (vm.name === name) return vm;
    return null;
  }

  private mustGet(name: string): StoredVm {
    this.need();
    const vm = this.byName(name);
    if (!vm) throw new DriverError("not_found", `no VM named ${name}`);
    return vm;
  }

  private toRecord(vm: StoredVm, live: VmState, pid: number | null): VmRecord {
    const p = this.paths(vm.id);
    const { state, crashReason } = crashState(live, vm.crash?.reason ?? null);
    // A running VM is shown as it runs; what vm.json has beyond that is pending.
    const now = pid !== null && state !== "stopped" ? (vm.live ?? launchConfig(vm)) : launchConfig(vm);
    return {
      id: vm.id,
      name: vm.name,
      uuid: vm.uuid,
      state,
      vcpus: now.vcpus,
      maxVcpus: now.max_vcpus,
      memoryMb: now.memory_mb,
      maxMemoryMb: now.max_memory_mb,
      pending: pendingOf(launchConfig(vm), now),
      image: vm.image,
      disks: vm.disks.map((d): DiskInfo => ({ type: d.type, size_gb: d.size_gb, driver: d.driver, format: d.format, serial: d.serial, path: p.disk(d.file) })),
      network: { mode: vm.network.mode, bridge: vm.network.bridge, mac: vm.network.mac, sshPort: vm.network.ssh_port, restrict: vm.network.restrict },
      sshUser: vm.ssh_user,
      boot: now.boot,
      createdAt: vm.created_at,
      updatedAt: vm.updated_at,
      owner: vm.owner,
      placementGroup: vm.placement_group ?? null,
      cpuTimeNs: pid !== null && state !== "stopped" ? cpuTimeNs(pid) : 0n,
      gdbPort: vm.gdb_port ?? null,
      onPanic: vm.on_panic ?? "preserve",
      crashReason,
      shares: (vm.shares ?? []).map((s) => ({ hostPath: s.host_path, tag: s.tag, readonly: s.readonly, transport: s.transport })),
    };
  }

  private async record(vm: StoredVm): Promise<VmRecord> {
    const { state, pid } = await this.liveState(vm.id);
    return this.toRecord(vm, state, pid);
  }

  private touch(vm: StoredVm): void {
    try {
      vm.updated_at = new Date().toISOString();
      writeVm(this.opts.stateDir, vm);
    } catch (e) {
      this.log("warn", "cannot update vm.json", { vm: vm.name, error: (e as Error).message });
    }
  }

  async list(): Promise<VmRecord[]> {
    this.need();
    const all = await Promise.all([...this.records.values()].map((vm) => this.record(vm)));
    return all.sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }

  async get(name: string): Promise<VmRecord | null> {
    this.need();
    const vm = this.byName(name);
    return vm ? this.record(vm) : null;
  }

  async usedSshPorts(): Promise<Set<number>> {
    this.need();
    const ports = new Set<number>();
    for (const vm of [...this.records.values(), ...this.creating.values()]) {
      if (vm.network.ssh_port) ports.add(vm.network.ssh_port);
      if (vm.gdb_port) ports.add(vm.gdb_port);
    }
    return ports;
  }

  // ---- lifecycle -------------------------------------------------------------------

  async create(spec: VmSpec): Promise<VmRecord> {
    this.need();
    if (this.byName(spec.name)) throw new DriverError("conflict", `a VM named ${spec.name} already exists`);
    const p = this.paths(spec.id);
    this.building.add(spec.id);
    try {
      mkdirSync(p.dir, { mode: 0o755 });
    } catch (e) {
      this.building.delete(spec.id);
      translate(e, `creating ${spec.name}`);
    }
    let pid: number | null = null;
    try {
      const net = spec.network;
      if (net.mode === "bridge") checkBridge(net.bridge);
      if (net.mode === "user" && !net.sshPort) throw new DriverError("failed", "user networking needs an SSH port");

      // Root: a qcow2 overlay on the base image; data disks: empty qcow2 (serials kdevops0..N).
      const rootBytes = Math.max(spec.rootDiskGb * GiB, spec.image.virtualSizeBytes);
      const disks: StoredDisk[] = [{ type: "root", file: "root.qcow2", size_gb: round2(rootBytes / GiB), driver: "virtio", format: "qcow2", serial: null }];
      const jobs = [createOverlay(this.qemuImg, { path: spec.image.path, format: spec.image.format }, p.disk("root.qcow2"), rootBytes)];
      for (const [i, d] of spec.dataDisks.entries()) {
        const file = `data${i}.qcow2`;
        disks.push({ type: "data", file, size_gb: d.sizeGb, driver: reportedBus(d.bus), format: "qcow2", serial: `kdevops${i}` });
        jobs.push(createDisk(this.qemuImg, p.disk(file), d.sizeGb * GiB));
      }
      const settled = await Promise.allSettled(jobs);
      const failed = settled.find((r) => r.status === "rejected");
      if (failed) throw (failed as PromiseRejectedResult).reason;
      await faultPoint("create.after-root-volume");
      if (spec.dataDisks.length > 0) await faultPoint("create.after-data-volume");

      if (spec.seedIso) {
        writeFileSync(p.disk("seed.iso"), spec.seedIso, { mode: 0o600 });
        disks.push({ type: "seed", file: "seed.iso", size_gb: round2(spec.seedIso.byteLength / GiB), driver: "sata", format: "raw", serial: null });
        await faultPoint("create.after-seed-upload");
      }

      const vm: StoredVm = {
        version: 1,
        id: spec.id,
        name: spec.name,
        uuid: randomUUID(),
        vcpus: spec.vcpus,
        max_vcpus: spec.maxVcpus,
        memory_mb: spec.memoryMb,
        max_memory_mb: spec.maxMemoryMb,
        image: spec.image.id,
        image_path: spec.image.path,
        root_disk_gb: spec.rootDiskGb,
        disks,
        network: { mode: net.mode, bridge: net.mode === "bridge" ? net.bridge : null, mac: net.mode === "none" ? null : randomMac(), ssh_port: net.mode === "user" ? net.sshPort : null, restrict: net.restrict },
        ssh_user: spec.ssh.user,
        boot: spec.boot,
        created_at: spec.createdAt,
        updated_at: spec.createdAt,
        owner: spec.owner,
        placement_group: spec.placementGroup,
        gdb_port: spec.gdbPort,
        on_panic: spec.onPanic,
        crash: null,
        shares: spec.shares.map((s) => ({ host_path: s.hostPath, tag: s.tag, readonly: s.readonly, transport: s.transport })),
      };
      this.creating.set(vm.id, vm);
      if (spec.start) {
        await faultPoint("create.before-start");
        pid = await this.launch(vm);
        await faultPoint("create.after-start");
      }
      // The define of this driver: vm.json, written last.
      await faultPoint("create.before-define");
      writeVm(this.opts.stateDir, vm); // the commit point: without vm.json the directory is an orphan
      await faultPoint("create.after-define");
      this.records.set(vm.id, vm);
      this.creating.delete(vm.id);
      return this.toRecord(vm, spec.start ? "running" : "stopped", pid);
    } catch (e) {
      this.creating.delete(spec.id);
      const rt = this.runtime.get(spec.id);
      rt?.client?.close();
      this.runtime.delete(spec.id);
      const running = readPidfile(p.pidfile);
      if (running !== null) await this.kill(running, p.qmp).catch(() => {});
      await stopVirtiofsds(spec.shares.map((s) => ({ host_path: s.hostPath, tag: s.tag, readonly: s.readonly, transport: s.transport })), p).catch(() => {});
      rmSync(p.dir, { recursive: true, force: true });
      if (isNoSpace(e)) throw createNoSpace(spec.name, `the state directory ${this.opts.stateDir}`, this.opts.stateDir, e);
      translate(e, `creating ${spec.name}`);
    } finally {
      this.building.delete(spec.id);
    }
  }

  async start(name: string): Promise<void> {
    const vm = this.mustGet(name);
    try {
      const { state, pid } = await this.liveState(vm.id);
      if (state === "paused") await (await this.monitor(vm.id)).execute("cont");
      else if (state === "crashed" && pid !== null) {
        await this.kill(pid, this.paths(vm.id).qmp);
        await this.launch(vm);
      } else if (state === "stopped") await this.launch(vm);
      else throw new DriverError("invalid_state", `${name} is already ${state}`);
      this.touch(vm);
    } catch (e) {
      translate(e, `starting ${name}`);
    }
  }

  async stop(name: string, opts: { force: boolean; timeoutMs: number }): Promise<void> {
    const vm = this.mustGet(name);
    const p = this.paths(vm.id);
    try {
      const { state, pid } = await this.liveState(vm.id);
      if (pid === null) throw new DriverError("invalid_state", `${name} is already stopped`);
      const rt = this.runtime.get(vm.id);
      if (rt) rt.events.stopping = true;
      const gone = () => !isOurQemu(pid, p.qmp);
      const client = await this.monitor(vm.id).catch(() => null);
      let done = false;
      if (!opts.force && state === "running" && client) {
        // ACPI power button; without -no-shutdown QEMU exits when the guest powers off.
        await client.execute("system_powerdown", undefined, { timeoutMs: 5_000 }).catch(() => {});
        done = await waitUntil(gone, opts.timeoutMs, 100);
      }
      if (!done && client) {
        await client.execute("quit", undefined, { timeoutMs: 3_000 }).catch(() => {});
        done = await waitUntil(gone, 5_000);
      }
      if (!done) await this.kill(pid, p.qmp);
      await this.forget(vm, rt);
      await stopVirtiofsds(vm.shares ?? [], p);
      this.cleanupRuntimeFiles(p);
      vm.live = null;
      this.touch(vm);
    } catch (e) {
      translate(e, `stopping ${name}`);
    }
  }

  async reboot(name: string): Promise<void> {
    const vm = this.mustGet(name);
    try {
      const { state } = await this.liveState(vm.id);
      if (state !== "running") throw new DriverError("invalid_state", `${name} is ${state}, not running`);
      await (await this.monitor(vm.id)).execute("system_reset");
      this.touch(vm);
    } catch (e) {
      translate(e, `rebooting ${name}`);
    }
  }

  async delete(name: string): Promise<void> {
    const vm = this.mustGet(name);
    const p = this.paths(vm.id);
    try {
      const pid = this.pidOf(vm.id);
      const rt = this.runtime.get(vm.id);
      if (rt) rt.events.stopping = true;
      if (pid !== null) await this.kill(pid, p.qmp);
      await faultPoint("delete.after-destroy");
      await this.forget(vm, rt);
      await stopVirtiofsds(vm.shares ?? [], p);
      // vm.json first: from here on the VM is gone even if removing the rest fails
      // (the next start removes a directory without vm.json).
      rmSync(p.json, { force: true });
      await faultPoint("delete.after-undefine");
      this.records.delete(vm.id);
      this.emit(vm, "vm-undefined", "deleted");
      rmSync(p.dir, { recursive: true, force: true });
    } catch (e) {
      translate(e, `deleting ${name}`);
    }
  }

  async update(name: string, change: VmChange): Promise<VmChangeResult> {
    const vm = this.mustGet(name);
    try {
      const { state, pid } = await this.liveState(vm.id);
      if (pid !== null && state !== "running" && state !== "paused") throw new DriverError("invalid_state", `${name} is ${state}; change it when it runs or is stopped`);
      const qmp = pid !== null ? await this.monitor(vm.id) : null;
      const own = (path: string) => {
        if (this.runAs) chownSync(path, this.runAs.uid, this.runAs.gid);
      };
      const done = await updateQemuVm({ vm, paths: this.paths(vm.id), qemuImg: this.qemuImg, qmp, own }, change);
      done.vm.updated_at = new Date().toISOString();
      try {
        writeVm(this.opts.stateDir, done.vm);
      } catch (e) {
        await done.undo();
        throw e;
      }
      this.records.set(vm.id, done.vm);
      done.removeFiles();
      return done.result;
    } catch (e) {
      translate(e, `changing ${name}`);
    }
  }

  // ---- snapshots (snapshots.ts) ---------------------------------------------------

  /** The VM's QMP connection when QEMU runs it (running or paused); null when stopped. */
  private async liveMonitor(vm: StoredVm): Promise<QmpClient | null> {
    const { state, pid } = await this.liveState(vm.id);
    if (pid === null) return null;
    if (state !== "running" && state !== "paused") throw new DriverError("invalid_state", `${vm.name} is ${state}; snapshots need it running, paused or stopped`);
    return this.monitor(vm.id);
  }

  private async listSnapshots(vm: StoredVm, qmp: QmpClient | null): Promise<SnapshotInfo[]> {
    return qmp ? snap.listRunning(qmp) : snap.listStopped(this.qemuImg, this.paths(vm.id), vm.disks);
  }

  async snapshots(name: string): Promise<SnapshotInfo[]> {
    const vm = this.mustGet(name);
    try {
      return await this.listSnapshots(vm, await this.liveMonitor(vm));
    } catch (e) {
      translate(e, `listing the snapshots of ${name}`);
    }
  }

  async createSnapshot(name: string, snapshot: string, memory: boolean): Promise<SnapshotInfo> {
    const vm = this.mustGet(name);
    try {
      const qmp = await this.liveMonitor(vm);
      if (memory && !qmp) throw new DriverError("invalid_state", `${name} is stopped; a memory snapshot needs it running (or take one without memory)`);
      if (!memory && qmp) throw new DriverError("invalid_state", `${name} is running; a disk-only snapshot needs it stopped (or take one with memory)`);
      const info = qmp ? await snap.saveRunning(qmp, snapshot) : await snap.saveStopped(this.qemuImg, this.paths(vm.id), vm.disks, snapshot);
      this.touch(vm);
      return info;
    } catch (e) {
      translate(e, `taking snapshot ${snapshot} of ${name}`);
    }
  }

  async revertSnapshot(name: string, snapshot: string): Promise<void> {
    const vm = this.mustGet(name);
    try {
      const qmp = await this.liveMonitor(vm);
      const target = snap.find(await this.listSnapshots(vm, qmp), name, snapshot);
      if (target.memory) {
        if (qmp) await snap.loadRunning(qmp, snapshot);
        else await this.launch(vm, snapshot);
      } else {
        // Disks are reverted with QEMU gone; what runs now is thrown away, as the revert asks.
        if (qmp) await this.stop(name, { force: true, timeoutMs: 0 });
        await snap.applyStopped(this.qemuImg, this.paths(vm.id), vm.disks, snapshot);
      }
      this.touch(vm);
    } catch (e) {
      translate(e, `reverting ${name} to snapshot ${snapshot}`);
    }
  }

  async deleteSnapshot(name: string, snapshot: string): Promise<void> {
    const vm = this.mustGet(name);
    try {
      const qmp = await this.liveMonitor(vm);
      snap.find(await this.listSnapshots(vm, qmp), name, snapshot);
      if (qmp) await snap.deleteRunning(qmp, snapshot);
      else await snap.deleteStopped(this.qemuImg, this.paths(vm.id), vm.disks, snapshot);
    } catch (e) {
      translate(e, `deleting snapshot ${snapshot} of ${name}`);
    }
  }

  async console(name: string): Promise<ConsoleInfo> {
    const vm = this.mustGet(name);
    const p = this.paths(vm.id);
    return {
      type: "serial",
      logFile: p.serialLog,
      command: `socat -,raw,echo=0,escape=0x1d UNIX-CONNECT:${p.serial}`,
      ssh: vm.network.ssh_port ? { host: "127.0.0.1", port: vm.network.ssh_port, user: vm.ssh_user } : null,
    };
  }

  async consoleLog(name: string, maxBytes: number): Promise<Uint8Array> {
    const vm = this.mustGet(name);
    try {
      return readTail(this.paths(vm.id).serialLog, maxBytes);
    } catch (e) {
      translate(e, `reading the console log of ${name}`);
    }
  }

  async openConsole(name: string): Promise<ConsoleSession> {
    const vm = this.mustGet(name);
    const path = this.paths(vm.id).serial;
    let controller!: ReadableStreamDefaultController<Uint8Array>;
    let ended = false;
    const end = () => {
      if (ended) return;
      ended = true;
      try {
        controller.close();
      } catch {
        // already closed by the reader
      }
    };
    const output = new ReadableStream<Uint8Array>({ start: (c) => void (controller = c) });
    try {
      const sock = await Bun.connect({
        unix: path,
        socket: {
          data: (_s, d) => {
            if (!ended) controller.enqueue(new Uint8Array(d));
          },
          close: end,
          end,
          error: end,
        },
      });
      return {
        output,
        write: async (b) => {
          let off = 0;
          while (off < b.byteLength) {
            const n = sock.write(b.subarray(off));
            if (n <= 0) await Bun.sleep(5); // keystrokes are small; wait for room
            else off += n;
          }
        },
        close: async () => {
          sock.end();
          end();
        },
      };
    } catch (e) {
      throw new DriverError("invalid_state", `${name}: its serial console is not available (is it running?): ${(e as Error).message}`);
    }
  }

  async ipAddress(rec: VmRecord): Promise<string | null> {
    if (rec.state !== "running") return null;
    if (rec.network.mode === "user") return "127.0.0.1";
    if (rec.network.mode !== "bridge" || !rec.network.mac) return null;
    // Bridged guests: the host's neighbour table, by MAC.
    try {
      const mac = rec.network.mac.toLowerCase();
      for (const line of readFileSync("/proc/net/arp", "utf8").split("\n").slice(1)) {
        const f = line.trim().split(/\s+/);
        if (f[3]?.toLowerCase() === mac && f[2] !== "0x0") return f[0] ?? null;
      }
    } catch {
      // no ARP table
    }
    return null;
  }

  async qmp(name: string, command: string, args?: Record<string, unknown>): Promise<unknown> {
    const vm = this.mustGet(name);
    try {
      if (this.pidOf(vm.id) === null) throw new DriverError("invalid_state", `${name} is not running`);
      const client = await this.monitor(vm.id);
      try {
        return { return: await client.execute(command, args, { timeoutMs: 10_000 }) };
      } catch (e) {
        // QEMU's own errors are answers, as libvirt's qemu-monitor-command passes them on.
        if (e instanceof QmpError) return { error: { class: e.errorClass, desc: e.desc } };
        throw e;
      }
    } catch (e) {
      translate(e, `QMP ${command} on ${name}`);
    }
  }

  // ---- guest memory dumps (in the VM's directory, removed with it) ----

  async dumps(name: string): Promise<DumpInfo[]> {
    const vm = this.mustGet(name);
    const p = this.paths(vm.id);
    try {
      const out: DumpInfo[] = [];
      for (const f of readdirSync(p.dir).filter(isDumpName).sort()) {
        const st = statSync(p.dump(f), { throwIfNoEntry: false });
        if (st?.isFile()) out.push({ name: f, sizeBytes: st.size, createdAt: st.mtime.toISOString() });
      }
      return out;
    } catch (e) {
      translate(e, `listing the dumps of ${name}`);
    }
  }

  async readDump(name: string, dump: string): Promise<DumpReader> {
    const vm = this.mustGet(name);
    if (!isDumpName(dump)) throw new DriverError("not_found", `${name} has no dump ${dump}`);
    const path = this.paths(vm.id).dump(dump);
    const st = statSync(path, { throwIfNoEntry: false });
    if (!st?.isFile()) throw new DriverError("not_found", `${name} has no dump ${dump}`);
    return { data: Bun.file(path).stream(), sizeBytes: st.size };
  }

  // ---- base images and boot files of this host ----

  async shareDir(path: string): Promise<string> {
    return localShareDir(this.opts.shareDirs ?? [], path);
  }

  async bootFile(_kind: "kernel" | "initrd", path: string): Promise<string> {
    return localBootFile(this.opts.kernelDir, path);
  }

  /** A kernel_dir boot file, before a launch: still a file in kernel_dir at the path resolved at create. */
  private checkBootFileUnmoved(vm: string, path: string): void {
    let real: string | null = null;
    try {
      real = localBootFile(this.opts.kernelDir, path);
    } catch (e) {
      if (!(e instanceof DriverError)) throw e;
    }
    if (real !== path) throw new DriverError("invalid_state", `${vm} was not started: its boot file ${path} no longer leads to a file inside vm_defaults.kernel_dir (${this.opts.kernelDir ?? "unset"}); put the file back, or give the VM another kernel (PATCH with "kernel")`);
  }

  async storeBootFile(name: string, kind: "kernel" | "initrd", sizeBytes: number, data: ReadableStream<Uint8Array>): Promise<UploadedBootFile> {
    const vm = this.mustGet(name);
    try {
      // What the definition boots from stays (a running VM has its kernel in memory already).
      const keep = new Set([vm.boot?.kernel, vm.boot?.initrd].filter((f): f is string => typeof f === "string"));
      return await storeLocalUpload(this.paths(vm.id).dir, kind, sizeBytes, data, keep, (path) => {
        if (this.runAs) chownSync(path, this.runAs.uid, this.runAs.gid);
      });
    } catch (e) {
      translate(e, `storing the ${kind} of ${name}`);
    }
  }

  async uploadedBootFiles(name: string): Promise<{ kernel: UploadedBootFile | null; initrd: UploadedBootFile | null }> {
    const dir = this.paths(this.mustGet(name).id).dir;
    return { kernel: localUpload(dir, "kernel"), initrd: localUpload(dir, "initrd") };
  }

  readImage(id: string): Promise<ImageReader> {
    return readLocalImage(this.opts.baseImagesDir, id);
  }

  writeImage(fileName: string, format: string, sizeBytes: number, data: ReadableStream<Uint8Array>): Promise<ImageInfo> {
    return writeLocalImage(this.opts.baseImagesDir, fileName, format, sizeBytes, data);
  }
}

/** The last `maxBytes` of a file; empty when it does not exist (yet). */
function readTail(path: string, maxBytes: number): Uint8Array {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return new Uint8Array(0);
    throw e;
  }
  try {
    const size = fstatSync(fd).size;
    const buf = new Uint8Array(Math.min(size, maxBytes));
    const n = readSync(fd, buf, 0, buf.length, size - buf.length);
    return buf.subarray(0, n);
  } finally {
    closeSync(fd);
  }
}
