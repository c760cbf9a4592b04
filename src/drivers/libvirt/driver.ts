/**
 * The libvirt driver: VMs as libvirt domains, disks as volumes in an rcloud storage pool,
 * all through our RPC client, so the same code serves a local or a remote (qemu+tcp) host.
 * libvirt is the source of truth: everything rcloud needs to know is in the domain XML
 * (its <metadata> element) and the pool; nothing is kept in memory across restarts.
 *
 * This file holds the connection's life and the VM operations; the pieces live beside it:
 * storage.ts (pool and volumes), create.ts (making a VM), rollbacks.ts (undoing a failed
 * create), host.ts (host facts), networks.ts (networks and addresses), images.ts and
 * boot-files.ts (the host's base images and kernels, through pools of their own), domain-xml.ts,
 * capabilities.ts, storage-xml.ts and metadata-xml.ts (the XML documents).
 */
import { rmSync } from "node:fs";
import { VM_ID_PATTERN } from "../../api-types/values.ts";
import { posix } from "node:path";
import { randomUUID } from "node:crypto";
import {
  CallTimeoutError,
  ErrorCode,
  LibvirtClient,
  LibvirtError,
  LibvirtPool,
  parseLibvirtUri,
  qemuProcedures,
  remoteProcedures as P,
  type PoolOptions,
} from "../../libvirt/index.ts";
import type { RemoteNonnullDomain, RemoteNonnullStorageVol } from "../../libvirt/index.ts";
import { faultPoint } from "../../util/fault-points.ts";
import { DriverError, type ConsoleInfo, type ConsoleSession, type DriverEvent, type DumpInfo, type DumpReader, type HostInfo, type ImageInfo, type ImageReader, type ListOptions, type ReconciledArtefact, type ReconcileReport, type SnapshotInfo, type UploadedBootFile, type VmChange, type VmChangeResult, type VmDriver, type VmRecord, type VmSpec } from "../types.ts";
import { pickDomainType, readCapabilities } from "./capabilities.ts";
import { buildVm } from "./create.ts";
import { BootFiles } from "./boot-files.ts";
import { BootUploads } from "./boot-uploads.ts";
import { DomainCache } from "./domain-cache.ts";
import { DomainState, stateName, UNDEFINE_ALL, uuidBytes } from "./domain-state.ts";
import { type DomainType, loadTemplate, METADATA_NS } from "./domain-xml.ts";
import { translate } from "./errors.ts";
import { createNoSpace, isNoSpace } from "../shared/no-space.ts";
import { DomainEvents } from "./events.ts";
import { HostFacts } from "./host.ts";
import { HostImages } from "./images.ts";
import { withUpdatedAt } from "./metadata-xml.ts";
import { Networks } from "./networks.ts";
import { DomainRecords, readFacts } from "./records.ts";
import { type PendingRollback, Rollbacks } from "./rollbacks.ts";
import { DomainSnapshots } from "./snapshots.ts";
import { updateDomain } from "./update.ts";
import { VmStorage } from "./storage.ts";
import { downloadVolume } from "./volume-streams.ts";
import { dumpName, isDumpName } from "../shared/crash.ts";
import { checkSharesUnmoved, localShareDir } from "../shared/share-dir.ts";
import { displayUri } from "../../util/display-uri.ts";

export interface LibvirtDriverOptions {
  uri: string;
  poolName: string;
  poolPath: string;
  templatePath: string | null;
  /** "auto" picks kvm when the host offers it, else TCG ("qemu"). */
  domainType: "auto" | "kvm" | "qemu";
  /** Directory on the host for serial console logs; null = the pool directory. */
  consoleLogDir: string | null;
  /**
   * User-mode SSH forwards: the IPv4 address they listen on at the host (0.0.0.0 = all) and
   * the address clients reach them by. Default 127.0.0.1 for both (a local host).
   */
  sshForward?: { bind: string; address: string };
  /** Session options (busy polling, the slow-call window, call metrics); sizes are set below. */
  client?: Omit<PoolOptions, "minSessions" | "maxSessions">;
  /** Most sessions to libvirtd (see LibvirtPool); default 16. */
  connections?: number;
  /** The host's base-image directory (a path on that host), listed as the pool `<poolName>-images`. */
  baseImagesDir: string;
  /** The host's directory of direct-boot kernels and initrds (pool `<poolName>-kernels`); null = no direct boot. */
  kernelDir: string | null;
  /** vm_defaults.share_dirs: directories guests may share (checked only when the host is this machine). */
  shareDirs?: readonly string[];
}

