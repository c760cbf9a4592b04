/**
 * Resource `rcloud_vm`: schema, validation, plan, apply, read, import and state upgrade.
 * Sizes, data disks and direct boot change in place (PATCH, vm-update.ts); the name, image,
 * network, SSH settings and a root disk that would shrink force a new VM.
 * Plan rules we must keep (Terraform checks them): configured values are planned as
 * configured (or the prior value when semantically equal), Optional+Computed values are
 * filled only when unset, values not known in advance are unknown, and apply returns
 * exactly the known planned values.
 */
import {
  cmdlineProblem,
  DISK_BUSES,
  type DiskBus,
  HOST_NAME_PATTERN,
  hostPathProblem,
  isActiveState,
  isDiskBus,
  NETWORK_MODES,
  type NetworkMode,
  isOnPanic,
  ON_PANIC_ACTIONS,
  PLACEMENT_GROUP_PATTERN,
  SHARE_TAG_MAX,
  SHARE_TAG_PATTERN,
  SHARE_TRANSPORTS,
  sharePathProblem,
  type ShareTransport,
  VM_ID_PATTERN,
  VM_LIMITS,
  VM_NAME_PATTERN,
} from "../api-types/values.ts";
import type { ApiVm, CreateVmRequest, UpdateVmRequest } from "../api-types/json.ts";
import type { RcloudClient } from "./client.ts";
import { ApiError } from "./client.ts";
import { type CtyObject, type CtyValue, isUnknown, num, obj, str, UNKNOWN } from "./cty.ts";
import { type Diagnostic, diagFromError, errorDiag, type PathStep } from "./diagnostics.ts";
import { type Attr, type BlockSchema, impliedType } from "./schema.ts";
import { abortableSleep as sleep } from "../util/abortable-sleep.ts";
import { LOGIN_USER_RE } from "../util/login-user.ts";
import { busOf, planDataDisks, requestedBus, planMaximum, rootShrink, updateBody, updateWarnings, UPDATABLE } from "./vm-update.ts";

export interface Ctx {
  /** null when the provider is not configured or its configuration is unknown at plan. */
  client: RcloudClient | null;
  timeoutMs: number;
  signal: AbortSignal;
  /** Image reference → image id (null: no such image), per provider process. */
  imageIds: Map<string, string | null>;
  log(level: "DEBUG" | "INFO" | "WARN" | "ERROR", msg: string): void;
}

export interface VmPrivate {
  /** Set by import: ssh_public_key cannot be read back, so adopt the configured one in place. */
  imported?: boolean;
}

const NAME_RE = new RegExp(VM_NAME_PATTERN);
const ID_RE = new RegExp(VM_ID_PATTERN);
const HOST_RE = new RegExp(HOST_NAME_PATTERN);
const GROUP_RE = new RegExp(PLACEMENT_GROUP_PATTERN);
const TAG_RE = new RegExp(SHARE_TAG_PATTERN);

const replaceNote = " Changing it creates a new VM.";
/** Direct boot settings: a change restarts a running VM on them. */
const BOOT_ATTRS = ["kernel", "initrd", "cmdline"] as const;
const inPlace = " Changed in place: live where the VM can take it, else at its next stop and start (see `restart_required`, `allow_restart`).";

export const diskAttrs: Attr[] = [
  { name: "size_gb", type: "number", required: true, description: "Size of the data disk in GiB." },
  { name: "type", type: "string", optional: true, computed: true, description: "Disk bus: `virtio`, `nvme`, `scsi` or `ide`. Default: the server's `vm_defaults.disk_driver` (usually `virtio`)." },
];

export const shareAttrs: Attr[] = [
  { name: "host_path", type: "string", required: true, description: "Directory on the VM's host to share (inside the server's `vm_defaults.share_dirs`)." },
  { name: "tag", type: "string", required: true, description: "Mount tag, unique per VM: the guest mounts the share at `/mnt/<tag>` (cloud-init)." },
  { name: "readonly", type: "bool", optional: true, computed: true, description: "Share read-only. Default `false`." },
  { name: "transport", type: "string", optional: true, computed: true, description: "`virtiofs` (default) or `9p`." },
];

export const networkAttrs: Attr[] = [
  { name: "bridge", type: "string", optional: true, computed: true, description: "libvirt network or host bridge (bridge mode). Default: the server's `vm_defaults.network_bridge`." },
  { name: "mode", type: "string", optional: true, computed: true, description: "`bridge`, `user` (NAT with an SSH port forward on the host) or `none`. Default: `bridge` if `bridge` is set, else the server's `vm_defaults.network_mode`." },
];

/** Attributes the resource and the `rcloud_vm` data source share (read from the API). */
export const computedOut: Attr[] = [
  { name: "state", type: "string", computed: true, description: "Current state: `running`, `paused`, `stopped`, `crashed`, …" },
  { name: "ip_address", type: "string", computed: true, description: "Where to reach the VM: its DHCP address in bridge mode, `127.0.0.1` in user mode (with `ssh_port`). Null while stopped." },
  { name: "mac_address", type: "string", computed: true, description: "MAC address of the VM's network interface." },
  { name: "ssh_port", type: "number", computed: true, description: "Host port forwarded to the guest's SSH (user-mode networking only)." },
  { name: "gdb_port", type: "number", computed: true, description: "Host port of QEMU's gdbstub when `gdb` is on (`target remote <host>:<gdb_port>`; 127.0.0.1 of a local host), else null." },
  { name: "created_at", type: "string", computed: true, description: "Creation time (RFC 3339)." },
];

