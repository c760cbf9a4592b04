/**
 * Validation of VM create requests: everything the API, the drivers and the cloud-init seed
 * builder would refuse is refused here first, with the field named (422), so nothing is made
 * for a request that cannot succeed.
 */
import { randomBytes } from "node:crypto";
import { ServiceError } from "../api-types/errors.ts";
import type { CreateVmRequest } from "../api-types/json.ts";
import { BRIDGE_PATTERN, cmdlineProblem, DISK_BUSES, HOST_NAME_PATTERN, hostPathProblem, isNetworkMode, isOnPanic, MAX_SHARES, MAX_SSH_KEYS, NETWORK_MODES, ON_PANIC_ACTIONS, type OnPanic, PLACEMENT_GROUP_PATTERN, SHARE_TAG_MAX, SHARE_TAG_PATTERN, SHARE_TRANSPORTS, sharePathProblem, VM_ID_PATTERN, VM_LIMITS, VM_NAME_PATTERN } from "../api-types/values.ts";
import { buildSeedIso, SeedError, type SeedErrorCode, type SeedMount, validateSshPublicKey } from "../cloudinit/index.ts";
import { type DiskBus, type HostInfo, type ImageInfo, type NetworkMode, type ShareSpec, type VmSpec } from "../drivers/types.ts";
import { loginUserProblem } from "../util/login-user.ts";

const NAME_RE = new RegExp(VM_NAME_PATTERN);
const ID_RE = new RegExp(VM_ID_PATTERN);
const BRIDGE_RE = new RegExp(BRIDGE_PATTERN);
const HOST_RE = new RegExp(HOST_NAME_PATTERN);
const GROUP_RE = new RegExp(PLACEMENT_GROUP_PATTERN);
const TAG_RE = new RegExp(SHARE_TAG_PATTERN);
const GiB = 1024 ** 3;

/** The server's defaults for what a create request leaves out (vm_defaults), and its limits. */
export interface ServiceDefaults {
  vcpus: number;
  memoryMb: number;
  rootDiskGb: number;
  networkMode: NetworkMode;
  networkBridge: string;
  userNetworkRestrict: boolean;
  /** vm_defaults.on_panic. */
  onPanic: OnPanic;
  diskDriver: DiskBus;
  sshUser: string;
  stopTimeoutS: number;
  maxExtraDisks: number;
  /**
   * vCPUs one VM may have per host CPU: vCPUs are time-shared, so a VM may have more than
   * the host has cores (a 4-vCPU test VM on a 2-core laptop is normal), within reason.
   */
  vcpuOvercommit: number;
  /** A VM's memory may be up to the host's times this: memory is not time-shared, so 1 by default. */
  memoryOvercommit: number;
  /** Largest uploaded kernel or initrd (vm_defaults.max_kernel_bytes); default DEFAULT_MAX_KERNEL_BYTES. */
  maxKernelBytes?: number;
  /** Free space a storage pool keeps for thin disks to grow into (vm_defaults.pool_reserve_mb); default DEFAULT_POOL_RESERVE_BYTES. */
  poolReserveBytes?: number;
}

/** vm_defaults.max_kernel_bytes's default: 512 MiB. */
export const DEFAULT_MAX_KERNEL_BYTES = 512 * 1024 * 1024;

export interface CreateContext {
  defaults: ServiceDefaults;
  /** Finds a base image by id, file name or alias on any host (fleet-images.ts findImage). */
  findImage(ref: string): ImageInfo | null;
  /** Every image's name, for the refusal of an unknown one. */
  imageNames(): string[];
}

function newId(): string {
  const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
  return "vm-" + [...randomBytes(8)].map((b) => alphabet[b % 36]).join("");
}

/** A 422 validation_error naming the field. */
export function invalid(field: string, message: string): ServiceError {
  return new ServiceError("validation_error", `${field}: ${message}`, { field });
}

export function intIn(field: string, v: unknown, min: number, max: number): number {
  if (typeof v !== "number" || !Number.isInteger(v)) throw invalid(field, "must be an integer");
  if (v < min || v > max) throw invalid(field, `must be between ${min} and ${max}, got ${v}`);
  return v;
}

/**
 * Semantic validation of a create request against the server's defaults, its images and the
 * host's capacity; returns a complete spec or throws a ServiceError naming the field.
 */