const SHUTDOWN_ACPI = 1;
/** A volume named after an rcloud VM id: `<id>-root.qcow2`, `<id>-data0.qcow2`, `<id>-seed.iso`, `<id>-serial.log`. */
const VM_ID_PREFIX = /^(vm-[a-z0-9]{8})-/;
const VM_ID_RE = new RegExp(VM_ID_PATTERN);
const METADATA_ELEMENT = 2; // VIR_DOMAIN_METADATA_ELEMENT
const AFFECT_LIVE = 1;
const AFFECT_CONFIG = 2;
/** VIR_DUMP_MEMORY_ONLY; with VIR_DOMAIN_CORE_DUMP_FORMAT_RAW (0) an ELF core of the guest's memory. */
const DUMP_MEMORY_ONLY = 16;
const DUMP_FORMAT_ELF = 0;
/** A guest's memory written out; generous, a dump is as large as the guest's memory. */
const DUMP_TIMEOUT_MS = 30 * 60_000;

export class LibvirtDriver implements VmDriver {
  readonly kind = "libvirt" as const;
  /** The sessions to libvirtd once connected and set up. */
  private sessionPool: LibvirtPool | null = null;
  private template = "";
  private domainType: DomainType = "qemu";
  /**
   * The uid:gid QEMU runs as (libvirt's DAC base label), for disks libvirt does not label
   * itself: NVMe disks are QEMU arguments, so their volumes are created owned by QEMU.
   */
  private qemuOwner: { uid: number; gid: number } | null = null;
  /** VM ids whose create is in progress: their volumes are not orphans. */
  private readonly creating = new Set<string>();
  /**
   * One set per orphan sweep running: every id that was creating at any time during it (a create
   * that ends mid-sweep is in neither `creating` nor the sweep's domain listing).
   */
  private readonly sweeps = new Set<Set<string>>();
  private readonly storage: VmStorage;
  private readonly host: HostFacts;
  private readonly networks: Networks;
  private readonly rollbacks: Rollbacks;
  private readonly baseImages: HostImages;
  private readonly bootFiles: BootFiles;
  private readonly bootUploads: BootUploads;
  /** Reconnects counted by session pools this driver has since replaced (init retries). */
  private droppedReconnects = 0;
  /** Domain events on a session of their own (events.ts). */
  private readonly events: DomainEvents;
  /** What is kept of each domain between listings (domain-cache.ts). */
  private readonly cache: DomainCache;
  /** VM records at a few calls per listing (records.ts). */
  private readonly records: DomainRecords;
  private readonly snaps: DomainSnapshots;

  private readonly sshForward: { bind: string; address: string };
  /** Volume names of dumps being written (not listed until complete). */
  private readonly dumping = new Set<string>();

  constructor(private readonly opts: LibvirtDriverOptions) {
    this.sshForward = opts.sshForward ?? { bind: "127.0.0.1", address: "127.0.0.1" };
    const sessions = () => this.sessions();
    this.storage = new VmStorage(sessions, opts.poolName, opts.poolPath);
    this.host = new HostFacts(sessions, opts.uri, this.storage);
    this.networks = new Networks(sessions);
    this.rollbacks = new Rollbacks(sessions, this.storage, () => void this.recover(), (id) => this.removeConsoleLog(id));
    // Image transfers get a connection each: a download stops its connection while its reader is behind.
    const transferSession = () => LibvirtClient.connect(opts.uri, { ...opts.client, reconnect: false });
    this.baseImages = new HostImages(sessions, `${opts.poolName}-images`, opts.baseImagesDir, transferSession);
    this.bootFiles = new BootFiles(sessions, `${opts.poolName}-kernels`, opts.kernelDir);
    this.bootUploads = new BootUploads(sessions, this.storage, transferSession);
    this.cache = new DomainCache((dom) => readFacts(sessions, this.storage, dom), () => this.events.tracking);
    this.events = new DomainEvents(this.cache);
    this.cache.onForget((uuid) => this.networks.forget(uuid));
    this.records = new DomainRecords(sessions, this.events, this.cache);
    this.snaps = new DomainSnapshots(sessions);
    this.events.subscribe((e) => {
      if (e.action === "vm-crashed" && e.detail === "panicked") void this.onPanic(e.vmName);
    });
  }

  /** The sessions to libvirtd; each call goes to the least busy one. */
  private sessions(): LibvirtPool {
    if (!this.sessionPool) throw new DriverError("unavailable", `not connected to libvirt at ${displayUri(this.opts.uri)}`);
    return this.sessionPool;
  }

