/**
 * The REST API's JSON bodies (/api/v1), as TypeScript types: what the server answers and
 * accepts, and what the CLI and the Terraform provider read and send. The OpenAPI schemas
 * in src/api/schemas.ts describe the same bodies; a type-level check there keeps them equal.
 */
import type { DiskBus, EventType, HostState, NetworkMode, OnPanic, ReportedDiskBus, ReportedDiskRole, ShareTransport, VmState } from "./values.ts";

export interface ApiDisk {
  type: ReportedDiskRole;
  size_gb: number;
  /** The bus the guest sees the disk on. */
  driver: ReportedDiskBus;
  format: string;
  serial: string | null;
}

/** A host directory shared with the guest, mounted there at /mnt/<tag> by cloud-init. */
export interface ApiShare {
  /** The directory on the VM's host (its real path, inside vm_defaults.share_dirs). */
  host_path: string;
  tag: string;
  readonly: boolean;
  transport: ShareTransport;
}

export interface ApiVm {
  id: string;
  name: string;
  uuid: string;
  state: VmState;
  /** vCPUs the VM runs with now. */
  vcpus: number;
  /** vCPUs it may grow to without a restart (hot-plug); equal to vcpus unless set at create. */
  max_vcpus: number;
  /** Memory the VM runs with now (the balloon's target when below max_memory_mb). */
  memory_mb: number;
  /** Memory it may grow to without a restart (balloon); equal to memory_mb unless set at create. */
  max_memory_mb: number;
  disks: ApiDisk[];
  /** true: changes wait in `pending` for the next stop and start (PATCH with `restart: true` applies them at once). */
  restart_required: boolean;
  /** What the VM will have after its next stop and start; null when nothing waits. */
  pending: ApiPendingChanges | null;
  network: { mode: NetworkMode; bridge: string | null; ip_address: string | null; mac_address: string | null; ssh_port: number | null };
  image: string;
  ip_address: string | null;
  ssh_port: number | null;
  ssh_user: string;
  kernel: string | null;
  initrd: string | null;
  cmdline: string | null;
  created_at: string;
  updated_at: string;
  /** The project that owns the VM (null: created without a project). */
  project?: string | null;
  /** The host that runs the VM (a name from GET /hosts). */
  host: string;
  /** The host's state: a VM on an `offline` host is reported with `state: "unknown"` from the last listing. */
  host_state: HostState;
  /** The placement group given at create (VMs of one group go to different hosts), or null. */
  placement_group: string | null;
  /** Host port of QEMU's gdbstub (`debug.gdb` at create), on ip_address's host; null when off. */
  gdb_port: number | null;
  /** What happens when the guest panics. */
  on_panic: OnPanic;
  /** Why the VM last crashed (its QEMU died, the guest panicked), until it is started or deleted; null if it did not. */
  crash_reason: string | null;
  /** Host directories shared with the guest (set at create). */
  shares: ApiShare[];
}

/** GET /vms/{id}/dumps: one guest memory dump (an ELF core), kept until the VM is deleted. */
export interface ApiDump {
  name: string;
  size_bytes: number;
  /** ISO 8601. */
  created_at: string;
}

/** Changes made to a running VM that take effect at its next stop and start (only the fields that change). */
export interface ApiPendingChanges {
  vcpus?: number;
  max_vcpus?: number;
  memory_mb?: number;
  max_memory_mb?: number;
  kernel?: string | null;
  initrd?: string | null;
  cmdline?: string | null;
}

export interface ApiImage {
  id: string;
  name: string;
  file_name: string;
  alias: string | null;
  format: string;
  virtual_size_gb: number;
  disk_size_mb: number;
  /** The hosts that hold this image (an image is the same everywhere when its id is). */
  hosts: string[];
}

/** POST /reconcile: what one host's reconcile removed and adopted. */
export interface ApiReconcileHost {
  host: string;
  /** Artefacts of no complete VM (creates or deletes cut short), removed. */
  removed: { kind: "volume" | "domain" | "vm-directory" | "process"; name: string; vm_id: string }[];
  /** Complete VMs whose create or delete was cut short, kept as they are. */
  adopted: { id: string; name: string; state: VmState; why: string }[];
  /** Why this host was not reconciled (offline, failed); null when it was. */
  error: string | null;
}

/** POST /reconcile: one entry per host of the fleet. */
export interface ApiReconcile {
  hosts: ApiReconcileHost[];
}

