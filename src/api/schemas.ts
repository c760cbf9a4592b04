/** Request and response schemas of the REST API (also the source of the OpenAPI document). */
import { t } from "elysia";
import {
  BRIDGE_PATTERN,
  CMDLINE_PATTERN,
  DISK_BUSES,
  DUMP_NAME_PATTERN,
  HOST_NAME_PATTERN,
  HOST_PATH_MAX,
  HOST_STATES,
  MAX_KEY_LINE_BYTES,
  MAX_SHARES,
  MAX_SSH_KEYS,
  NETWORK_MODES,
  ON_PANIC_ACTIONS,
  PLACEMENT_GROUP_PATTERN,
  PROJECT_PATTERN,
  QMP_QUERY_PATTERN,
  REPORTED_DISK_BUSES,
  REPORTED_DISK_ROLES,
  SHARE_TAG_PATTERN,
  SHARE_TRANSPORTS,
  SNAPSHOT_NAME_MAX,
  SNAPSHOT_NAME_PATTERN,
  SNAPSHOT_NAME_RULE,
  VM_LIMITS,
  VM_NAME_PATTERN,
  VM_STATES,
} from "../api-types/values.ts";
import { literalUnion } from "../util/literal-union.ts";
import { LOGIN_USER_RE } from "../util/login-user.ts";

// The limits are values.ts's, which the VM service checks too, so the document says what is accepted.
const SshKey = t.String({ maxLength: MAX_KEY_LINE_BYTES, description: "One OpenSSH public key line: '<type> <base64> [comment]', no options, no line breaks" });

/** A yes/no query parameter: true, false, 1 or 0 (anything else is a validation error, not a guess). */
export const Flag = (description: string) => t.String({ pattern: "^(true|false|1|0)$", description });
/** A Flag's value (validated by the schema). */
export const isTrue = (v: string | undefined): boolean => v === "true" || v === "1";

export const ErrorBody = t.Object(
  {
    error: t.Object({
      code: t.String({ description: "Stable machine-readable code, e.g. not_found, name_taken, validation_error" }),
      message: t.String({ description: "What went wrong and what to do about it" }),
      field: t.Optional(t.String({ description: "The request field at fault, for validation errors" })),
    }),
  },
  { description: "Every error answer has this shape" },
);

const OnPanicSchema = literalUnion(ON_PANIC_ACTIONS, {
  description: "What a guest panic (pvpanic) does: dump (guest memory saved as an ELF core, VM kept halted), restart, stop (powered off), preserve (kept halted)",
});
const DiskType = literalUnion(DISK_BUSES);
const DataDisk = t.Object({ size_gb: t.Integer({ minimum: VM_LIMITS.diskGb.min, maximum: VM_LIMITS.diskGb.max }), type: t.Optional(DiskType) }, { additionalProperties: false });
const Kernel = t.String({ maxLength: HOST_PATH_MAX, pattern: "^/", description: "Absolute host path of a kernel for direct boot (a regular file inside vm_defaults.kernel_dir)" });
const Initrd = t.String({ maxLength: HOST_PATH_MAX, pattern: "^/", description: "Absolute host path of an initrd (inside vm_defaults.kernel_dir); needs kernel" });
const Cmdline = t.String({ maxLength: VM_LIMITS.cmdlineMax, pattern: CMDLINE_PATTERN, description: "Kernel command line (printable characters); needs kernel" });

const ShareTransport = literalUnion(SHARE_TRANSPORTS, { description: "virtiofs (default), or 9p where virtiofs cannot run" });
const Share = t.Object(
  {
    host_path: t.String({ maxLength: HOST_PATH_MAX, pattern: "^/", description: "Absolute directory on the VM's host, inside vm_defaults.share_dirs (judged by its real path)" }),
    tag: t.String({ maxLength: 36, pattern: SHARE_TAG_PATTERN, description: "Mount tag, unique per VM; the guest mounts the share at /mnt/<tag> (at most 36 characters for virtiofs, 31 for 9p)" }),
    readonly: t.Optional(t.Boolean({ default: false })),
    transport: t.Optional(ShareTransport),
  },
  { additionalProperties: false },
);