  async init(): Promise<void> {
    this.template = loadTemplate(this.opts.templatePath);
    await this.close(); // a previous attempt that failed half-way
    this.host.forget();
    const pool = await LibvirtPool.connect(this.opts.uri, { ...this.opts.client, minSessions: 2, maxSessions: this.opts.connections ?? 16 });
    try {
      await this.setup(pool);
    } catch (e) {
      this.sessionPool = null;
      await pool.close();
      throw e;
    }
    try {
      await this.events.open(this.opts.uri, this.opts.client ?? {});
    } catch (e) {
      await pool.close();
      throw e;
    }
    this.sessionPool = pool;
    pool.primary.on("connect", () => void this.recover());
    await this.recover();
  }

  /**
   * A guest panicked: libvirt already held it, reset it or powered it off (<on_crash>, see
   * domain-xml.ts onCrashFor); for on_panic dump rcloud saves the held guest's memory into
   * the pool as `<id>-dump-<time>.elf`. A failure is reported as an event.
   */
  private async onPanic(name: string): Promise<void> {
    let vol = "";
    // A call given up on by its deadline: libvirt may still be writing the dump until then.
    let writing: Promise<void> | null = null;
    try {
      const dom = await this.lookup(name);
      const facts = dom && (await this.records.facts(dom));
      if (!dom || !facts || facts.rcloud.onPanic !== "dump") return;
      const dump = dumpName(new Date());
      vol = `${facts.rcloud.id}-${dump}`;
      this.dumping.add(vol);
      await this.sessions().call(P.domainCoreDumpWithFormat, { dom, to: `${this.opts.poolPath}/${vol}`, dumpformat: DUMP_FORMAT_ELF, flags: DUMP_MEMORY_ONLY }, { timeoutMs: DUMP_TIMEOUT_MS });
      this.events.emit({ vmName: name, vmId: facts.rcloud.id, action: "vm-dumped", detail: dump });
    } catch (e) {
      if (e instanceof CallTimeoutError) writing = e.finished;
      this.events.emit({ vmName: name, vmId: null, action: "vm-crashed", detail: `on_panic dump failed: ${(e as Error).message}` });
    } finally {
      // Listed (and downloadable) only once libvirt no longer writes it.
      const v = vol;
      if (writing) void writing.then(() => this.dumping.delete(v));
      else this.dumping.delete(v);
    }
  }

  private async setup(pool: LibvirtPool): Promise<void> {
    this.sessionPool = pool;
    const caps = readCapabilities((await pool.call(P.connectGetCapabilities, undefined)).capabilities);
    this.domainType = pickDomainType(this.opts.domainType, caps);
    this.qemuOwner = caps.dacOwner(this.domainType);
    await this.storage.ensure();
    this.sessionPool = null; // published by init() once everything is ready
  }

  /**
   * After (re)connecting: finish rollbacks that were cut off by a lost connection, then
   * remove volumes left by creates that never completed (named <id>-* with no VM <id>).
   */
  private async recover(): Promise<void> {
    if (!this.sessionPool) return;
    try {
      // A restarted libvirtd may not have started the pool again yet (autostart runs late on a
      // busy host); rollbacks and the sweep below need it active.
      await this.storage.ensure();
    } catch {
      // retried with the rollbacks
    }
    await this.rollbacks.retry();
    await this.baseImages.sweep().catch(() => {}); // copies cut off mid-way; tried again on the next reconnect
    // Kept for the next reconcile's report. libvirt went away again: the next reconnect runs this again.
    await this.sweepOrphanVolumes().then((r) => this.swept.push(...r), () => {});
  }

  /** What recover() removed since the last reconcile (which reports it). */
  private swept: ReconciledArtefact[] = [];

  /**
   * Volumes of VMs that do not exist: named `<id>-*` after an rcloud VM id (root, data
   * disks, seed, console log) in rcloud's own pool, with no domain of that id and no create
   * of it running during the sweep. A domain is defined only after all its volumes exist, so
   * a create cut short before its define left only such volumes, and a delete cut short after
   * its undefine too.
   */
  private async sweepOrphanVolumes(refresh: "required" | "best-effort" = "best-effort"): Promise<ReconciledArtefact[]> {
    const removed: ReconciledArtefact[] = [];
    // Creates running now or starting before the sweep ends (create() adds to it).
    const creating = new Set(this.creating);
    this.sweeps.add(creating);
    try {
      // A refresh finds files libvirt did not make itself (a console log virtlogd opened late).
      const vols = await this.storage.volumes(refresh);
      const live = new Set((await this.list()).map((r) => r.id));
      for (const vol of vols) {
        const id = VM_ID_PREFIX.exec(vol.name)?.[1];
        if (!id || live.has(id) || creating.has(id)) continue;
        await this.storage.delete(vol);
        removed.push({ kind: "volume", name: vol.name, vmId: id });
      }
    } finally {
      this.sweeps.delete(creating);
    }
    return removed;
  }