export const vmSchema: BlockSchema = {
  version: 0,
  description: "A virtual machine on an rcloud server. Sizes, data disks and direct boot change in place; the name, image, network and SSH settings (and a shrinking root disk) replace the VM.",
  attributes: [
    { name: "id", type: "string", computed: true, description: "VM id (`vm-xxxxxxxx`)." },
    { name: "name", type: "string", required: true, description: "VM name: a DNS label (lower-case letters, digits, `-`; 1-63 characters)." + replaceNote },
    { name: "vcpus", type: "number", optional: true, computed: true, description: "Number of virtual CPUs. Default: the server's `vm_defaults.vcpus`." + inPlace },
    { name: "memory_gb", type: "number", optional: true, computed: true, description: "Memory in GiB; fractions are allowed if they are a whole number of MiB (e.g. `0.5`). Default: the server's `vm_defaults.memory_mb`." + inPlace },
    { name: "image", type: "string", required: true, description: "Base image: id, file name or alias (e.g. `debian13`); see the `rcloud_images` data source." + replaceNote },
    { name: "root_disk_gb", type: "number", optional: true, computed: true, description: "Root disk size in GiB (at least the image's size). Default: the server's `vm_defaults.root_disk_gb`. Grows in place (online); a smaller value creates a new VM." },
    { name: "extra_disks", nested: { nesting: "LIST", attributes: diskAttrs }, optional: true, computed: true, description: "Data disks, in order; guests see serials `kdevops0`..`N`. Disks appended or removed change in place (virtio and SCSI disks are plugged in and out of a running VM; NVMe and IDE ones need a stop and start); a disk changed in the middle of the list is replaced with the ones after it." },
    { name: "network", nested: { nesting: "SINGLE", attributes: networkAttrs }, optional: true, computed: true, description: "Networking." + replaceNote },
    { name: "ssh_public_key", type: "string", optional: true, description: "An OpenSSH public key line installed for `ssh_user` by cloud-init." + replaceNote },
    { name: "ssh_user", type: "string", optional: true, computed: true, description: "Login user created by cloud-init. Default: the server's `vm_defaults.ssh_user` (`kdevops`)." + replaceNote },
    { name: "kernel", type: "string", optional: true, description: "Host path of a kernel for direct boot (inside the server's `vm_defaults.kernel_dir`). Changed in place: a running VM is stopped gracefully, switched and started (whatever `allow_restart` says)." },
    { name: "initrd", type: "string", optional: true, description: "Host path of an initrd for direct boot (needs `kernel`). Changed in place: a running VM is stopped gracefully, switched and started (whatever `allow_restart` says)." },
    { name: "cmdline", type: "string", optional: true, description: "Kernel command line for direct boot (needs `kernel`). Changed in place: a running VM is stopped gracefully, switched and started (whatever `allow_restart` says)." },
    { name: "host", type: "string", optional: true, computed: true, description: "The host that runs the VM (a name from the `rcloud_hosts` data source). Default: the server places the VM." + replaceNote },
    { name: "placement_group", type: "string", optional: true, description: "VMs of one placement group go to different hosts while there are hosts left." + replaceNote },
    { name: "shares", nested: { nesting: "LIST", attributes: shareAttrs }, optional: true, computed: true, description: "Host directories shared with the guest, each mounted at `/mnt/<tag>` by cloud-init." + replaceNote },
    { name: "running", type: "bool", optional: true, computed: true, description: "Whether the VM should run (default `true`). Changing it starts or stops the VM in place." },
    { name: "max_vcpus", type: "number", optional: true, computed: true, description: "vCPUs the VM can be given later without a restart (hot-plug). Default: `vcpus`, raised with it." },
    { name: "max_memory_gb", type: "number", optional: true, computed: true, description: "Memory in GiB the VM can be given later without a restart (balloon). Default: `memory_gb`, raised with it." },
    { name: "allow_restart", type: "bool", optional: true, description: "Whether applying a change that needs one may stop the VM gracefully and start it again (vCPUs or memory beyond the maxima, NVMe/IDE disks, direct boot). Default `false`: such changes wait for the VM's next stop and start (`restart_required`)." },
    { name: "gdb", type: "bool", optional: true, computed: true, description: "Expose QEMU's gdbstub on a free host port (`gdb_port`). Default `false`." + replaceNote },
    { name: "on_panic", type: "string", optional: true, computed: true, description: "What a guest panic does: `dump` (guest memory saved as an ELF core, listed by `rcloud vm dumps`; VM kept halted), `restart`, `stop` or `preserve` (kept halted). Default: the server's `vm_defaults.on_panic`." + replaceNote },
    { name: "restart_required", type: "bool", computed: true, description: "Changes applied to the VM's definition wait for its next stop and start." },
    ...computedOut,
  ],
};

export const VM_TYPE = impliedType(vmSchema);
const ATTR_NAMES = vmSchema.attributes.map((a) => a.name);
const REPLACE_ATTRS = ["name", "image", "network", "ssh_public_key", "ssh_user", "host", "placement_group", "gdb", "on_panic", "shares"];

