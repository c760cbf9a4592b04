/** Request and response schemas of the REST API (also the source of the OpenAPI document). */
import { t } from "elysia";
import { PROJECT_RE } from "../auth/index.ts";
import { MAX_KEY_LINE_BYTES } from "../cloudinit/nocloud.ts";
import { BRIDGE_PATTERN, HOST_NAME_PATTERN, HOST_STATES, PLACEMENT_GROUP_PATTERN, QMP_QUERY_PATTERN, VM_NAME_PATTERN } from "../api-types/values.ts";
import { LOGIN_USER_RE } from "../util/login-user.ts";

// The limits below are the VM service's own (src/vm/service.ts), so the document says what is accepted.
const PATH_MAX = 4096;
const SshKey = t.String({ maxLength: MAX_KEY_LINE_BYTES, description: "One OpenSSH public key line: '<type> <base64> [comment]', no options, no line breaks" });

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

const DiskType = t.Union([t.Literal("virtio"), t.Literal("nvme"), t.Literal("scsi"), t.Literal("ide")]);
const DataDisk = t.Object({ size_gb: t.Integer({ minimum: 1, maximum: 65536 }), type: t.Optional(DiskType) }, { additionalProperties: false });
const Kernel = t.String({ maxLength: PATH_MAX, pattern: "^/", description: "Absolute host path of a kernel for direct boot (a regular file inside vm_defaults.kernel_dir)" });
const Initrd = t.String({ maxLength: PATH_MAX, pattern: "^/", description: "Absolute host path of an initrd (inside vm_defaults.kernel_dir); needs kernel" });
const Cmdline = t.String({ maxLength: 4096, pattern: "^[^\\x00-\\x1f\\x7f]*$", description: "Kernel command line (printable characters); needs kernel" });

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
    vcpus: t.Optional(t.Integer({ minimum: 1, maximum: 512 })),
    memory_mb: t.Optional(t.Integer({ minimum: 64, maximum: 4194304 })),
    memory_gb: t.Optional(t.Integer({ minimum: 1, maximum: 4096, description: "Alternative to memory_mb" })),
    max_vcpus: t.Optional(t.Integer({ minimum: 1, maximum: 512, description: "vCPUs the VM may get later without a restart (hot-plug); default vcpus" })),
    max_memory_mb: t.Optional(t.Integer({ minimum: 64, maximum: 4194304, description: "Memory the VM may get later without a restart (balloon); default memory_mb" })),
    root_disk_gb: t.Optional(t.Integer({ minimum: 1, maximum: 65536 })),
    extra_disks: t.Optional(
      t.Array(
        DataDisk,
        { maxItems: 32, description: "Data disks; guests see serials kdevops0..N. At most vm_defaults.max_extra_disks (default 8, never more than 32)" },
      ),
    ),
    network: t.Optional(
      t.Object(
        {
          mode: t.Optional(t.Union([t.Literal("bridge"), t.Literal("user"), t.Literal("none")])),
          bridge: t.Optional(t.String({ maxLength: 64, pattern: BRIDGE_PATTERN, description: "libvirt network or host bridge (bridge mode)" })),
          restrict: t.Optional(t.Boolean({ description: "user mode: the guest reaches nothing but its forwarded ports" })),
        },
        { additionalProperties: false },
      ),
    ),
    ssh_user: t.Optional(t.String({ maxLength: 32, pattern: LOGIN_USER_RE.source, description: "Unix user name cloud-init gives the keys to" })),
    ssh_public_key: t.Optional(SshKey),
    ssh_public_keys: t.Optional(t.Array(SshKey, { maxItems: 64 })),
    kernel: t.Optional(Kernel),
    initrd: t.Optional(Initrd),
    cmdline: t.Optional(Cmdline),
    start: t.Optional(t.Boolean({ default: true })),
    project: t.Optional(
      t.String({ maxLength: 64, pattern: PROJECT_RE.source, description: "Project the VM belongs to (admin tokens; a user token's project is always used)" }),
    ),
    host: t.Optional(t.String({ maxLength: 63, pattern: HOST_NAME_PATTERN, description: "Pin the VM to this host (a name from GET /hosts); default: placement chooses" })),
    placement_group: t.Optional(
      t.String({ maxLength: 63, pattern: PLACEMENT_GROUP_PATTERN, description: "VMs of one group go to different hosts while there are hosts left" }),
    ),
  },
  { additionalProperties: false },
);

const HostStateSchema = t.Union(
  [t.Literal(HOST_STATES[0]), t.Literal(HOST_STATES[1]), t.Literal(HOST_STATES[2])],
  { description: "online, offline (not answering: its VMs are shown from the last listing with state unknown) or cordoned (takes no new VMs)" },
);

export const Vm = t.Object({
  id: t.String({ examples: ["vm-abc12345"] }),
  name: t.String(),
  uuid: t.String(),
  state: t.String({ description: "running, paused, stopping, stopped, crashed, suspended or unknown" }),
  vcpus: t.Integer(),
  max_vcpus: t.Integer({ description: "vCPUs the VM can get without a restart (hot-plug)" }),
  memory_mb: t.Integer(),
  max_memory_mb: t.Integer({ description: "Memory the VM can get without a restart (balloon)" }),
  disks: t.Array(
    t.Object({ type: t.String(), size_gb: t.Number(), driver: t.String(), format: t.String(), serial: t.Nullable(t.String()) }),
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
    mode: t.String(),
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
  crash_reason: t.Nullable(t.String({ description: "Why the VM last crashed (QEMU died, guest panic) until it is started or deleted; null if it did not" })),
});

export const VmList = t.Object({ vms: t.Array(Vm) });

export const UpdateVmBody = t.Object(
  {
    vcpus: t.Optional(t.Integer({ minimum: 1, maximum: 512 })),
    max_vcpus: t.Optional(t.Integer({ minimum: 1, maximum: 512, description: "Takes effect at the next stop and start" })),
    memory_mb: t.Optional(t.Integer({ minimum: 64, maximum: 4194304 })),
    memory_gb: t.Optional(t.Integer({ minimum: 1, maximum: 4096, description: "Alternative to memory_mb" })),
    max_memory_mb: t.Optional(t.Integer({ minimum: 64, maximum: 4194304, description: "Takes effect at the next stop and start" })),
    root_disk_gb: t.Optional(t.Integer({ minimum: 1, maximum: 65536, description: "Grow only" })),
    extra_disks: t.Optional(
      t.Object(
        {
          add: t.Optional(t.Array(DataDisk, { maxItems: 32, description: "New data disks after the last one; serials continue from the highest kdevopsN" })),
          remove: t.Optional(t.Array(t.String({ maxLength: 64, pattern: "^kdevops[0-9]{1,4}$" }), { maxItems: 32, description: "Serials of data disks to detach and delete" })),
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