export const CreateVmBody = t.Object(
  {
    name: t.String({
      minLength: 1,
      maxLength: 63,
      pattern: VM_NAME_PATTERN,
      description: "DNS label: lower-case letters, digits and '-', 1-63 characters, not starting or ending with '-', not shaped like an id (vm-xxxxxxxx)",
      examples: ["web-01"],
    }),
    image: t.Optional(t.String({ minLength: 1, maxLength: 255, description: "Base image id, file name or alias (see GET /images)", examples: ["debian13"] })),
    base_image: t.Optional(t.String({ minLength: 1, maxLength: 255, description: "kdevops name for `image`" })),
    vcpus: t.Optional(t.Integer({ minimum: VM_LIMITS.vcpus.min, maximum: VM_LIMITS.vcpus.max })),
    memory_mb: t.Optional(t.Integer({ minimum: VM_LIMITS.memoryMb.min, maximum: VM_LIMITS.memoryMb.max })),
    memory_gb: t.Optional(t.Integer({ minimum: VM_LIMITS.memoryGb.min, maximum: VM_LIMITS.memoryGb.max, description: "Alternative to memory_mb" })),
    max_vcpus: t.Optional(t.Integer({ minimum: VM_LIMITS.vcpus.min, maximum: VM_LIMITS.vcpus.max, description: "vCPUs the VM may get later without a restart (hot-plug); default vcpus" })),
    max_memory_mb: t.Optional(t.Integer({ minimum: VM_LIMITS.memoryMb.min, maximum: VM_LIMITS.memoryMb.max, description: "Memory the VM may get later without a restart (balloon); default memory_mb" })),
    root_disk_gb: t.Optional(t.Integer({ minimum: VM_LIMITS.diskGb.min, maximum: VM_LIMITS.diskGb.max })),
    extra_disks: t.Optional(
      t.Array(
        DataDisk,
        { maxItems: VM_LIMITS.extraDisksMax, description: `Data disks; guests see serials kdevops0..N. At most vm_defaults.max_extra_disks (default 8, never more than ${VM_LIMITS.extraDisksMax})` },
      ),
    ),
    network: t.Optional(
      t.Object(
        {
          mode: t.Optional(literalUnion(NETWORK_MODES)),
          bridge: t.Optional(t.String({ maxLength: 64, pattern: BRIDGE_PATTERN, description: "libvirt network or host bridge (bridge mode)" })),
          restrict: t.Optional(t.Boolean({ description: "user mode: the guest reaches nothing but its forwarded ports" })),
        },
        { additionalProperties: false },
      ),
    ),
    ssh_user: t.Optional(t.String({ maxLength: 32, pattern: LOGIN_USER_RE.source, description: "Unix user name cloud-init gives the keys to" })),
    ssh_public_key: t.Optional(SshKey),
    ssh_public_keys: t.Optional(t.Array(SshKey, { maxItems: MAX_SSH_KEYS })),
    kernel: t.Optional(Kernel),
    initrd: t.Optional(Initrd),
    cmdline: t.Optional(Cmdline),
    start: t.Optional(t.Boolean({ default: true })),
    project: t.Optional(
      t.String({ maxLength: 64, pattern: PROJECT_PATTERN, description: "Project the VM belongs to (admin tokens; a user token's project is always used)" }),
    ),
    host: t.Optional(t.String({ maxLength: 63, pattern: HOST_NAME_PATTERN, description: "Pin the VM to this host (a name from GET /hosts); default: placement chooses" })),
    placement_group: t.Optional(
      t.String({ maxLength: 63, pattern: PLACEMENT_GROUP_PATTERN, description: "VMs of one group go to different hosts while there are hosts left" }),
    ),
    debug: t.Optional(
      t.Object(
        { gdb: t.Optional(t.Boolean({ default: false, description: "Expose QEMU's gdbstub on a free host port (gdb_port), on 127.0.0.1 of the host (ssh_forward_address on remote hosts)" })) },
        { additionalProperties: false },
      ),
    ),
    on_panic: t.Optional(OnPanicSchema),
    shares: t.Optional(t.Array(Share, { maxItems: MAX_SHARES, description: "Host directories shared with the guest; cloud-init mounts each at /mnt/<tag>" })),
  },
  { additionalProperties: false },
);

const HostStateSchema = literalUnion(HOST_STATES, {
  description: "online, offline (not answering: its VMs are shown from the last listing with state unknown) or cordoned (takes no new VMs)",
});