  async reconcile(): Promise<ReconcileReport> {
    try {
      await this.storage.ensure();
      await this.rollbacks.retry();
      const removed = [...this.swept.splice(0), ...(await this.sweepOrphanVolumes("required"))];
      return { removed, adopted: [] };
    } catch (e) {
      translate(e, "reconciling");
    }
  }

  async close(): Promise<void> {
    this.rollbacks.stop();
    this.droppedReconnects += (this.sessionPool?.reconnects ?? 0) + this.events.reconnects;
    await this.events.close();
    await this.sessionPool?.close();
    this.sessionPool = null;
  }

  slowCalls(): { inFlight: number; waiting: number; window: number } | null {
    return this.sessionPool?.slowCallState ?? null;
  }

  reconnects(): number {
    return (this.sessionPool?.reconnects ?? 0) + (this.sessionPool ? this.events.reconnects : 0) + this.droppedReconnects;
  }

  /** VM events as libvirt reports them (events.ts has the mapping). */
  subscribe(listener: (event: DriverEvent) => void): () => void {
    return this.events.subscribe(listener);
  }

  async health(): Promise<{ ok: boolean; detail: string }> {
    try {
      // Calls wait for a reconnect; a session that is not open says at once that libvirtd went away.
      const primary = this.sessions().primary;
      if (primary.state !== "open") return { ok: false, detail: `lost the connection to libvirtd at ${displayUri(this.opts.uri)}; reconnecting` };
      await this.sessions().call(P.connectGetLibVersion, undefined, { timeoutMs: 3000 });
      return { ok: true, detail: `connected to ${displayUri(this.opts.uri)}` };
    } catch (e) {
      return { ok: false, detail: (e as Error).message };
    }
  }

  async hostInfo(): Promise<HostInfo> {
    try {
      return await this.host.info();
    } catch (e) {
      translate(e, "host status");
    }
  }

  async images(): Promise<ImageInfo[]> {
    try {
      return await this.baseImages.list();
    } catch (e) {
      translate(e, `listing the images of ${this.opts.baseImagesDir}`);
    }
  }

  // ---- reading domains ----

  private async lookup(name: string): Promise<RemoteNonnullDomain | null> {
    try {
      return (await this.sessions().call(P.domainLookupByName, { name })).dom;
    } catch (e) {
      if (e instanceof LibvirtError && e.code === ErrorCode.NO_DOMAIN) return null;
      translate(e, `looking up ${name}`);
    }
  }

  private async mustLookup(name: string): Promise<RemoteNonnullDomain> {
    const dom = await this.lookup(name);
    if (!dom) throw new DriverError("not_found", `no VM named ${name}`);
    return dom;
  }

  private async state(dom: RemoteNonnullDomain): Promise<number> {
    return (await this.sessions().call(P.domainGetState, { dom, flags: 0 })).state;
  }

  async list(opts?: ListOptions): Promise<VmRecord[]> {
    try {
      return await this.records.list(opts);
    } catch (e) {
      translate(e, "listing VMs");
    }
  }

  async get(name: string): Promise<VmRecord | null> {
    try {
      const dom = await this.lookup(name);
      return dom ? await this.records.get(dom) : null;
    } catch (e) {
      if (e instanceof LibvirtError && e.code === ErrorCode.NO_DOMAIN) return null;
      translate(e, `reading ${name}`);
    }
  }

  async usedSshPorts(): Promise<Set<number>> {
    const ports = new Set<number>();
    for (const r of await this.list()) {
      if (r.network.sshPort) ports.add(r.network.sshPort);
      if (r.gdbPort) ports.add(r.gdbPort);
    }
    return ports;
  }

