/**
 * The one interface every hypervisor driver implements (libvirt today, direct QEMU next).
 * The VM service talks only to this; it never knows which driver it has.
 */

import type { DiskBus, DiskRole, NetworkMode, OnPanic, ReportedDiskBus, ShareTransport, VmState } from "../api-types/values.ts";

export type { DiskBus, NetworkMode, OnPanic, ReportedDiskBus, ShareTransport, VmState };

/** A host directory shared with the guest; hostPath is the real path the host resolved. */
export interface ShareSpec {
  hostPath: string;
  tag: string;
  readonly: boolean;
  transport: ShareTransport;
}

export interface DataDiskSpec {
  sizeGb: number;
  bus: DiskBus;
}

/** Direct kernel boot: host paths of the kernel and initrd, and the command line. */
export interface VmBoot {
  kernel: string;
  initrd: string | null;
  cmdline: string | null;
}

/**
 * A change to an existing VM (PATCH), validated by the service: only what changes is set.
 * `boot: null` turns direct kernel boot off.
 */
export interface VmChange {
  vcpus?: number;
  maxVcpus?: number;
  memoryMb?: number;
  maxMemoryMb?: number;
  /** Grow only. */
  rootDiskGb?: number;
  /** New data disks, after the last one; their serials continue from the highest kdevopsN. */
  addDisks?: DataDiskSpec[];
  /** Serials of data disks to detach and delete. */
  removeDisks?: string[];
  boot?: VmBoot | null;
}

/** What the VM gets at its next start that it does not have now (only the fields that differ). */
export interface PendingChanges {
  vcpus?: number;
  maxVcpus?: number;
  memoryMb?: number;
  maxMemoryMb?: number;
  boot?: VmBoot | null;
}

/** Which parts of a VmChange took effect now and which wait for the next start. */
export interface VmChangeResult {
  live: (keyof VmChange)[];
  pending: (keyof VmChange)[];
}

/** Everything a driver needs to create a VM; validated and resolved by the service. */
export interface VmSpec {
  id: string;
  name: string;
  vcpus: number;
  /** vCPUs the VM may grow to by hot-plug (>= vcpus). */
  maxVcpus: number;
  memoryMb: number;
  /** Memory the VM may grow to through the balloon (>= memoryMb). */
  maxMemoryMb: number;
  image: ImageInfo;
  rootDiskGb: number;
  dataDisks: DataDiskSpec[];
  /** sshPort: the 127.0.0.1 port forwarded to guest port 22 (user mode only). */
  network: { mode: NetworkMode; bridge: string | null; restrict: boolean; sshPort: number | null };
  ssh: { user: string; authorizedKeys: string[] };
  /** cloud-init NoCloud seed image (ISO 9660, label cidata), attached read-only. */
  seedIso: Uint8Array | null;
  boot: VmBoot | null;
  createdAt: string;
  owner: string | null;
  /** Placement group from the request (kept in the VM's metadata), or null. */
  placementGroup: string | null;
  /** Start the VM after defining it. */
  start: boolean;
  /** Host port of QEMU's gdbstub (on the address SSH forwards use), or null for none. */
  gdbPort: number | null;
  onPanic: OnPanic;
  /** Host directories shared with the guest (resolved by the host's shareDir). */
  shares: ShareSpec[];
}

export interface DiskInfo {
  type: DiskRole;
  size_gb: number;
  driver: ReportedDiskBus;
  format: string;
  serial: string | null;
  path: string;
}

/**
 * What a driver knows about one VM it manages. Never changed once handed out (the service keeps each VM's
 * JSON by its record); a driver may hand out the same record again only while nothing in it
 * changed.
 */
export interface VmRecord {
  id: string;
  name: string;
  uuid: string;
  state: VmState;
  /** What the VM runs with now (or will at its next start, when stopped). */
  vcpus: number;
  maxVcpus: number;
  memoryMb: number;
  maxMemoryMb: number;
  image: string;
  disks: DiskInfo[];
  /** Changes made while it ran that wait for its next start; null when none. */
  pending: PendingChanges | null;
  network: { mode: NetworkMode; bridge: string | null; mac: string | null; sshPort: number | null; restrict: boolean };
  sshUser: string;
  boot: VmBoot | null;
  createdAt: string;
  updatedAt: string;
  owner: string | null;
  placementGroup: string | null;
  /** CPU time consumed, nanoseconds (0 when stopped). */
  cpuTimeNs: bigint;
  shares: ShareSpec[];
  gdbPort: number | null;
  onPanic: OnPanic;
  /** Why the VM is crashed (state "crashed"); null when it is not. */
  crashReason: string | null;
}

/** A guest memory dump kept next to the VM's disks. */
export interface DumpInfo {
  /** `dump-<UTC time>.elf` (DUMP_NAME_PATTERN). */
  name: string;
  sizeBytes: number;
  createdAt: string;
}

/** A dump's bytes, streamed from the host that has it. */
export interface DumpReader {
  data: ReadableStream<Uint8Array>;
  sizeBytes: number;
}