export const Vm = t.Object({
  id: t.String({ examples: ["vm-abc12345"] }),
  name: t.String(),
  uuid: t.String(),
  state: literalUnion(VM_STATES, { description: "unknown: rcloud cannot tell (e.g. the VM's host is offline: its last listing is shown)" }),
  vcpus: t.Integer(),
  max_vcpus: t.Integer({ description: "vCPUs the VM can get without a restart (hot-plug)" }),
  memory_mb: t.Integer(),
  max_memory_mb: t.Integer({ description: "Memory the VM can get without a restart (balloon)" }),
  disks: t.Array(
    t.Object({ type: literalUnion(REPORTED_DISK_ROLES), size_gb: t.Number(), driver: literalUnion(REPORTED_DISK_BUSES, { description: "The bus the guest sees the disk on (ide disks are attached as sata)" }), format: t.String(), serial: t.Nullable(t.String()) }),
  ),
  restart_required: t.Boolean({ description: "Changes wait in `pending` for the next stop and start" }),
  pending: t.Nullable(
    t.Object(
      {
        vcpus: t.Optional(t.Integer()),
        max_vcpus: t.Optional(t.Integer()),
        memory_mb: t.Optional(t.Integer()),
        max_memory_mb: t.Optional(t.Integer()),
        kernel: t.Optional(t.Nullable(t.String())),
        initrd: t.Optional(t.Nullable(t.String())),
        cmdline: t.Optional(t.Nullable(t.String())),
      },
      { description: "What the VM gets at its next stop and start; null when nothing waits" },
    ),
  ),
  network: t.Object({
    mode: literalUnion(NETWORK_MODES),
    bridge: t.Nullable(t.String()),
    ip_address: t.Nullable(t.String()),
    mac_address: t.Nullable(t.String()),
    ssh_port: t.Nullable(t.Integer()),
  }),
  image: t.String(),
  ip_address: t.Nullable(t.String({ description: "Where to reach the VM (127.0.0.1 for user networking, with ssh_port)" })),
  ssh_port: t.Nullable(t.Integer()),
  ssh_user: t.String(),
  kernel: t.Nullable(t.String()),
  initrd: t.Nullable(t.String()),
  cmdline: t.Nullable(t.String()),
  created_at: t.String(),
  updated_at: t.String(),
  project: t.Optional(t.Nullable(t.String({ description: "Project that owns the VM (null: none)" }))),
  host: t.String({ description: "The host that runs the VM" }),
  host_state: HostStateSchema,
  placement_group: t.Nullable(t.String()),
  gdb_port: t.Nullable(t.Integer({ description: "Host port of QEMU's gdbstub (gdb: target remote <ip_address or the host>:<gdb_port>); null when off" })),
  on_panic: OnPanicSchema,
  crash_reason: t.Nullable(t.String({ description: "Why the VM last crashed (QEMU died, guest panic) until it is started or deleted; null if it did not" })),
  shares: t.Array(
    t.Object({ host_path: t.String(), tag: t.String(), readonly: t.Boolean(), transport: ShareTransport }),
    { description: "Host directories shared with the guest (set at create)" },
  ),
});

export const Dump = t.Object({
  name: t.String({ pattern: DUMP_NAME_PATTERN }),
  size_bytes: t.Integer(),
  created_at: t.String(),
});
export const DumpList = t.Object({ dumps: t.Array(Dump) });

export const VmList = t.Object({ vms: t.Array(Vm) });

export const UpdateVmBody = t.Object(
  {
    vcpus: t.Optional(t.Integer({ minimum: VM_LIMITS.vcpus.min, maximum: VM_LIMITS.vcpus.max })),
    max_vcpus: t.Optional(t.Integer({ minimum: VM_LIMITS.vcpus.min, maximum: VM_LIMITS.vcpus.max, description: "Takes effect at the next stop and start" })),
    memory_mb: t.Optional(t.Integer({ minimum: VM_LIMITS.memoryMb.min, maximum: VM_LIMITS.memoryMb.max })),
    memory_gb: t.Optional(t.Integer({ minimum: VM_LIMITS.memoryGb.min, maximum: VM_LIMITS.memoryGb.max, description: "Alternative to memory_mb" })),
    max_memory_mb: t.Optional(t.Integer({ minimum: VM_LIMITS.memoryMb.min, maximum: VM_LIMITS.memoryMb.max, description: "Takes effect at the next stop and start" })),
    root_disk_gb: t.Optional(t.Integer({ minimum: VM_LIMITS.diskGb.min, maximum: VM_LIMITS.diskGb.max, description: "Grow only" })),
    extra_disks: t.Optional(
      t.Object(
        {
          add: t.Optional(t.Array(DataDisk, { maxItems: VM_LIMITS.extraDisksMax, description: "New data disks after the last one; serials continue from the highest kdevopsN" })),
          remove: t.Optional(t.Array(t.String({ maxLength: 64, pattern: "^kdevops[0-9]{1,4}$" }), { maxItems: VM_LIMITS.extraDisksMax, description: "Serials of data disks to detach and delete" })),
        },
        { additionalProperties: false },
      ),
    ),
    kernel: t.Optional(t.Nullable(Kernel)),
    initrd: t.Optional(t.Nullable(Initrd)),
    cmdline: t.Optional(t.Nullable(Cmdline)),
    running: t.Optional(t.Boolean({ description: "Start or stop the VM" })),
    restart: t.Optional(t.Boolean({ description: "Stop gracefully (vm_defaults.stop_timeout_s), apply, start; answer when it runs again" })),
  },
  { additionalProperties: false },
);