// ---- small value helpers ----

const isKnown = (v: CtyValue | undefined): boolean => v !== null && v !== undefined && !isUnknown(v);
/** The config value, else the prior value on update, else unknown (Optional+Computed). */
const orPrior = (c: CtyValue | undefined, prior: CtyObject | null, k: string): CtyValue => (c !== null && c !== undefined ? c : prior ? (prior[k] ?? null) : UNKNOWN);

/** Disk types with the same bus (busOf) are the same setting. */
const sameBus = (a: CtyValue | undefined, b: CtyValue | undefined): boolean => typeof a === "string" && typeof b === "string" && busOf(a) === busOf(b);

// ---- validation (config may hold unknowns: check only known values) ----

export function validateVm(c: CtyObject): Diagnostic[] {
  const d: Diagnostic[] = [];
  const bad = (path: PathStep[], msg: string) => d.push(errorDiag("Invalid attribute value", msg, path));
  const name = str(c.name);
  if (name !== undefined && (!NAME_RE.test(name) || ID_RE.test(name))) {
    bad(["name"], `name "${name}" must be a DNS label: 1-63 lower-case letters, digits and '-', not starting or ending with '-', and not shaped like a VM id (vm-xxxxxxxx).`);
  }
  const intAttr = (k: string, min: number, max: number) => {
    const v = num(c[k]);
    if (v !== undefined && (!Number.isInteger(v) || v < min || v > max)) bad([k], `${k} must be a whole number between ${min} and ${max}, got ${v}.`);
  };
  intAttr("vcpus", VM_LIMITS.vcpus.min, VM_LIMITS.vcpus.max);
  intAttr("max_vcpus", VM_LIMITS.vcpus.min, VM_LIMITS.vcpus.max);
  intAttr("root_disk_gb", VM_LIMITS.diskGb.min, VM_LIMITS.diskGb.max);
  for (const k of ["memory_gb", "max_memory_gb"]) {
    const mem = num(c[k]);
    const { min, max } = VM_LIMITS.memoryMb;
    if (mem !== undefined && (!Number.isInteger(mem * 1024) || mem * 1024 < min || mem * 1024 > max)) {
      bad([k], `${k} must be a whole number of MiB (${k} × 1024) from ${min / 1024} (${min} MiB) to ${max / 1024} (${max / 1024 / 1024} TiB), got ${mem}.`);
    }
  }
  const [vcpus, maxVcpus, memGb, maxMemGb] = [num(c.vcpus), num(c.max_vcpus), num(c.memory_gb), num(c.max_memory_gb)];
  if (vcpus !== undefined && maxVcpus !== undefined && maxVcpus < vcpus) bad(["max_vcpus"], `max_vcpus (${maxVcpus}) must be at least vcpus (${vcpus}).`);
  if (memGb !== undefined && maxMemGb !== undefined && maxMemGb < memGb) bad(["max_memory_gb"], `max_memory_gb (${maxMemGb}) must be at least memory_gb (${memGb}).`);
  if (Array.isArray(c.extra_disks)) {
    c.extra_disks.forEach((e, i) => {
      const disk = obj(e);
      if (!disk) return;
      const size = num(disk.size_gb);
      if (size !== undefined && (!Number.isInteger(size) || size < VM_LIMITS.diskGb.min || size > VM_LIMITS.diskGb.max)) {
        bad(["extra_disks", i, "size_gb"], `size_gb must be a whole number of GiB between ${VM_LIMITS.diskGb.min} and ${VM_LIMITS.diskGb.max}, got ${size}.`);
      }
      const t = str(disk.type);
      if (t !== undefined && !isDiskBus(t)) bad(["extra_disks", i, "type"], `type must be one of ${DISK_BUSES.join(", ")}, got "${t}".`);
    });
  }
  const net = obj(c.network);
  if (net) {
    const mode = str(net.mode);
    if (mode !== undefined && !(NETWORK_MODES as readonly string[]).includes(mode)) bad(["network", "mode"], `mode must be one of ${NETWORK_MODES.join(", ")}, got "${mode}".`);
    if (mode !== undefined && mode !== "bridge" && isKnown(net.bridge)) bad(["network", "bridge"], `bridge only applies to mode = "bridge" (mode is "${mode}"); remove bridge or set mode = "bridge".`);
  }
  const user = str(c.ssh_user);
  if (user !== undefined && !LOGIN_USER_RE.test(user)) bad(["ssh_user"], `ssh_user "${user}" must be a Unix user name: a lower-case letter or _, then letters, digits, _ or -, up to 32 characters.`);
  for (const k of ["initrd", "cmdline"]) {
    if (isKnown(c[k]) && c.kernel === null) bad([k], `${k} needs kernel (direct kernel boot); set kernel or remove ${k}.`);
  }
  for (const k of ["kernel", "initrd"] as const) {
    const path = str(c[k]);
    const problem = path === undefined ? null : hostPathProblem(path);
    if (problem) bad([k], `${k} ${problem} on the VM's host (inside its vm_defaults.kernel_dir), got "${path}".`);
  }
  const cmdline = str(c.cmdline);
  const cmdlineRefusal = cmdline === undefined ? null : cmdlineProblem(cmdline);
  if (cmdlineRefusal) bad(["cmdline"], `cmdline ${cmdlineRefusal}.`);
  const host = str(c.host);
  if (host !== undefined && !HOST_RE.test(host)) bad(["host"], `host "${host}" must be a host name: 1-63 lower-case letters, digits and '-', not starting or ending with '-' (see the rcloud_hosts data source).`);
  if (Array.isArray(c.shares)) {
    const tags = new Set<string>();
    c.shares.forEach((e, i) => {
      const sh = obj(e);
      if (!sh) return;
      const path = str(sh.host_path);
      const pathRefusal = path === undefined ? null : sharePathProblem(path);
      if (pathRefusal) bad(["shares", i, "host_path"], `host_path ${pathRefusal} (a directory on the VM's host), got "${path}".`);
      const transport = str(sh.transport);
      if (transport !== undefined && !(SHARE_TRANSPORTS as readonly string[]).includes(transport)) bad(["shares", i, "transport"], `transport must be one of ${SHARE_TRANSPORTS.join(", ")}, got "${transport}".`);
      const tag = str(sh.tag);
      if (tag === undefined) return;
      const max = SHARE_TAG_MAX[(transport ?? "virtiofs") as ShareTransport] ?? 36;
      if (!TAG_RE.test(tag) || tag.length > max) bad(["shares", i, "tag"], `tag "${tag}" must be a letter or digit, then letters, digits, '_' or '-', at most ${max} characters.`);
      else if (tags.has(tag)) bad(["shares", i, "tag"], `tag "${tag}" is used by another share; tags must be unique.`);
      tags.add(tag);
    });
  }
  const group = str(c.placement_group);
  if (group !== undefined && !GROUP_RE.test(group)) {
    bad(["placement_group"], `placement_group "${group}" must be 1-63 lower-case letters, digits, '-' and '_', starting and ending with a letter or digit.`);
  }
  const onPanic = str(c.on_panic);
  if (onPanic !== undefined && !isOnPanic(onPanic)) bad(["on_panic"], `on_panic must be one of ${ON_PANIC_ACTIONS.join(", ")}, got "${onPanic}".`);
  return d;
}