/** GET /hosts, GET /hosts/{name}: one hypervisor host of the fleet. Never carries credentials. */
export interface ApiHost {
  name: string;
  /** The libvirt URI without user info or client-side parameters (key files, paths). */
  uri: string;
  driver: "libvirt" | "qemu";
  state: HostState;
  labels: Record<string, string>;
  /** From the last successful contact; null before the first. */
  hostname: string | null;
  cpus: number | null;
  memory_mb: number | null;
  available_memory_mb: number | null;
  /** What rcloud's VMs on the host are given: VMs not stopped, and creates in flight. */
  allocated: { vcpus: number; memory_mb: number };
  /** What placement allows: cpus × vcpu_overcommit, memory × memory_overcommit. */
  capacity: { vcpus: number | null; memory_mb: number | null };
  vms: number;
  versions: { hypervisor: string | null; libvirt: string | null };
  /** ISO 8601 time of the last answer from the host; null if it never answered. */
  last_contact: string | null;
  last_error: string | null;
}

/** POST /images/{id}/copy. */
export interface CopyImageRequest {
  to: string;
  /** The host to copy from; default: any online host that has the image. */
  from?: string;
}

/** POST /vms. The server validates every field again; unknown fields are refused. */
export interface CreateVmRequest {
  name: string;
  image?: string;
  /** kdevops's name for `image`. */
  base_image?: string;
  vcpus?: number;
  memory_mb?: number;
  memory_gb?: number;
  /** vCPUs the VM may be given later without a restart (hot-plug); default vcpus. */
  max_vcpus?: number;
  /** Memory the VM may be given later without a restart (balloon); default memory_mb. */
  max_memory_mb?: number;
  root_disk_gb?: number;
  extra_disks?: { size_gb: number; type?: DiskBus }[];
  network?: { mode?: NetworkMode; bridge?: string; restrict?: boolean };
  ssh_user?: string;
  ssh_public_key?: string;
  ssh_public_keys?: string[];
  kernel?: string;
  initrd?: string;
  cmdline?: string;
  start?: boolean;
  /** The project the VM belongs to: admins may choose; a user token's project is forced. */
  project?: string;
  /** Pin the VM to this host (a name from GET /hosts). */
  host?: string;
  /** VMs of one group go to different hosts while there are hosts left. */
  placement_group?: string;
  /** gdb: expose QEMU's gdbstub on a free host port (gdb_port); default off. */
  debug?: { gdb?: boolean };
  /** What to do when the guest panics; default vm_defaults.on_panic. */
  on_panic?: OnPanic;
  /** Host directories to share (inside vm_defaults.share_dirs); cloud-init mounts each at /mnt/<tag>. */
  shares?: { host_path: string; tag: string; readonly?: boolean; transport?: ShareTransport }[];
}

/**
 * PATCH /vms/{id}: every field optional; what is left out stays. Changes a running VM live
 * where the hypervisor can (data disks on virtio/SCSI, root disk growth, memory up to
 * max_memory_mb, more vCPUs up to max_vcpus); the rest waits for the next stop and start
 * (`pending`), or happens at once with `restart: true`.
 */
export interface UpdateVmRequest {
  vcpus?: number;
  max_vcpus?: number;
  memory_mb?: number;
  memory_gb?: number;
  max_memory_mb?: number;
  /** Grow only. */
  root_disk_gb?: number;
  /** Data disks: `add` go after the last one (serials continue from the highest), `remove` by serial. */
  extra_disks?: { add?: { size_gb: number; type?: DiskBus }[]; remove?: string[] };
  /** null: no direct kernel boot any more (boot from the root disk); also clears initrd and cmdline. */
  kernel?: string | null;
  initrd?: string | null;
  cmdline?: string | null;
  /** Start or stop the VM (after applying the changes, or before, when stopping). */
  running?: boolean;
  /** Stop the VM gracefully (vm_defaults.stop_timeout_s), apply, start; answer when it runs again. */
  restart?: boolean;
}

/**
 * POST /vms/{id}/boot: restart the VM on its uploaded kernel (PUT /vms/{id}/kernel, direct
 * boot) or back on its image's own kernel (boot from the disk).
 */
export interface BootVmRequest {
  /** Default "uploaded". */
  kernel?: "uploaded" | "image";
  /** With kernel "uploaded": the uploaded initrd (default, when there is one) or none. */
  initrd?: "uploaded" | "none";
  /** Kernel command line (kernel "uploaded" only); left out: the VM's current one. */
  cmdline?: string | null;
  /** Power the VM off at once instead of shutting it down gracefully. */
  force?: boolean;
}