export const Image = t.Object({
  id: t.String(),
  name: t.String(),
  file_name: t.String(),
  alias: t.Nullable(t.String()),
  format: t.String(),
  virtual_size_gb: t.Number(),
  disk_size_mb: t.Number(),
  hosts: t.Array(t.String(), { description: "The hosts that hold the image" }),
});

export const Host = t.Object({
  name: t.String(),
  uri: t.String({ description: "libvirt URI without credentials or client-side parameters" }),
  driver: t.String(),
  state: HostStateSchema,
  labels: t.Record(t.String(), t.String()),
  hostname: t.Nullable(t.String()),
  cpus: t.Nullable(t.Integer()),
  memory_mb: t.Nullable(t.Integer()),
  available_memory_mb: t.Nullable(t.Integer()),
  allocated: t.Object({ vcpus: t.Integer(), memory_mb: t.Integer() }, { description: "VMs not stopped, and creates in flight" }),
  capacity: t.Object({ vcpus: t.Nullable(t.Integer()), memory_mb: t.Nullable(t.Integer()) }, { description: "cpus × vcpu_overcommit, memory × memory_overcommit" }),
  vms: t.Integer(),
  versions: t.Object({ hypervisor: t.Nullable(t.String()), libvirt: t.Nullable(t.String()) }),
  last_contact: t.Nullable(t.String()),
  last_error: t.Nullable(t.String()),
});

export const Reconcile = t.Object({
  hosts: t.Array(
    t.Object({
      host: t.String(),
      removed: t.Array(t.Object({ kind: t.String({ description: "volume, domain, vm-directory or process" }), name: t.String(), vm_id: t.String() }), {
        description: "Artefacts of no complete VM (creates or deletes cut short), removed",
      }),
      adopted: t.Array(t.Object({ id: t.String(), name: t.String(), state: t.String(), why: t.String() }), { description: "Complete VMs whose create or delete was cut short, kept" }),
      error: t.Nullable(t.String({ description: "Why this host was not reconciled (offline, failed)" })),
    }),
  ),
});

export const CopyImageBody = t.Object(
  {
    to: t.String({ maxLength: 63, pattern: HOST_NAME_PATTERN, description: "The host to copy the image to" }),
    from: t.Optional(t.String({ maxLength: 63, pattern: HOST_NAME_PATTERN, description: "The host to copy from (default: an online host that has it)" })),
  },
  { additionalProperties: false },
);

export const DeleteResult = t.Object({ id: t.String(), name: t.String(), status: t.Literal("destroyed") });

export const QmpBody = t.Object(
  {
    execute: t.String({ maxLength: 66, pattern: QMP_QUERY_PATTERN, description: "A read-only QMP command (query-*)" }),
    arguments: t.Optional(t.Record(t.String(), t.Unknown())),
  },
  { additionalProperties: false },
);

const SnapshotName = t.String({
  minLength: 1,
  maxLength: SNAPSHOT_NAME_MAX,
  pattern: SNAPSHOT_NAME_PATTERN,
  description: `${SNAPSHOT_NAME_RULE}; unique per VM`,
  examples: ["before-xfs-test"],
});

export const CreateSnapshotBody = t.Object(
  {
    name: SnapshotName,
    memory: t.Optional(
      t.Boolean({ description: "true: the running VM's memory too (a revert resumes it where it was); false: the stopped VM's disks. Default: true when the VM runs, false when stopped" }),
    ),
  },
  { additionalProperties: false },
);

export const Snapshot = t.Object({
  name: t.String(),
  created_at: t.String({ description: "ISO 8601, to the second" }),
  memory: t.Boolean({ description: "memory and disks (a revert leaves the VM running) or disks only (a revert leaves it stopped)" }),
  state: t.Union([t.Literal("running"), t.Literal("stopped")], { description: "the VM's state when it was taken" }),
  vm_state_bytes: t.Nullable(t.Integer({ description: "bytes of saved memory and device state (QEMU driver); null when not known cheaply" })),
});

export const SnapshotList = t.Object({ snapshots: t.Array(Snapshot) });

export const SnapshotDeleted = t.Object({ vm: t.String(), name: t.String(), status: t.Literal("deleted") });