// ---- images: keep the user's spelling (alias) when it names the image the API reports ----

export async function imageId(ctx: Ctx, ref: string): Promise<string | null> {
  if (!ctx.client) throw new Error("provider not configured");
  if (ctx.imageIds.has(ref)) return ctx.imageIds.get(ref) ?? null;
  const img = await ctx.client.getImage(ref);
  ctx.imageIds.set(ref, img?.id ?? null);
  return img?.id ?? null;
}

async function sameImage(ctx: Ctx, a: string, b: string): Promise<boolean> {
  if (a === b) return true;
  if (!ctx.client) return false;
  const [ia, ib] = await Promise.all([imageId(ctx, a), imageId(ctx, b)]);
  return ia !== null && ia === ib;
}

async function missingImageDiag(ctx: Ctx, ref: string): Promise<Diagnostic> {
  let available = "";
  try {
    const list = (await ctx.client?.listImages()) ?? [];
    available = list.map((i) => (i.alias ? `${i.alias} (${i.id})` : i.id)).join(", ");
  } catch {
    available = "";
  }
  return errorDiag(
    "Image not found",
    `The rcloud server at ${ctx.client?.endpoint} has no base image "${ref}". ` +
      (available ? `Available images: ${available}. ` : "It has no base images at all. ") +
      `Use an id, file name or alias from the rcloud_images data source (GET /api/v1/images).`,
    ["image"],
  );
}

// ---- API object → state ----

/** Maps the API's VM to every attribute; `prior` supplies what the API cannot tell us. */
export async function vmToState(ctx: Ctx, vm: ApiVm, prior: CtyObject | null): Promise<CtyObject> {
  const root = vm.disks.find((d) => d.type === "root");
  const priorImage = str(prior?.image);
  // A VM's image never changes: when the images cannot be compared now, keep the prior spelling.
  const image = priorImage !== undefined && (await sameImage(ctx, priorImage, vm.image).catch(() => true)) ? priorImage : vm.image;
  // The server stores the real path of boot files; keep the configured spelling.
  const keep = (k: "kernel" | "initrd", api: string | null): string | null => (api === null ? null : (str(prior?.[k]) ?? api));
  const priorDisks = (Array.isArray(prior?.extra_disks) ? prior.extra_disks : []).map(obj);
  const priorShares = (Array.isArray(prior?.shares) ? prior.shares : []).map(obj);
  // What the VM is set to have: changes waiting for its next start count as made.
  const p = vm.pending ?? {};
  const bootPending = p.kernel !== undefined || p.initrd !== undefined || p.cmdline !== undefined;
  const boot = bootPending ? { kernel: p.kernel ?? null, initrd: p.initrd ?? null, cmdline: p.cmdline ?? null } : { kernel: vm.kernel, initrd: vm.initrd, cmdline: vm.cmdline };
  return {
    id: vm.id,
    name: vm.name,
    vcpus: p.vcpus ?? vm.vcpus,
    max_vcpus: p.max_vcpus ?? vm.max_vcpus,
    memory_gb: (p.memory_mb ?? vm.memory_mb) / 1024,
    max_memory_gb: (p.max_memory_mb ?? vm.max_memory_mb) / 1024,
    image,
    root_disk_gb: root?.size_gb ?? null,
    extra_disks: vm.disks
      .filter((d) => d.type === "data")
      .map((d, i) => {
        const before = priorDisks[i];
        return { size_gb: d.size_gb, type: before && sameBus(before.type, d.driver) ? (before.type ?? d.driver) : requestedBus(d.driver) };
      }),
    network: { mode: vm.network.mode, bridge: vm.network.bridge },
    ssh_public_key: str(prior?.ssh_public_key) ?? null,
    ssh_user: vm.ssh_user,
    kernel: keep("kernel", boot.kernel),
    initrd: keep("initrd", boot.initrd),
    cmdline: boot.cmdline,
    host: vm.host,
    placement_group: vm.placement_group,
    // The server reports real paths; keep the configured spelling of the same directory's tag.
    shares: vm.shares.map((sh) => {
      const before = priorShares.find((b) => b !== null && b.tag === sh.tag);
      return { host_path: str(before?.host_path) ?? sh.host_path, tag: sh.tag, readonly: sh.readonly, transport: sh.transport };
    }),
    running: isActiveState(vm.state),
    allow_restart: prior?.allow_restart ?? null,
    gdb: vm.gdb_port !== null,
    on_panic: vm.on_panic,
    gdb_port: vm.gdb_port,
    restart_required: vm.restart_required,
    state: vm.state,
    ip_address: vm.ip_address,
    mac_address: vm.network.mac_address,
    ssh_port: vm.ssh_port,
    created_at: vm.created_at,
  };
}

