/**
 * The REST API's value sets and name rules, defined once: the server validates with them,
 * the OpenAPI document lists them, and the CLI and the Terraform provider check input
 * against the same lists. Plain constants: importing this loads nothing else.
 */

/** Whether `v` is one of `list`'s values (a type guard for the value sets below). */
export function isOneOf<T extends string>(list: readonly T[], v: unknown): v is T {
  return typeof v === "string" && (list as readonly string[]).includes(v);
}

/** Data disk buses a request may ask for (`extra_disks[].type`, `vm_defaults.disk_driver`). */
export const DISK_BUSES = ["virtio", "nvme", "scsi", "ide"] as const;
export type DiskBus = (typeof DISK_BUSES)[number];
export const isDiskBus = (v: string): v is DiskBus => isOneOf(DISK_BUSES, v);

/**
 * The bus a disk is reported with (`disks[].driver`): what the guest sees. q35 has no IDE,
 * so `ide` disks are attached (and reported) as `sata`; so is the cloud-init seed CD-ROM.
 */
export const REPORTED_DISK_BUSES = ["virtio", "nvme", "scsi", "sata"] as const;
export type ReportedDiskBus = (typeof REPORTED_DISK_BUSES)[number];

/** The bus a requested disk type is attached on (and reported with): `ide` is SATA (AHCI) on q35. */
export function reportedBus(bus: DiskBus): ReportedDiskBus {
  return bus === "ide" ? "sata" : bus;
}

/** Buses whose disks a running VM can gain or lose (PCIe hot-plug, SCSI LUNs); the others wait for a restart. */
export const HOTPLUG_BUSES: readonly ReportedDiskBus[] = ["virtio", "scsi"];
export const isHotPluggable = (bus: string): boolean => isOneOf(HOTPLUG_BUSES, bus);

export const DISK_ROLES = ["root", "data", "seed"] as const;
export type DiskRole = (typeof DISK_ROLES)[number];
/** The roles of the disks a VM is reported with (`disks[].type`): the cloud-init seed is not listed. */
export const REPORTED_DISK_ROLES = ["root", "data"] as const satisfies readonly DiskRole[];
export type ReportedDiskRole = (typeof REPORTED_DISK_ROLES)[number];

/** How a host directory is shared with a guest (`shares[].transport`): virtiofs, or 9p where virtiofs cannot run. */
export const SHARE_TRANSPORTS = ["virtiofs", "9p"] as const;
export type ShareTransport = (typeof SHARE_TRANSPORTS)[number];
/**
 * A share's tag (the guest mounts it at /mnt/<tag>): a letter or digit, then letters, digits,
 * '_' or '-'. virtiofs tags are at most 36 bytes (the virtio-fs config space), 9p mount tags
 * at most 31 (QEMU's limit).
 */
export const SHARE_TAG_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_-]{0,35}$";
export const SHARE_TAG_MAX: Record<ShareTransport, number> = { virtiofs: 36, "9p": 31 };
/** Most shares one VM may have. */
export const MAX_SHARES = 16;

/** Most SSH public keys one VM is given (ssh_public_key and ssh_public_keys together); its cloud-init seed carries no more. */
export const MAX_SSH_KEYS = 64;
/** Longest SSH public key line, bytes. */
export const MAX_KEY_LINE_BYTES = 16 * 1024;

/**
 * Bounds of a VM's sizes, the same on create and PATCH, in the OpenAPI document, the CLI and
 * the Terraform provider (which refuses values outside them at plan time).
 */
export const VM_LIMITS = {
  vcpus: { min: 1, max: 512 },
  /** 64 MiB to 4 TiB. */
  memoryMb: { min: 64, max: 4194304 },
  memoryGb: { min: 1, max: 4096 },
  /** Root and data disks, GiB. */
  diskGb: { min: 1, max: 65536 },
  /** A kernel command line, characters (CMDLINE_PATTERN: printable ones). */
  cmdlineMax: 4096,
  /** Extra (data) disks per VM: vm_defaults.max_extra_disks is at most this. */
  extraDisksMax: 32,
} as const;