export interface ImageInfo {
  id: string;
  fileName: string;
  alias: string | null;
  path: string;
  format: "raw" | "qcow2" | string;
  virtualSizeBytes: number;
  diskSizeBytes: number;
}

export interface HostInfo {
  hostname: string;
  cpus: number;
  memoryMb: number;
  /** null when the hypervisor cannot say (e.g. no NUMA information). */
  freeMemoryMb: number | null;
  hypervisor: string;
  hypervisorVersion: string;
  libvirtVersion: string | null;
  driver: "libvirt" | "qemu";
  uri: string;
  storage: { pool: string; path: string; capacityBytes: number; allocationBytes: number; availableBytes: number } | null;
}

export interface ConsoleInfo {
  type: "serial";
  /** Host file the serial console is logged to, when known. */
  logFile: string | null;
  /** How to attach from the host. */
  command: string | null;
  ssh: { host: string; port: number; user: string } | null;
}

/** One internal (qcow2) snapshot of a VM, as the driver reads it. */
export interface SnapshotInfo {
  name: string;
  /** ISO 8601. */
  createdAt: string;
  /** Memory and device state saved too (taken of a running VM). */
  memory: boolean;
  state: "running" | "stopped";
  /** Bytes of saved memory/device state, when known cheaply; else null. */
  vmStateBytes: number | null;
}

/** An interactive serial console session. */
export interface ConsoleSession {
  /** Bytes from the guest's serial console. */
  readonly output: ReadableStream<Uint8Array>;
  /** Sends keystrokes to the guest. */
  write(bytes: Uint8Array): Promise<void>;
  close(): Promise<void>;
}

/** Errors drivers raise for conditions the service maps to API answers. */
export class DriverError extends Error {
  override readonly name = "DriverError";
  /** Wraps an unexpected exception (a system call, a bug): its message is for the server log only. */
  readonly internal: boolean;
  constructor(
    readonly code: "not_found" | "conflict" | "invalid_state" | "unavailable" | "unsupported" | "no_space" | "share_not_allowed" | "failed",
    message: string,
    options?: { cause?: unknown; internal?: boolean },
  ) {
    super(message, options);
    this.internal = options?.internal ?? false;
  }
}

/** What happened to a VM, as the hypervisor tells it (libvirt domain events, QMP events). */
export interface DriverEvent {
  vmName: string;
  /** rcloud's VM id when the driver knows it without asking the hypervisor; else null. */
  vmId: string | null;
  action: "vm-started" | "vm-stopped" | "vm-shutdown" | "vm-crashed" | "vm-paused" | "vm-resumed" | "vm-rebooted" | "vm-dumped" | "vm-defined" | "vm-undefined";
  /** The hypervisor's own word for it (libvirt's event detail: "destroyed", "shutdown", "failed", ...). */
  detail: string;
}

/** Something reconcile removed: it belonged to no complete VM (a create or delete cut short). */
export interface ReconciledArtefact {
  kind: "volume" | "domain" | "vm-directory" | "process";
  /** The volume's name, the domain's or the directory's path, or the process's PID. */
  name: string;
  /** The rcloud VM id the artefact was named after. */
  vmId: string;
}

/** What one reconcile pass on one host did. */
export interface ReconcileReport {
  removed: ReconciledArtefact[];
  /** Complete VMs whose create or delete was cut short, kept and listed as they are. */
  adopted: { id: string; name: string; state: VmState; why: string }[];
}

/** A kernel or initrd uploaded for one VM, stored with its disks on its host. */
export interface UploadedBootFile {
  kind: "kernel" | "initrd";
  /** Where QEMU opens it on the VM's host. */
  path: string;
  sizeBytes: number;
}

/** An image's bytes, read from the host that has it (image copy between hosts). */
export interface ImageReader {
  image: ImageInfo;
  /** The file's bytes as stored (qcow2 stays qcow2). */
  data: ReadableStream<Uint8Array>;
  /** Bytes the stream will deliver. */
  sizeBytes: number;
}

/** How current a listing must be. */
export interface ListOptions {
  /** Every record's CPU time read now (metrics); otherwise it may be as old as the VM's last change. */
  cpuTime?: boolean;
}