// ---- plan ----

function planDisks(c: CtyValue | undefined, prior: CtyObject | null): CtyValue {
  if (c === null || c === undefined) return prior ? (prior.extra_disks ?? []) : []; // unset: no data disks
  if (isUnknown(c) || !Array.isArray(c)) return UNKNOWN;
  // Kept disks take the configured type, else the prior one; new ones the configured one.
  return planDataDisks(c, prior && Array.isArray(prior.extra_disks) ? prior.extra_disks : []);
}

/** Shares as configured with their defaults filled in; unset: none (or what the VM has). */
function planShares(c: CtyValue | undefined, prior: CtyObject | null): CtyValue {
  if (c === null || c === undefined) return prior ? (prior.shares ?? []) : [];
  if (!Array.isArray(c)) return UNKNOWN;
  return c.map((e) => {
    const sh = obj(e);
    if (!sh) return e;
    return { host_path: sh.host_path ?? null, tag: sh.tag ?? null, readonly: sh.readonly ?? false, transport: sh.transport ?? "virtiofs" };
  });
}

function planNetwork(c: CtyValue | undefined, prior: CtyObject | null): CtyValue {
  const before = obj(prior?.network);
  if (c === null || c === undefined) return prior ? (prior.network ?? null) : UNKNOWN;
  if (isUnknown(c)) return UNKNOWN;
  const n = obj(c) ?? {};
  // A bridge without a mode means bridge mode: say so to the API instead of trusting its default.
  const mode: CtyValue = n.mode ?? (isKnown(n.bridge) ? "bridge" : isUnknown(n.bridge) ? UNKNOWN : (before?.mode ?? UNKNOWN));
  let bridge: CtyValue = n.bridge ?? null;
  if (n.bridge === null || n.bridge === undefined) {
    if (typeof mode === "string" && mode !== "bridge") bridge = null;
    else if (before && before.mode === mode) bridge = before.bridge ?? null;
    else bridge = UNKNOWN;
  }
  return { mode, bridge };
}

export interface PlanResult {
  planned: CtyObject | null;
  requiresReplace: PathStep[][];
  diagnostics: Diagnostic[];
}