/** A kernel command line: no control characters. */
export const CMDLINE_PATTERN = "^[^\\x00-\\x1f\\x7f]*$";
const CMDLINE_RE = new RegExp(CMDLINE_PATTERN);

/** A kernel command line's problem, or null: at most VM_LIMITS.cmdlineMax characters, none of them control characters. */
export function cmdlineProblem(cmdline: unknown): string | null {
  if (typeof cmdline !== "string" || cmdline.length > VM_LIMITS.cmdlineMax || !CMDLINE_RE.test(cmdline)) {
    return `must be at most ${VM_LIMITS.cmdlineMax} printable characters`;
  }
  return null;
}

/** Longest path on a VM's host (a kernel, an initrd, a shared directory), characters. */
export const HOST_PATH_MAX = 4096;

/** The shape problem of a path on a VM's host (a kernel, an initrd, a shared directory), or null: absolute, no NUL, at most HOST_PATH_MAX characters. */
export function hostPathProblem(path: unknown): string | null {
  return typeof path === "string" && path.startsWith("/") && !path.includes("\0") && path.length <= HOST_PATH_MAX ? null : "must be an absolute path";
}

/** A shared directory's path problem, or null: a host path without '.' or '..' components. */
export function sharePathProblem(path: unknown): string | null {
  const problem = hostPathProblem(path);
  if (problem) return problem;
  return (path as string).split("/").some((p) => p === "." || p === "..") ? "must not contain '.' or '..' components" : null;
}

export const NETWORK_MODES = ["bridge", "user", "none"] as const;
export type NetworkMode = (typeof NETWORK_MODES)[number];
export const isNetworkMode = (v: unknown): v is NetworkMode => isOneOf(NETWORK_MODES, v);

export const VM_STATES = ["running", "paused", "stopping", "stopped", "crashed", "suspended", "creating", "unknown"] as const;
export type VmState = (typeof VM_STATES)[number];

/**
 * What rcloud does when a guest panics (its pvpanic device fires): `dump` saves the guest's
 * memory as an ELF core next to its disks and leaves it halted, `restart` resets it,
 * `stop` powers it off, `preserve` leaves it halted. All but `restart` leave the VM `crashed`.
 */
export const ON_PANIC_ACTIONS = ["dump", "restart", "stop", "preserve"] as const;
export type OnPanic = (typeof ON_PANIC_ACTIONS)[number];
export const isOnPanic = (v: unknown): v is OnPanic => isOneOf(ON_PANIC_ACTIONS, v);

/** Guest memory dump names (GET /vms/{id}/dumps/{name}): rcloud's own, never a path. */
export const DUMP_NAME_PATTERN = "^dump-[0-9]{8}T[0-9]{6}Z\\.elf$";

/** States in which a VM counts as running: for Terraform's `running`, consoles, QMP, snapshots with memory, hot-plug, the web page's actions. */
export const ACTIVE_STATES: readonly VmState[] = ["running", "paused"];
export const isActiveState = (state: string): boolean => isOneOf(ACTIVE_STATES, state);

/** VM names are DNS labels. */
export const VM_NAME_PATTERN = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$";
/** VM ids: `vm-` and 8 characters; a name of this shape is refused so references stay unambiguous. */
export const VM_ID_PATTERN = "^vm-[a-z0-9]{8}$";
/** A libvirt network or host bridge name (bridge mode). */
export const BRIDGE_PATTERN = "^[A-Za-z0-9_.:-]{1,64}$";
/** QMP commands the read-only passthrough accepts. */
export const QMP_QUERY_PATTERN = "^query-[a-z0-9-]{1,60}$";