  async create(spec: VmSpec): Promise<VmRecord> {
    const made: RemoteNonnullStorageVol[] = [];
    const uuid = randomUUID();
    this.creating.add(spec.id);
    for (const sweep of this.sweeps) sweep.add(spec.id);
    try {
      const rec = await buildVm(
        {
          sessions: () => this.sessions(),
          storage: this.storage,
          networks: this.networks,
          template: this.template,
          templatePath: this.opts.templatePath,
          domainType: this.domainType,
          qemuOwner: this.qemuOwner,
          consoleLogDir: this.opts.consoleLogDir ?? this.opts.poolPath,
          sshForwardBind: this.sshForward.bind,
        },
        spec,
        uuid,
        made,
      );
      this.cache.made(uuid, spec.id);
      return rec;
    } catch (e) {
      // The define or start may have happened even if its reply was lost or came too late.
      const undo: PendingRollback = { id: spec.id, domUuid: uuidBytes(uuid), vols: made };
      await this.rollbacks.undo(undo);
      // A call given up on by its deadline may still take effect: undo again once libvirtd is done with it.
      if (e instanceof CallTimeoutError) void e.finished.then(() => this.rollbacks.undo(undo));
      if (isNoSpace(e)) throw createNoSpace(spec.name, `the storage pool ${this.storage.name} (${this.storage.path})`, this.storage.path, e);
      translate(e, `creating ${spec.name}`);
    } finally {
      this.creating.delete(spec.id);
    }
  }

  // ---- lifecycle ----

  private async touch(dom: RemoteNonnullDomain): Promise<void> {
    // updated_at lives in the metadata element; rewrite it in place, in the definition and in
    // the running domain each (the running one may hold pending changes the definition has not).
    try {
      const now = new Date().toISOString();
      const running = (await this.state(dom)) !== DomainState.SHUTOFF;
      for (const flags of running ? [AFFECT_CONFIG, AFFECT_LIVE] : [AFFECT_CONFIG]) {
        const { metadata } = await this.sessions().call(P.domainGetMetadata, { dom, type: METADATA_ELEMENT, uri: METADATA_NS, flags });
        const updated = withUpdatedAt(metadata, now);
        if (updated) await this.sessions().call(P.domainSetMetadata, { dom, type: METADATA_ELEMENT, metadata: updated, key: "rcloud", uri: METADATA_NS, flags });
      }
    } catch {
      // updated_at is informational; never fail an operation over it
    } finally {
      // Every operation ends here: what it changed is read again (the events say so too,
      // unless the events session is down).
      this.records.changed(dom);
    }
  }

  async start(name: string): Promise<void> {
    try {
      const dom = await this.mustLookup(name);
      const s = await this.state(dom);
      if (s === DomainState.PAUSED) await this.sessions().call(P.domainResume, { dom });
      else if (s === DomainState.SHUTOFF) {
        await this.checkShares(dom);
        await this.sessions().call(P.domainCreate, { dom });
      } else if (s === DomainState.CRASHED) {
        // Held after a panic: its QEMU still runs; a fresh boot.
        await this.checkShares(dom);
        await this.sessions().call(P.domainDestroy, { dom });
        await this.sessions().call(P.domainCreate, { dom });
      }
      else throw new DriverError("invalid_state", `${name} is already ${stateName(s)}`);
      await this.touch(dom);
    } catch (e) {
      translate(e, `starting ${name}`);
    }
  }

  async stop(name: string, opts: { force: boolean; timeoutMs: number }): Promise<void> {
    try {
      const c = this.sessions();
      const dom = await this.mustLookup(name);
      const s = await this.state(dom);
      if (s === DomainState.SHUTOFF) throw new DriverError("invalid_state", `${name} is already stopped`);
      if (!opts.force && s !== DomainState.PAUSED) {
        await c.call(P.domainShutdownFlags, { dom, flags: SHUTDOWN_ACPI }).catch(() => c.call(P.domainShutdown, { dom }));
        const deadline = Date.now() + opts.timeoutMs;
        while (Date.now() < deadline) {
          if ((await this.state(dom)) === DomainState.SHUTOFF) {
            await this.touch(dom);
            return;
          }
          await Bun.sleep(250);
        }
      }
      await c.call(P.domainDestroy, { dom }).catch((e) => {
        // It may have shut down by itself just now.
        if (!(e instanceof LibvirtError && e.code === ErrorCode.OPERATION_INVALID)) throw e;
      });
      await this.touch(dom);
    } catch (e) {
      translate(e, `stopping ${name}`);
    }
  }