export async function planVm(ctx: Ctx, prior: CtyObject | null, config: CtyObject | null, priv: VmPrivate): Promise<PlanResult> {
  if (config === null) return { planned: null, requiresReplace: [], diagnostics: [] }; // destroy
  const c = config;
  const diagnostics: Diagnostic[] = [];
  const planned: CtyObject = {
    id: prior ? (prior.id ?? UNKNOWN) : UNKNOWN,
    name: c.name ?? null,
    vcpus: orPrior(c.vcpus, prior, "vcpus"),
    memory_gb: orPrior(c.memory_gb, prior, "memory_gb"),
    image: c.image ?? null,
    root_disk_gb: orPrior(c.root_disk_gb, prior, "root_disk_gb"),
    extra_disks: planDisks(c.extra_disks, prior),
    network: planNetwork(c.network, prior),
    ssh_public_key: c.ssh_public_key ?? null,
    ssh_user: orPrior(c.ssh_user, prior, "ssh_user"),
    kernel: c.kernel ?? null,
    initrd: c.initrd ?? null,
    cmdline: c.cmdline ?? null,
    host: orPrior(c.host, prior, "host"),
    placement_group: c.placement_group ?? null,
    shares: planShares(c.shares, prior),
    running: c.running ?? true,
    allow_restart: c.allow_restart ?? null,
    gdb: orPrior(c.gdb, prior, "gdb"),
    on_panic: orPrior(c.on_panic, prior, "on_panic"),
  };
  planned.max_vcpus = planMaximum(c.max_vcpus, planned.vcpus ?? null, prior, "max_vcpus");
  planned.max_memory_gb = planMaximum(c.max_memory_gb, planned.memory_gb ?? null, prior, "max_memory_gb");
  const image = str(c.image);
  if (!prior) {
    for (const a of computedOut) planned[a.name] = UNKNOWN;
    planned.restart_required = UNKNOWN;
    if (image !== undefined && ctx.client) {
      try {
        if ((await imageId(ctx, image)) === null) diagnostics.push(await missingImageDiag(ctx, image));
      } catch (e) {
        diagnostics.push(diagFromError(e, `checking image "${image}"`));
      }
    }
    return { planned, requiresReplace: [], diagnostics };
  }
  for (const a of computedOut) planned[a.name] = prior[a.name] ?? null;
  planned.restart_required = prior.restart_required ?? null;
  const updating = UPDATABLE.some((k) => !sameValue(planned[k], prior[k]));
  // A new kernel, initrd or command line is booted at once: the VM is stopped, switched, started.
  const rebooting = BOOT_ATTRS.some((k) => !sameValue(planned[k], prior[k])) && planned.running !== false;
  // allow_restart known only at apply may be true.
  const mayRestart = planned.allow_restart === true || isUnknown(planned.allow_restart ?? null);
  // Changes that wait for the next start, now allowed to restart the VM: apply restarts it.
  const restartPending = mayRestart && prior.restart_required === true && planned.running !== false && prior.running === true;
  if (planned.running !== prior.running || (updating && mayRestart) || rebooting || restartPending) {
    // Starting, stopping or restarting changes these; their new values are known only after apply.
    planned.state = UNKNOWN;
    planned.ip_address = UNKNOWN;
  }
  // Known after apply: a change may wait for the next start; a stop or start applies what waited.
  if (updating || planned.running !== prior.running || restartPending) planned.restart_required = UNKNOWN;
  const priorImage = str(prior.image);
  if (image !== undefined && priorImage !== undefined && image !== priorImage && ctx.client) {
    try {
      if (await sameImage(ctx, image, priorImage)) planned.image = priorImage; // e.g. debian13 vs its id
    } catch (e) {
      diagnostics.push(diagFromError(e, `comparing images "${image}" and "${priorImage}"`));
    }
  }
  const adoptKey = priv.imported === true && prior.ssh_public_key === null;
  const requiresReplace: PathStep[][] = REPLACE_ATTRS.filter((k) => !(k === "ssh_public_key" && adoptKey)).map((k) => [k]);
  const shrink = rootShrink(prior, planned);
  if (shrink) {
    requiresReplace.push(["root_disk_gb"]);
    diagnostics.push(shrink);
  } else diagnostics.push(...updateWarnings(prior, planned));
  return { planned, requiresReplace, diagnostics };
}

// ---- apply ----

function createBody(p: CtyObject): CreateVmRequest {
  const body: CreateVmRequest = { name: str(p.name) ?? "", image: str(p.image) ?? "", start: p.running !== false };
  const vcpus = num(p.vcpus);
  if (vcpus !== undefined) body.vcpus = vcpus;
  const mem = num(p.memory_gb);
  if (mem !== undefined) body.memory_mb = Math.round(mem * 1024);
  // Maxima only when they leave room (the API's default is the value itself).
  const maxVcpus = num(p.max_vcpus);
  if (maxVcpus !== undefined && maxVcpus !== vcpus) body.max_vcpus = maxVcpus;
  const maxMem = num(p.max_memory_gb);
  if (maxMem !== undefined && maxMem !== mem) body.max_memory_mb = Math.round(maxMem * 1024);
  const root = num(p.root_disk_gb);
  if (root !== undefined) body.root_disk_gb = root;
  if (Array.isArray(p.extra_disks) && p.extra_disks.length > 0) {
    body.extra_disks = p.extra_disks.map((e) => {
      const disk = obj(e) ?? {};
      const t = str(disk.type) as DiskBus | undefined; // validateVm refused any other value
      return { size_gb: num(disk.size_gb) ?? 0, ...(t !== undefined ? { type: t } : {}) };
    });
  }
  const net = obj(p.network);
  if (net) {
    const mode = str(net.mode) as NetworkMode | undefined; // validateVm refused any other value
    const bridge = str(net.bridge);
    if (mode !== undefined || bridge !== undefined) body.network = { ...(mode !== undefined ? { mode } : {}), ...(bridge !== undefined ? { bridge } : {}) };
  }
  if (p.gdb === true) body.debug = { gdb: true };
  const onPanic = str(p.on_panic);
  if (onPanic !== undefined && isOnPanic(onPanic)) body.on_panic = onPanic;
  for (const k of ["ssh_user", "ssh_public_key", "kernel", "initrd", "cmdline", "host", "placement_group"] as const) {
    const v = str(p[k]);
    if (v !== undefined) body[k] = v;
  }
  if (Array.isArray(p.shares) && p.shares.length > 0) {
    body.shares = p.shares.map((e) => {
      const sh = obj(e) ?? {};
      const transport = str(sh.transport) as ShareTransport | undefined;
      return { host_path: str(sh.host_path) ?? "", tag: str(sh.tag) ?? "", readonly: sh.readonly === true, ...(transport !== undefined ? { transport } : {}) };
    });
  }
  return body;
}