export interface VmDriver {
  readonly kind: "libvirt" | "qemu";
  /** Prepares storage and checks the hypervisor; called once at start. */
  init(): Promise<void>;
  close(): Promise<void>;
  health(): Promise<{ ok: boolean; detail: string }>;
  hostInfo(): Promise<HostInfo>;
  images(): Promise<ImageInfo[]>;
  /** Every VM, oldest first (by createdAt). */
  list(opts?: ListOptions): Promise<VmRecord[]>;
  get(name: string): Promise<VmRecord | null>;
  /** Creates everything for the VM; on failure removes whatever it created. */
  create(spec: VmSpec): Promise<VmRecord>;
  start(name: string): Promise<void>;
  /** Graceful stop (ACPI) bounded by timeoutMs, then forced; `force` skips the graceful part. */
  stop(name: string, opts: { force: boolean; timeoutMs: number }): Promise<void>;
  reboot(name: string): Promise<void>;
  delete(name: string): Promise<void>;
  console(name: string): Promise<ConsoleInfo>;
  /** Attaches to the serial console, taking it over from any other session. */
  openConsole(name: string): Promise<ConsoleSession>;
  /** Where to reach a VM (guest IPv4, or 127.0.0.1 for user networking); null if unknown. */
  ipAddress(vm: VmRecord): Promise<string | null>;
  /** Read-only QMP passthrough (query-* commands). */
  qmp(name: string, command: string, args?: Record<string, unknown>): Promise<unknown>;
  /** Times the driver had to reconnect to its hypervisor (libvirt sessions re-opened). */
  reconnects?(): number;
  /** Calls that hold a hypervisor worker for long: in flight, waiting, and the window (libvirt). */
  slowCalls?(): { inFlight: number; waiting: number; window: number } | null;
  /** Host ports already promised to VMs (user-mode SSH forwards and gdbstubs), to avoid collisions. */
  usedSshPorts(): Promise<Set<number>>;
  /**
   * A direct-boot file on this host: the path as QEMU will open it, after checking it is a
   * regular file inside the host's kernel directory. DriverError("not_found") with a message
   * naming the directory otherwise; DriverError("unsupported") when the host has none.
   */
  bootFile(kind: "kernel" | "initrd", path: string): Promise<string>;
  /**
   * Stores `data` (exactly `sizeBytes`) as the VM's uploaded kernel or initrd, in its storage
   * on its host. It replaces the previous upload only once complete; older uploads the VM's
   * definition does not boot from are deleted. On failure `data` is cancelled and the previous
   * upload stays. Everything uploaded goes with the VM on delete.
   */
  storeBootFile(name: string, kind: "kernel" | "initrd", sizeBytes: number, data: ReadableStream<Uint8Array>): Promise<UploadedBootFile>;
  /** The VM's current uploads (null for a kind never uploaded). */
  uploadedBootFiles(name: string): Promise<{ kernel: UploadedBootFile | null; initrd: UploadedBootFile | null }>;
  /**
   * A directory to share with a guest: its real path on this host, after checking it is a
   * directory inside one of vm_defaults.share_dirs. DriverError("not_found") when the path
   * is outside the directories or there are none (the service answers share_not_allowed),
   * ("invalid_state") when it is inside but missing or not a directory, ("unsupported") when
   * the host's paths cannot be checked.
   */
  shareDir(path: string): Promise<string>;
  /** Opens an image for reading (image copy). */
  readImage(id: string): Promise<ImageReader>;
  /** Stores an image under `fileName` in the host's image directory; refuses to overwrite. */
  writeImage(fileName: string, format: string, sizeBytes: number, data: ReadableStream<Uint8Array>): Promise<ImageInfo>;
  /**
   * Changes a VM. Stopped: everything goes into its definition. Running: data disks on
   * virtio/SCSI are hot-plugged or unplugged, the root disk grows online, memory up to
   * maxMemoryMb goes through the balloon and more vCPUs up to maxVcpus are hot-plugged; the
   * rest waits for the next start (`pending`); disks on other buses are refused
   * (DriverError "unsupported"). On failure the VM is left as it was.
   */
  update(name: string, change: VmChange): Promise<VmChangeResult>;
  /**
   * Internal snapshots, kept inside the VM's qcow2 disks (the seed CD-ROM excluded). With
   * `memory` the running VM's RAM and device state too; without, the disks of the stopped VM.
   * The service checks the VM's state, the name's shape and uniqueness first.
   */
  snapshots(name: string): Promise<SnapshotInfo[]>;
  createSnapshot(name: string, snapshot: string, memory: boolean): Promise<SnapshotInfo>;
  /** A memory snapshot leaves the VM running where it was; a disk-only one leaves it stopped. */
  revertSnapshot(name: string, snapshot: string): Promise<void>;
  deleteSnapshot(name: string, snapshot: string): Promise<void>;
  /** The last `maxBytes` of the VM's serial console log (empty before its first boot). */
  consoleLog?(name: string, maxBytes: number): Promise<Uint8Array>;
  /** The VM's guest memory dumps (on_panic: dump), oldest first. */
  dumps(name: string): Promise<DumpInfo[]>;
  /** Opens one dump for reading; DriverError("not_found") when the VM has no such dump. */
  readDump(name: string, dump: string): Promise<DumpReader>;
  /**
   * Finishes or removes what creates and deletes cut short (rcloud killed midway) left on
   * this host: every VM is afterwards complete and listed, or gone with all its files. Only
   * rcloud's own artefacts are touched (its pool's volumes named after VM ids, its state
   * directory), never those of a create still running.
   */
  reconcile(): Promise<ReconcileReport>;
  /** Tells `listener` what happens to VMs, as it happens; returns the unsubscribe function. */
  subscribe?(listener: (event: DriverEvent) => void): () => void;
}
