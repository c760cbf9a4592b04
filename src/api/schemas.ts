/** Request and response schemas of the REST API (also the source of the OpenAPI document). */
import { t } from "elysia";

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

export const CreateVmBody = t.Object(
  {
    name: t.String({ description: "DNS label: lower-case letters, digits and '-', 1-63 characters", examples: ["web-01"] }),
    image: t.Optional(t.String({ description: "Base image id, file name or alias (see GET /images)", examples: ["debian13"] })),
    base_image: t.Optional(t.String({ description: "kdevops name for `image`" })),
    vcpus: t.Optional(t.Integer({ minimum: 1, maximum: 512 })),
    memory_mb: t.Optional(t.Integer({ minimum: 64 })),
    memory_gb: t.Optional(t.Integer({ minimum: 1, description: "Alternative to memory_mb" })),
    root_disk_gb: t.Optional(t.Integer({ minimum: 1, maximum: 65536 })),
    extra_disks: t.Optional(
      t.Array(
        t.Object({ size_gb: t.Integer({ minimum: 1, maximum: 65536 }), type: t.Optional(DiskType) }, { additionalProperties: false }),
        { description: "Data disks; guests see serials kdevops0..N" },
      ),
    ),
    network: t.Optional(
      t.Object(
        {
          mode: t.Optional(t.Union([t.Literal("bridge"), t.Literal("user"), t.Literal("none")])),
          bridge: t.Optional(t.String({ description: "libvirt network or host bridge (bridge mode)" })),
          restrict: t.Optional(t.Boolean({ description: "user mode: the guest reaches nothing but its forwarded ports" })),
        },
        { additionalProperties: false },
      ),
    ),
    ssh_user: t.Optional(t.String()),
    ssh_public_key: t.Optional(t.String({ description: "One OpenSSH public key line" })),
    ssh_public_keys: t.Optional(t.Array(t.String())),
    kernel: t.Optional(t.String({ description: "Host path of a kernel for direct boot (inside vm_defaults.kernel_dir)" })),
    initrd: t.Optional(t.String()),
    cmdline: t.Optional(t.String()),
    start: t.Optional(t.Boolean({ default: true })),
    project: t.Optional(t.String({ description: "Project the VM belongs to (admin tokens; a user token's project is always used)" })),
  },
  { additionalProperties: false },
);

export const Vm = t.Object({
  id: t.String({ examples: ["vm-abc12345"] }),
  name: t.String(),
  uuid: t.String(),
  state: t.String({ description: "running, paused, stopping, stopped, crashed, suspended or unknown" }),
  vcpus: t.Integer(),
  memory_mb: t.Integer(),
  disks: t.Array(
    t.Object({ type: t.String(), size_gb: t.Number(), driver: t.String(), format: t.String(), serial: t.Nullable(t.String()) }),
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
});

export const VmList = t.Object({ vms: t.Array(Vm) });

export const Image = t.Object({
  id: t.String(),
  name: t.String(),
  file_name: t.String(),
  alias: t.Nullable(t.String()),
  format: t.String(),
  virtual_size_gb: t.Number(),
  disk_size_mb: t.Number(),
});

export const DeleteResult = t.Object({ id: t.String(), name: t.String(), status: t.Literal("destroyed") });

export const QmpBody = t.Object(
  { execute: t.String({ description: "A read-only QMP command (query-*)" }), arguments: t.Optional(t.Record(t.String(), t.Unknown())) },
  { additionalProperties: false },
);