  async reboot(name: string): Promise<void> {
    try {
      const dom = await this.mustLookup(name);
      const s = await this.state(dom);
      if (s !== DomainState.RUNNING && s !== DomainState.BLOCKED) throw new DriverError("invalid_state", `${name} is ${stateName(s)}, not running`);
      await this.sessions().call(P.domainReboot, { dom, flags: 0 });
      await this.touch(dom);
    } catch (e) {
      translate(e, `rebooting ${name}`);
    }
  }

  async delete(name: string): Promise<void> {
    try {
      const c = this.sessions();
      const dom = await this.mustLookup(name);
      const facts = await this.records.facts(dom);
      const s = await this.state(dom);
      if (s !== DomainState.SHUTOFF) {
        await c.call(P.domainDestroy, { dom }).catch((e) => {
          if (!(e instanceof LibvirtError && e.code === ErrorCode.OPERATION_INVALID)) throw e;
        });
      }
      await faultPoint("delete.after-destroy");
      await c.call(P.domainUndefineFlags, { dom, flags: UNDEFINE_ALL }).catch(() => c.call(P.domainUndefine, { dom }));
      await faultPoint("delete.after-undefine");
      // Volumes: everything in our pool that belongs to this VM (named after its id); the
      // console log appears in the pool only after a refresh.
      this.records.changed(dom);
      if (facts) {
        this.storage.forgetSizes(facts.disks.map((d) => d.path));
        await this.storage.deleteVolumesOf(facts.rcloud.id, "best-effort");
        this.removeConsoleLog(facts.rcloud.id);
      }
    } catch (e) {
      translate(e, `deleting ${name}`);
    }
  }

  async storeBootFile(name: string, kind: "kernel" | "initrd", sizeBytes: number, data: ReadableStream<Uint8Array>): Promise<UploadedBootFile> {
    try {
      const rec = await this.get(name);
      if (!rec) throw new DriverError("not_found", `no VM named ${name}`);
      // What the VM boots from now or at its next start stays.
      const boots = [rec.boot, rec.pending?.boot ?? null];
      const keep = new Set(boots.flatMap((b) => (b ? [b.kernel, b.initrd] : [])).filter((f): f is string => f !== null));
      return await this.bootUploads.store(rec.id, kind, sizeBytes, data, keep);
    } catch (e) {
      await data.cancel(e).catch(() => {});
      translate(e, `storing the ${kind} of ${name}`);
    }
  }

  async uploadedBootFiles(name: string): Promise<{ kernel: UploadedBootFile | null; initrd: UploadedBootFile | null }> {
    try {
      const rec = await this.get(name);
      if (!rec) throw new DriverError("not_found", `no VM named ${name}`);
      return { kernel: await this.bootUploads.current(rec.id, "kernel"), initrd: await this.bootUploads.current(rec.id, "initrd") };
    } catch (e) {
      translate(e, `reading the uploads of ${name}`);
    }
  }

  async update(name: string, change: VmChange): Promise<VmChangeResult> {
    try {
      const dom = await this.mustLookup(name);
      const result = await updateDomain({ sessions: () => this.sessions(), storage: this.storage, dom, qemuOwner: this.qemuOwner }, change);
      await this.touch(dom);
      return result;
    } catch (e) {
      translate(e, `changing ${name}`);
    }
  }

  // ---- snapshots (snapshots.ts) ----

  async snapshots(name: string): Promise<SnapshotInfo[]> {
    try {
      return await this.snaps.list(await this.mustLookup(name));
    } catch (e) {
      translate(e, `listing the snapshots of ${name}`);
    }
  }

  async createSnapshot(name: string, snapshot: string, memory: boolean): Promise<SnapshotInfo> {
    try {
      const dom = await this.mustLookup(name);
      const facts = await this.records.facts(dom);
      if (!facts) throw new DriverError("not_found", `no VM named ${name}`);
      const info = await this.snaps.create(dom, snapshot, memory, facts.disks);
      await this.touch(dom);
      return info;
    } catch (e) {
      translate(e, `taking snapshot ${snapshot} of ${name}`);
    }
  }

  async revertSnapshot(name: string, snapshot: string): Promise<void> {
    try {
      const dom = await this.mustLookup(name);
      await this.snaps.revert(dom, snapshot, () => this.checkShares(dom));
      await this.touch(dom);
    } catch (e) {
      translate(e, `reverting ${name} to snapshot ${snapshot}`);
    }
  }

  async deleteSnapshot(name: string, snapshot: string): Promise<void> {
    try {
      await this.snaps.delete(await this.mustLookup(name), snapshot);
    } catch (e) {
      translate(e, `deleting snapshot ${snapshot} of ${name}`);
    }
  }