export function validateCreate(req: CreateVmRequest, owner: string | null, ctx: CreateContext): VmSpec {
  const d = ctx.defaults;
  if (typeof req.name !== "string" || !NAME_RE.test(req.name)) {
    throw invalid("name", "must be a DNS label: 1-63 lower-case letters, digits and '-', not starting or ending with '-'");
  }
  if (ID_RE.test(req.name)) throw invalid("name", "must not look like a VM id (vm-xxxxxxxx)");

  const imageRef = req.image ?? req.base_image;
  if (imageRef === undefined) throw invalid("image", "is required (an id, file name or alias from GET /api/v1/images)");
  if (req.image !== undefined && req.base_image !== undefined && req.image !== req.base_image) {
    throw invalid("image", "image and base_image disagree; give one of them");
  }
  const image = typeof imageRef === "string" ? ctx.findImage(imageRef) : null;
  if (!image) {
    const known = ctx.imageNames();
    throw new ServiceError("image_not_found", `no base image '${String(imageRef)}'; available: ${known.join(", ") || "none"}`, { field: "image", available: known });
  }

  // What fits on which host is placement's business (placement.ts); these are the bounds.
  const vcpus = intIn("vcpus", req.vcpus ?? d.vcpus, VM_LIMITS.vcpus.min, VM_LIMITS.vcpus.max);
  if (req.memory_mb !== undefined && req.memory_gb !== undefined) throw invalid("memory_mb", "give memory_mb or memory_gb, not both");
  const memoryMb = req.memory_gb !== undefined ? intIn("memory_gb", req.memory_gb, VM_LIMITS.memoryGb.min, VM_LIMITS.memoryGb.max) * 1024 : intIn("memory_mb", req.memory_mb ?? d.memoryMb, VM_LIMITS.memoryMb.min, VM_LIMITS.memoryMb.max);
  // Headroom for later changes without a restart (vCPU hot-plug, the balloon).
  const maxVcpus = intIn("max_vcpus", req.max_vcpus ?? vcpus, VM_LIMITS.vcpus.min, VM_LIMITS.vcpus.max);
  if (maxVcpus < vcpus) throw invalid("max_vcpus", `must be at least vcpus (${vcpus})`);
  const maxMemoryMb = intIn("max_memory_mb", req.max_memory_mb ?? memoryMb, VM_LIMITS.memoryMb.min, VM_LIMITS.memoryMb.max);
  if (maxMemoryMb < memoryMb) throw invalid("max_memory_mb", `must be at least the memory (${memoryMb} MiB)`);
  if (req.host !== undefined && (typeof req.host !== "string" || !HOST_RE.test(req.host))) throw invalid("host", "must be a host name from GET /api/v1/hosts");
  if (req.placement_group !== undefined && (typeof req.placement_group !== "string" || !GROUP_RE.test(req.placement_group))) {
    throw invalid("placement_group", "must be 1-63 lower-case letters, digits, '-' or '_', starting and ending with a letter or digit");
  }
  const minRoot = Math.ceil(image.virtualSizeBytes / GiB);
  const rootDiskGb = intIn("root_disk_gb", req.root_disk_gb ?? Math.max(d.rootDiskGb, minRoot), VM_LIMITS.diskGb.min, VM_LIMITS.diskGb.max);
  if (rootDiskGb < minRoot) throw invalid("root_disk_gb", `must be at least ${minRoot} (the size of image ${image.id})`);

  const extra = req.extra_disks ?? [];
  if (!Array.isArray(extra)) throw invalid("extra_disks", "must be a list");
  if (extra.length > d.maxExtraDisks) throw invalid("extra_disks", `at most ${d.maxExtraDisks} extra disks`);
  const dataDisks = extra.map((x, i) => {
    const bus = (x.type ?? d.diskDriver) as DiskBus;
    if (!DISK_BUSES.includes(bus)) throw invalid(`extra_disks[${i}].type`, `must be one of ${DISK_BUSES.join(", ")}`);
    return { sizeGb: intIn(`extra_disks[${i}].size_gb`, x.size_gb, VM_LIMITS.diskGb.min, VM_LIMITS.diskGb.max), bus };
  });
  const mode: unknown = req.network?.mode ?? d.networkMode;
  if (!isNetworkMode(mode)) throw invalid("network.mode", `must be one of ${NETWORK_MODES.join(", ")}`);
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
      kernel: bootPath("kernel", req.kernel),
      initrd: req.initrd !== undefined ? bootPath("initrd", req.initrd) : null,
      cmdline: req.cmdline ?? null,
    };
    const cmdlineRefusal = boot.cmdline === null ? null : cmdlineProblem(boot.cmdline);
    if (cmdlineRefusal) throw invalid("cmdline", cmdlineRefusal);
  }

  if (req.debug !== undefined && (typeof req.debug !== "object" || req.debug === null || (req.debug.gdb !== undefined && typeof req.debug.gdb !== "boolean"))) {
    throw invalid("debug.gdb", "must be true or false");
  }
  if (req.on_panic !== undefined && !isOnPanic(req.on_panic)) throw invalid("on_panic", `must be one of ${ON_PANIC_ACTIONS.join(", ")}`);
  const shares = validateShares(req.shares);

  const id = newId();
  const mounts = shares.map(shareMount);
  return {
    id,
    name: req.name,
    vcpus,
    maxVcpus,
    memoryMb,
    maxMemoryMb,
    image,
    rootDiskGb,
    dataDisks,
    network: { mode, bridge, restrict, sshPort: null },
    ssh: { user: sshUser, authorizedKeys: keys },
    // Without keys there is nothing for cloud-init to do that the image does not already.
    seedIso: keys.length > 0 || mounts.length > 0 ? seedIso({ instanceId: id, hostname: req.name, user: sshUser, sshAuthorizedKeys: keys, mounts }) : null,
    boot,
    createdAt: new Date().toISOString(),
    owner,
    placementGroup: req.placement_group ?? null,
    start: req.start ?? true,
    // The port is picked with the SSH forward's, after placement (service.ts).
    gdbPort: null,
    onPanic: req.on_panic ?? d.onPanic,
    shares,
  };
}