/** Until the VM runs and, if it has networking, its address (or SSH port) is known. */
async function waitReady(ctx: Ctx, client: RcloudClient, id: string): Promise<{ vm: ApiVm; error: string | null }> {
  const deadline = Date.now() + ctx.timeoutMs;
  const signal = ctx.signal; // StopProvider aborts this one and installs a fresh signal
  let delay = 250;
  for (;;) {
    const vm = await client.getVm(id);
    if (!vm) throw new ApiError("not_found", `VM ${id} disappeared while waiting for it to start`, 404, null);
    const reachable = vm.network.mode === "none" || vm.ip_address !== null || (vm.network.mode === "user" && vm.ssh_port !== null);
    if (vm.state === "running" && reachable) return { vm, error: null };
    if (vm.state === "crashed") return { vm, error: `VM ${vm.name} (${id}) crashed while starting; see its console log on the rcloud host.` };
    if (signal.aborted) return { vm, error: `stopped waiting for VM ${vm.name} (${id}): Terraform is stopping.` };
    if (Date.now() >= deadline) {
      const what = vm.state !== "running" ? `to reach state running (it is ${vm.state})` : `for an IP address on ${vm.network.bridge ?? vm.network.mode}`;
      return {
        vm,
        error:
          `VM ${vm.name} (${id}) was created but timed out after ${Math.round(ctx.timeoutMs / 1000)} s waiting ${what}. ` +
          `Check the guest's network (DHCP on the bridge), or raise the provider's timeout.`,
      };
    }
    await sleep(Math.min(delay, Math.max(0, deadline - Date.now())), signal);
    delay = Math.min(delay * 2, 5000);
  }
}

export interface ApplyResult {
  newState: CtyObject | null;
  priv: VmPrivate;
  diagnostics: Diagnostic[];
}

export async function applyVm(ctx: Ctx, prior: CtyObject | null, planned: CtyObject | null): Promise<ApplyResult> {
  const client = ctx.client;
  if (!client) return { newState: prior, priv: {}, diagnostics: [errorDiag("Provider not configured", "the rcloud provider was not configured before apply")] };
  const id = str(prior?.id);
  if (planned === null) {
    if (id) {
      try {
        await client.deleteVm(id);
      } catch (e) {
        return { newState: prior, priv: {}, diagnostics: [diagFromError(e, `deleting VM ${str(prior?.name) ?? id}`)] };
      }
    }
    return { newState: null, priv: {}, diagnostics: [] };
  }
  if (!prior || !id) {
    let vm: ApiVm;
    try {
      vm = await client.createVm(createBody(planned));
      ctx.log("INFO", `created VM ${vm.name} (${vm.id})`);
    } catch (e) {
      const image = str(planned.image);
      if (e instanceof ApiError && e.code === "image_not_found" && image !== undefined) return { newState: null, priv: {}, diagnostics: [await missingImageDiag(ctx, image)] };
      const diag = diagFromError(e, `creating VM ${str(planned.name) ?? ""}`, ATTR_NAMES);
      const made = await createdAnyway(ctx, client, e, planned);
      // The server made it although no answer came: return it with the error, so Terraform records (and taints) it.
      if (made) return { newState: await vmToState(ctx, made, planned), priv: {}, diagnostics: [diag] };
      return { newState: null, priv: {}, diagnostics: [diag] };
    }
    return finish(ctx, client, vm, planned, planned.running !== false, false);
  }
  try {
    let vm = await client.getVm(id);
    if (!vm) return { newState: null, priv: {}, diagnostics: [errorDiag("VM deleted outside Terraform", `VM ${id} no longer exists on ${client.endpoint}; run terraform apply again to create it.`)] };
    const before = vm.state;
    const wantRunning = planned.running !== false;
    const body = updateBody(prior, planned, vm);
    let restarted = false;
    if (Object.keys(body).length > 0) {
      if (wantRunning !== isActiveState(vm.state)) body.running = wantRunning;
      // Direct boot changes in place by a restart (stop, switch, start), allow_restart or not.
      else if (wantRunning && BOOT_ATTRS.some((k) => body[k] !== undefined)) body.restart = true;
      const r = await patchVm(client, id, body, planned.allow_restart === true);
      vm = r.vm;
      restarted = r.restarted;
    } else if (wantRunning && isActiveState(vm.state) && planned.allow_restart === true && vm.restart_required) {
      // allow_restart turned on later: apply what waits for the next start now.
      vm = await client.updateVm(id, { restart: true });
      restarted = true;
    } else if (wantRunning && !isActiveState(vm.state)) vm = await client.startVm(id);
    else if (!wantRunning && isActiveState(vm.state)) vm = await client.stopVm(id);
    // Neither started, stopped nor restarted: state and ip_address are as planned (the plan copied them).
    const steady = !restarted && wantRunning === prior.running && isActiveState(before) === wantRunning;
    return finish(ctx, client, vm, planned, wantRunning && (prior.running !== true || restarted), steady);
  } catch (e) {
    return { newState: prior, priv: {}, diagnostics: [diagFromError(e, `updating VM ${str(prior.name) ?? id}`, ATTR_NAMES)] };
  }
}

/**
 * PATCH; with allow_restart, a change the running VM cannot take live (a disk bus it cannot
 * hot-plug: 422 on extra_disks) is sent again with restart, and pending changes are applied
 * by a restart.
 */