  // ---- console, addresses, QMP ----

  async console(name: string): Promise<ConsoleInfo> {
    try {
      const facts = await this.records.facts(await this.mustLookup(name));
      if (!facts) throw new DriverError("not_found", `no VM named ${name}`);
      const m = facts.rcloud;
      return {
        type: "serial",
        logFile: facts.parsed.consoleLog,
        // Project tokens read this: the URI without the user name and local paths (key files).
        command: `virsh -c ${displayUri(this.opts.uri)} console ${name}`,
        ssh: m.network.sshPort ? { host: this.sshForward.address, port: m.network.sshPort, user: m.sshUser } : null,
      };
    } catch (e) {
      translate(e, `reading the console of ${name}`);
    }
  }

  /**
   * The end of the VM's serial log, read over RPC like any volume: virtlogd writes it into the
   * VM's pool directory (`<id>-serial.log`), so it works on remote hosts too. A log kept
   * elsewhere (console_log_dir outside the pool) cannot be reached through libvirt.
   */
  async consoleLog(name: string, maxBytes: number): Promise<Uint8Array> {
    try {
      const facts = await this.records.facts(await this.mustLookup(name));
      if (!facts) throw new DriverError("not_found", `no VM named ${name}`);
      const path = facts.parsed.consoleLog;
      if (!path) throw new DriverError("not_found", `${name} has no console log (its definition logs no serial port)`);
      const vol = await this.logVolume(path);
      if (!vol) return new Uint8Array(0); // nothing written yet (never started)
      const size = await this.volumeBytes(vol); // GetInfo re-reads the file's size
      const length = Math.min(size, maxBytes);
      if (length === 0) return new Uint8Array(0);
      const session = await LibvirtClient.connect(this.opts.uri, { ...this.opts.client, reconnect: false });
      return new Uint8Array(await new Response(await downloadVolume(session, vol, length, size - length)).arrayBuffer());
    } catch (e) {
      translate(e, `reading the console log of ${name}`);
    }
  }

  /** The volume of a log file in the pool; null when the file does not exist (yet). */
  private async logVolume(path: string): Promise<RemoteNonnullStorageVol | null> {
    const inPool = posix.dirname(path) === posix.normalize(this.opts.poolPath);
    if (!inPool) throw new DriverError("unsupported", `the console log ${path} is outside the storage pool ${this.opts.poolPath}, where libvirt cannot read it for rcloud; read it on the host`);
    const lookup = () =>
      this.sessions()
        .call(P.storageVolLookupByPath, { path })
        .then(
          (r) => r.vol,
          (e: unknown) => {
            if (e instanceof LibvirtError && e.code === ErrorCode.NO_STORAGE_VOL) return null;
            throw e;
          },
        );
    // virtlogd made the file behind libvirt's back: the pool knows it after a refresh.
    return (await lookup()) ?? (await this.storage.volumes("required").then(lookup));
  }

  async openConsole(name: string): Promise<ConsoleSession> {
    try {
      const dom = await this.mustLookup(name);
      const s = await this.sessions().openStream(P.domainOpenConsole, { dom, dev_name: null, flags: 1 /* FORCE: take it over */ });
      return { output: s.readable, write: (b) => s.write(b), close: () => s.abort() };
    } catch (e) {
      translate(e, `attaching to the console of ${name}`);
    }
  }

  ipAddress(rec: VmRecord): Promise<string | null> {
    return this.networks.ipAddress(rec, this.sshForward.address);
  }

  async qmp(name: string, command: string, args?: Record<string, unknown>): Promise<unknown> {
    try {
      const dom = await this.mustLookup(name);
      const cmd = JSON.stringify(args ? { execute: command, arguments: args } : { execute: command });
      const { result } = await this.sessions().call(qemuProcedures.domainMonitorCommand, { dom, cmd, flags: 0 });
      return JSON.parse(result) as unknown;
    } catch (e) {
      translate(e, `QMP ${command} on ${name}`);
    }
  }

  // ---- guest memory dumps: volumes `<id>-dump-<time>.elf` of the pool, deleted with the VM ----

  private async dumpVolumes(name: string): Promise<{ dump: string; vol: RemoteNonnullStorageVol }[]> {
    const facts = await this.records.facts(await this.mustLookup(name));
    if (!facts) throw new DriverError("not_found", `no VM named ${name}`);
    const prefix = `${facts.rcloud.id}-`;
    return (await this.storage.volumes("required"))
      .filter((v) => v.name.startsWith(prefix) && isDumpName(v.name.slice(prefix.length)) && !this.dumping.has(v.name))
      .map((vol) => ({ dump: vol.name.slice(prefix.length), vol }))
      .sort((a, b) => (a.dump < b.dump ? -1 : 1));
  }