/**
 * The shares' shape: host_path absolute and plain (no "." or ".." parts: what it names is
 * judged by its real path on the VM's host, after placement), tags unique safe names,
 * readonly default false, transport virtiofs (default) or 9p.
 */
export function validateShares(given: CreateVmRequest["shares"]): ShareSpec[] {
  if (given === undefined) return [];
  if (!Array.isArray(given)) throw invalid("shares", "must be a list");
  if (given.length > MAX_SHARES) throw invalid("shares", `at most ${MAX_SHARES} shares`);
  const tags = new Set<string>();
  return given.map((x, i) => {
    const at = `shares[${i}]`;
    const transport = x.transport ?? "virtiofs";
    if (!SHARE_TRANSPORTS.includes(transport)) throw invalid(`${at}.transport`, `must be one of ${SHARE_TRANSPORTS.join(", ")}`);
    const path = x.host_path;
    const pathRefusal = sharePathProblem(path);
    if (pathRefusal) throw invalid(`${at}.host_path`, pathRefusal);
    const tag = x.tag;
    if (typeof tag !== "string" || !TAG_RE.test(tag)) throw invalid(`${at}.tag`, "must be a letter or digit, then letters, digits, '_' or '-' (the guest mounts it at /mnt/<tag>)");
    if (tag.length > SHARE_TAG_MAX[transport]) throw invalid(`${at}.tag`, `must be at most ${SHARE_TAG_MAX[transport]} characters for ${transport}`);
    if (tags.has(tag)) throw invalid(`${at}.tag`, `'${tag}' is used by another share of this VM; tags must be unique`);
    tags.add(tag);
    if (x.readonly !== undefined && typeof x.readonly !== "boolean") throw invalid(`${at}.readonly`, "must be true or false");
    return { hostPath: path, tag, readonly: x.readonly ?? false, transport };
  });
}

/** The cloud-init `mounts:` item of a share: at /mnt/<tag>, read-only as asked (nofail: a boot never hangs on it). */
export function shareMount(s: ShareSpec): SeedMount {
  const access = s.readonly ? "ro" : "rw";
  const options = s.transport === "9p" ? ["trans=virtio", "version=9p2000.L", "msize=262144", access, "nofail"] : [access, "nofail"];
  return { spec: s.tag, dir: `/mnt/${s.tag}`, fstype: s.transport, options };
}

/** A direct-boot path's shape; whether it is a file in the kernel directory is asked of the VM's host after placement. */
export function bootPath(field: string, path: unknown): string {
  const refusal = hostPathProblem(path);
  if (refusal) throw invalid(field, refusal);
  return path as string;
}

/** The request field each refusal of the seed builder is about. */
const SEED_FIELDS: Record<Exclude<SeedErrorCode, "INTERNAL">, string> = {
  BAD_INSTANCE_ID: "name",
  BAD_HOSTNAME: "name",
  BAD_USER: "ssh_user",
  BAD_SSH_KEY: "ssh_public_keys",
  NO_SSH_KEYS: "ssh_public_keys",
  BAD_NETWORK_CONFIG: "network",
  BAD_MOUNT: "shares",
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