async function patchVm(client: RcloudClient, id: string, body: UpdateVmRequest, allowRestart: boolean): Promise<{ vm: ApiVm; restarted: boolean }> {
  try {
    const vm = await client.updateVm(id, body);
    if (body.restart === true) return { vm, restarted: true };
    if (!allowRestart || !vm.restart_required || body.running === false) return { vm, restarted: false };
    return { vm: await client.updateVm(id, { restart: true }), restarted: true };
  } catch (e) {
    const liveOnlyRefusal = e instanceof ApiError && e.code === "validation_error" && (e.field ?? "").startsWith("extra_disks.") && /restart/.test(e.message);
    if (!allowRestart || !liveOnlyRefusal) throw e;
    return { vm: await client.updateVm(id, { ...body, restart: true }), restarted: true };
  }
}

/** Equal as Terraform values (lists and objects by content). */
function sameValue(a: CtyValue | undefined, b: CtyValue | undefined): boolean {
  return JSON.stringify(a ?? null) === JSON.stringify(b ?? null);
}

/**
 * After a create that got no HTTP answer (lost connection, timeout): the VM the server made
 * anyway, looked up by name with a request of its own; null if there is none or we cannot tell.
 */
async function createdAnyway(ctx: Ctx, client: RcloudClient, e: unknown, planned: CtyObject): Promise<ApiVm | null> {
  const name = str(planned.name);
  if (!(e instanceof ApiError) || e.status !== 0 || name === undefined) return null;
  try {
    const vm = await client.findVmByName(name);
    if (vm) ctx.log("WARN", `creating VM ${name} got no answer, but the server has it (${vm.id}); recording it`);
    return vm;
  } catch (err) {
    ctx.log("WARN", `creating VM ${name} got no answer, and looking it up failed too: ${(err as Error).message}`);
    return null;
  }
}

/**
 * The state after a successful create or update. `steady`: the VM was neither started,
 * stopped nor restarted, so the planned state and ip_address (copied from the prior state)
 * stand; reading them again could differ (the address lookup is best effort) and Terraform
 * refuses an apply result that differs from a known planned value.
 */
async function finish(ctx: Ctx, client: RcloudClient, vm: ApiVm, planned: CtyObject, wait: boolean, steady: boolean): Promise<ApplyResult> {
  const diagnostics: Diagnostic[] = [];
  if (wait) {
    try {
      const r = await waitReady(ctx, client, vm.id);
      vm = r.vm;
      if (r.error) diagnostics.push(errorDiag("VM not ready", r.error));
    } catch (e) {
      diagnostics.push(diagFromError(e, `waiting for VM ${vm.name}`));
    }
  }
  // On error the VM still exists: return it so Terraform records (and taints) it.
  const state = await vmToState(ctx, vm, planned);
  // The API took the planned image (an alias or file name is the same image): keep its spelling.
  if (typeof planned.image === "string") state.image = planned.image;
  if (steady) for (const k of ["state", "ip_address"]) if (planned[k] !== undefined && !isUnknown(planned[k] ?? null)) state[k] = planned[k] ?? null;
  return { newState: state, priv: {}, diagnostics };
}

// ---- read / import / upgrade ----

export async function readVm(ctx: Ctx, current: CtyObject): Promise<{ newState: CtyObject | null; diagnostics: Diagnostic[] }> {
  if (!ctx.client) return { newState: current, diagnostics: [] };
  const id = str(current.id) ?? str(current.name);
  if (!id) return { newState: null, diagnostics: [] };
  try {
    const vm = await ctx.client.getVm(id);
    if (!vm) {
      ctx.log("INFO", `VM ${id} is gone; removing it from the state`);
      return { newState: null, diagnostics: [] };
    }
    return { newState: await vmToState(ctx, vm, current), diagnostics: [] };
  } catch (e) {
    const diag = diagFromError(e, `reading VM ${str(current.name) ?? id}`);
    // Its host is offline (other hosts answer): keep what we knew, so plans of everything else go on.
    if (e instanceof ApiError && e.code === "host_unavailable") {
      return { newState: current, diagnostics: [{ ...diag, severity: "WARNING", detail: `${diag.detail}. Terraform keeps the VM's last known state until its host is back.` }] };
    }
    return { newState: current, diagnostics: [diag] };
  }
}

export async function importVm(ctx: Ctx, ref: string): Promise<{ state: CtyObject | null; diagnostics: Diagnostic[] }> {
  if (!ctx.client) return { state: null, diagnostics: [errorDiag("Provider not configured", "the rcloud provider must be configured to import")] };
  try {
    const vm = await ctx.client.getVm(ref.trim());
    if (!vm) {
      return {
        state: null,
        diagnostics: [errorDiag("Cannot import a VM that does not exist", `No VM with id or name "${ref}" on ${ctx.client.endpoint}; GET /api/v1/vms lists them.`)],
      };
    }
    return { state: await vmToState(ctx, vm, null), diagnostics: [] };
  } catch (e) {
    return { state: null, diagnostics: [diagFromError(e, `importing VM ${ref}`)] };
  }
}

/** Version 0 is current: identity, filling attributes that older states lack with null. */
export function upgradeVmState(version: number): Diagnostic[] {
  if (version > vmSchema.version) {
    return [errorDiag("State written by a newer provider", `This rcloud_vm state has schema version ${version}; this provider knows up to ${vmSchema.version}. Upgrade the provider.`)];
  }
  return [];
}