  private async volumeBytes(vol: RemoteNonnullStorageVol): Promise<number> {
    return Number((await this.sessions().call(P.storageVolGetInfo, { vol })).capacity);
  }

  async dumps(name: string): Promise<DumpInfo[]> {
    try {
      const found = await this.dumpVolumes(name);
      return await Promise.all(found.map(async ({ dump, vol }) => ({ name: dump, sizeBytes: await this.volumeBytes(vol), createdAt: dumpTime(dump) })));
    } catch (e) {
      translate(e, `listing the dumps of ${name}`);
    }
  }

  async readDump(name: string, dump: string): Promise<DumpReader> {
    try {
      const found = (await this.dumpVolumes(name)).find((d) => d.dump === dump);
      if (!found) throw new DriverError("not_found", `${name} has no dump ${dump}`);
      const sizeBytes = await this.volumeBytes(found.vol);
      // Its own connection: a slow reader holds that one back, not the VM calls.
      const session = await LibvirtClient.connect(this.opts.uri, { ...this.opts.client, reconnect: false });
      return { sizeBytes, data: await downloadVolume(session, found.vol, sizeBytes) };
    } catch (e) {
      translate(e, `reading dump ${dump} of ${name}`);
    }
  }

  // ---- base images and boot files of this host ----

  async bootFile(_kind: "kernel" | "initrd", path: string): Promise<string> {
    try {
      return await this.bootFiles.resolve(path);
    } catch (e) {
      translate(e, `looking up ${path} in ${this.opts.kernelDir ?? "kernel_dir"}`);
    }
  }

  /**
   * A directory to share, checked where rcloud can see the host's files: a URI without a
   * host (a local socket) is this machine. libvirt itself cannot tell a symbolic link out of
   * a share directory from a directory in it (a dir pool lists both as directories), so on a
   * remote host a share is refused rather than taken unchecked.
   */
  async shareDir(path: string): Promise<string> {
    const dirs = this.opts.shareDirs ?? [];
    if (dirs.length > 0) this.refuseRemoteShares();
    return localShareDir(dirs, path);
  }

  /**
   * The serial log of VM `id` in a console_log_dir outside the pool (in the pool it is one of
   * the VM's volumes). Only on a host reached by a local URI: rcloud cannot reach a remote
   * host's files (docs/configuration.md says so).
   */
  private removeConsoleLog(id: string): void {
    const dir = this.opts.consoleLogDir;
    if (!dir || dir === this.opts.poolPath || !VM_ID_RE.test(id) || parseLibvirtUri(this.opts.uri).transport !== "unix") return;
    rmSync(posix.join(dir, `${id}-serial.log`), { force: true });
  }

  private refuseRemoteShares(): void {
    if (parseLibvirtUri(this.opts.uri).transport !== "unix") {
      throw new DriverError("unsupported", `shares on a remote libvirt host cannot be checked (rcloud cannot resolve paths on ${parseLibvirtUri(this.opts.uri).host ?? displayUri(this.opts.uri)}); share directories only on a host reached by a local URI, or use the QEMU driver there`);
    }
  }

  /** Before libvirt starts a QEMU for `dom` (virtiofsd opens the shares then): checkSharesUnmoved. */
  private async checkShares(dom: RemoteNonnullDomain): Promise<void> {
    const rec = await this.records.get(dom);
    if (!rec || rec.shares.length === 0) return;
    this.refuseRemoteShares();
    checkSharesUnmoved(this.opts.shareDirs ?? [], dom.name, rec.shares);
  }

  async readImage(id: string): Promise<ImageReader> {
    try {
      return await this.baseImages.read(id);
    } catch (e) {
      translate(e, `reading image ${id}`);
    }
  }

  writeImage(fileName: string, format: string, sizeBytes: number, data: ReadableStream<Uint8Array>): Promise<ImageInfo> {
    return this.baseImages.write(fileName, format, sizeBytes, data);
  }
}

/** When a dump was taken, from its name (dump-20261202T160501Z.elf → 2026-12-02T16:05:01.000Z). */
function dumpTime(dump: string): string {
  const m = /^dump-(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z/.exec(dump);
  return m ? `${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:${m[6]}.000Z` : "";
}