/**
 * Snapshot names: a letter or digit, then letters, digits, '.', '_' or '-', 1-63 characters
 * (they go into qcow2 snapshot tables and libvirt XML, never into paths or shells), and not
 * digits only: QEMU looks a snapshot up by its numeric ID first and by name only then, so a
 * snapshot named "1" would be another snapshot's (the one with ID 1) on revert and delete.
 */
export const SNAPSHOT_NAME_PATTERN = "^([A-Za-z][A-Za-z0-9._-]*|[0-9]+[A-Za-z._-][A-Za-z0-9._-]*)$";
/** The longest snapshot name (the pattern has no lookahead, which not every JSON Schema validator has, so no length either). */
export const SNAPSHOT_NAME_MAX = 63;
const SNAPSHOT_NAME_RE = new RegExp(SNAPSHOT_NAME_PATTERN);
/** SNAPSHOT_NAME_PATTERN and SNAPSHOT_NAME_MAX together. */
export function isSnapshotName(v: string): boolean {
  return v.length <= SNAPSHOT_NAME_MAX && SNAPSHOT_NAME_RE.test(v);
}
/** What SNAPSHOT_NAME_PATTERN asks for, in words (the API's and the CLI's messages). */
export const SNAPSHOT_NAME_RULE = "1-63 characters: a letter or digit, then letters, digits, '.', '_' or '-'; not digits only (QEMU would take an all-digit name for another snapshot's numeric ID)";

/** Host names in `hosts:` and the API: DNS labels, like VM names. */
export const HOST_NAME_PATTERN = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$";
/** Placement group names (VMs of one group go to different hosts while hosts are left). */
export const PLACEMENT_GROUP_PATTERN = "^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$";
/** Project names (a VM's project, tokens, quotas): 1-64 lower-case letters, digits, '-' or '_', starting and ending with a letter or digit. */
export const PROJECT_PATTERN = "^[a-z0-9]([a-z0-9_-]{0,62}[a-z0-9])?$";

/** A host's state: answering, not answering, or answering but taking no new VMs. */
export const HOST_STATES = ["online", "offline", "cordoned"] as const;
export type HostState = (typeof HOST_STATES)[number];

/** How rcloud picks a host when a create does not name one. */
/** `vm_defaults.on_crash`: what rcloud does when a VM's QEMU process dies under it. */
export const ON_CRASH = ["restart", "stop", "preserve"] as const;
export type OnCrash = (typeof ON_CRASH)[number];

export const PLACEMENT_POLICIES = ["spread", "pack"] as const;
export type PlacementPolicy = (typeof PLACEMENT_POLICIES)[number];

/**
 * Kinds of event on GET /events: what happened to a VM (hypervisor events), what rcloud did
 * (operations, with the request id), hosts, and notes about the stream itself (gap, cut-off).
 */
export const EVENT_TYPES = ["lifecycle", "operation", "host", "stream"] as const;
export type EventType = (typeof EVENT_TYPES)[number];

/** `action` of lifecycle events: as the hypervisor reports them. */
export const LIFECYCLE_ACTIONS = ["vm-started", "vm-stopped", "vm-shutdown", "vm-crashed", "vm-paused", "vm-resumed", "vm-rebooted", "vm-dumped"] as const;
export type LifecycleAction = (typeof LIFECYCLE_ACTIONS)[number];

/** `action` of operation events: rcloud's own changes, and refusals of them. */
export const OPERATION_ACTIONS = ["vm-created", "vm-deleted", "snapshot-created", "snapshot-reverted", "snapshot-deleted", "operation-failed"] as const;
export type OperationAction = (typeof OPERATION_ACTIONS)[number];

/** `action` of stream events: the first line of a stream (subscribed, or gap when the ring no longer holds what was asked for), and the last when the consumer fell behind (cut-off). */
export const STREAM_ACTIONS = ["subscribed", "gap", "cut-off"] as const;
export type StreamAction = (typeof STREAM_ACTIONS)[number];

/** Lifetime of a console ticket (POST /vms/{id}/console), seconds. */
export const CONSOLE_TICKET_TTL_S = 30;