/** PUT /vms/{id}/kernel and /vms/{id}/initrd: what was stored. */
export interface ApiBootFile {
  vm: string;
  kind: "kernel" | "initrd";
  size_bytes: number;
  /** Where the VM's host keeps it. */
  path: string;
}

/** GET /vms/{id}/console. */
export interface ApiConsole {
  type: "serial";
  /** Host file the serial console is logged to, when known. */
  log_file: string | null;
  /** @deprecated The same as log_file (the one camelCase name the API had); to be removed. */
  logFile: string | null;
  /** How to attach from the server host. */
  command: string | null;
  ssh: { host: string; port: number; user: string } | null;
}

/**
 * GET /status: the fleet's capacity and what the caller's VMs use of it. With one host, uri,
 * hostname and storage are that host's; with several they are null (GET /hosts has each).
 * A project token sees its own VMs only and no host layout (uri, hostname, free memory,
 * storage are null).
 */
export interface ApiStatus {
  status: string;
  version: string;
  driver: string;
  /** Set for a project token. */
  project?: string | null;
  uri: string | null;
  hostname: string | null;
  hypervisor: string;
  hypervisor_version: string;
  libvirt_version: string | null;
  cpus: number;
  memory_mb: number;
  free_memory_mb: number | null;
  allocated: { vcpus: number; memory_mb: number; vms: number };
  vms_by_state: Record<string, number>;
  /** The fleet's hosts by state; cpus, memory and free memory above are the online hosts' sums. */
  hosts: { total: number; online: number; offline: number; cordoned: number };
  storage: { pool: string; path: string; capacity_bytes: number; allocation_bytes: number; available_bytes: number } | null;
}

/**
 * One event of GET /events (a line of NDJSON, or the data of a Server-Sent Event). `id`
 * increases across rcloud restarts; stream events (gap, cut-off) are about the stream and
 * have none.
 */
export interface ApiEvent {
  id: number | null;
  /** ISO 8601. */
  time: string;
  type: EventType;
  /** lifecycle: vm-started, vm-stopped, ...; operation: vm-created, vm-deleted, operation-failed; stream: gap, cut-off; host: host-*. */
  action: string;
  /** The VM, when the event is about one; id is null when rcloud did not know it (a refused reference). */
  vm: { id: string | null; name: string } | null;
  /** The project of the VM (null: none, or not about a VM). */
  project: string | null;
  /** The hypervisor's word for it ("destroyed", "shutdown", ...) or what went wrong. */
  detail: string;
  /** operation events: the X-Request-Id of the request that did it. */
  request_id: string | null;
  /** The host the VM is on, when known. */
  host: string | null;
  /** operation-failed: the error code the request was answered with. */
  error_code?: string;
  /** operation events: the operation (create, start, stop, reboot, delete). */
  operation?: string;
  /**
   * stream events: where the stream stands. subscribed: the last id published when it began
   * (live events follow it); gap: the id it continues after; cut-off: the last id delivered
   * (resume with ?since=it).
   */
  last_id?: number | null;
}

/** POST /vms/{id}/console: a single-use ticket for the console websocket (browsers cannot send headers). */
export interface ApiConsoleTicket {
  /** The websocket URL to open, ticket included. */
  url: string;
  ticket: string;
  /** ISO 8601; the ticket is refused after this and after its first use. */
  expires_at: string;
}

/** POST /vms/{id}/snapshots. */
export interface CreateSnapshotRequest {
  /** SNAPSHOT_NAME_PATTERN; unique per VM. */
  name: string;
  /**
   * true: the running VM's memory and device state too (a revert resumes it where it was);
   * false: the disks of a stopped VM. Default: true when the VM runs, false when stopped.
   */
  memory?: boolean;
}

/** One snapshot of a VM (GET /vms/{id}/snapshots). */
export interface ApiSnapshot {
  name: string;
  /** ISO 8601, to the second. */
  created_at: string;
  /** true: memory and disks (a revert leaves the VM running); false: disks only (a revert leaves it stopped). */
  memory: boolean;
  /** The VM's state when it was taken. */
  state: "running" | "stopped";
  /** Bytes of saved memory and device state, when the hypervisor says cheaply (QEMU driver); else null. */
  vm_state_bytes: number | null;
}

/** DELETE /vms/{id}/snapshots/{name}. */
export interface ApiSnapshotDeleted {
  vm: string;
  name: string;
  status: "deleted";
}
