/**
 * rcloud's configuration keys, each defined once as a TypeBox schema: its type and bounds, default,
 * environment variable and a one-line description. The `RcloudConfig` type, the loader's checks,
 * the environment layer (env.ts) and docs/configuration.md (scripts/gen-config-doc.ts) all read it.
 *
 * To add a key, add one line to its section in CONFIG_SCHEMA below, e.g. in `server`:
 *   max_body_bytes: Int(1024, 1073741824, { default: 1048576, env: "RCLOUD_MAX_BODY_BYTES", description: "largest request body accepted, bytes" }),
 * (`env` only if it should have one), then the key commented out with its default under a `##`
 * description in config/rcloud.yaml, run `bun run gen:config-doc`, and add the default
 * (and the variable) to the lists test/unit/config.test.ts pins. Other kinds: Num, Bool, Str (with
 * `pattern` and `expected` words), NonEmpty, Path, OneOf([...]), List(item), `nullable: true`, `check`.
 */
import { homedir } from "node:os";
import { posix } from "node:path";
import { Value } from "@sinclair/typebox/value";
import { type Static, type TNull, type TObject, type TProperties, type TSchema, type TUnion, Type } from "@sinclair/typebox";
import { DISK_BUSES, HOST_NAME_PATTERN, NETWORK_MODES, ON_CRASH, ON_PANIC_ACTIONS, PLACEMENT_POLICIES, PROJECT_PATTERN, VM_LIMITS } from "../api-types/values.ts";
import { DEFAULT_TOKENS_FILE } from "../auth/tokens.ts";
import { literalUnion } from "../util/literal-union.ts";
import { LOGIN_USER_RE, loginUserProblem } from "../util/login-user.ts";
import type { Env, KeyOptions, KeySchema } from "./key-options.ts";
import { ABSOLUTE_PATH, checkBindAddress, checkEach, checkOrigin, checkPublicName, describeValue, nonEmpty } from "./checks.ts";

type Key<T extends TSchema, O extends KeyOptions> = (O extends { nullable: true } ? TUnion<[T, TNull]> : T) & O;

function key<T extends TSchema, const O extends KeyOptions<Static<T>>>(type: T, options: O): Key<T, O> {
  const schema = options.nullable === true ? Type.Union([type, Type.Null()], options) : { ...type, ...options };
  return schema as Key<T, O>;
}

export const Int = <const O extends KeyOptions<number>>(minimum: number, maximum: number, o: O) => key(Type.Integer({ minimum, maximum }), o);
/** A number that may have a fraction (e.g. a ratio). */
export const Num = <const O extends KeyOptions<number>>(minimum: number, maximum: number, o: O) => key(Type.Number({ minimum, maximum }), o);
export const Bool = <const O extends KeyOptions<boolean>>(o: O) => key(Type.Boolean(), o);
export const Str = <const O extends KeyOptions<string> & { pattern?: RegExp }>({ pattern, ...o }: O) =>
  key(Type.String(pattern === undefined ? {} : { pattern: pattern.source }), o as Omit<O, "pattern">);
export const NonEmpty = <const O extends KeyOptions<string>>(o: O) => Str({ check: nonEmpty, expected: "a non-empty string", ...o });
/** An absolute path; `~` is not expanded. */
export const Path = <const O extends KeyOptions<string>>(o: O) => key(Type.String({ format: ABSOLUTE_PATH }), o);
export const OneOf = <const V extends readonly string[], const O extends KeyOptions<V[number]>>(values: V, o: O) =>
  key(literalUnion(values), o);
/** A list, each item of `item`'s type (e.g. Type.String()). */
export const List = <T extends TSchema, const O extends KeyOptions<Static<T>[]>>(item: T, o: O) => key(Type.Array(item), o);
/** A mapping of keys to values: a group of keys, not a key itself. */
const Section = <P extends TProperties>(properties: P) => Type.Object(properties, { additionalProperties: false, section: true });

export const LIBVIRT_URI_RE = /^[a-z][a-z0-9+-]*:\/\//;
export const POOL_NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/;

/** A project's limits; a missing or null limit is unlimited. */
const Limit = Type.Optional(Type.Union([Type.Integer({ minimum: 0 }), Type.Null()]));
const Quota = Type.Object({ vms: Limit, vcpus: Limit, memory_mb: Limit, disk_gb: Limit }, { additionalProperties: false });
export type QuotaSpec = Static<typeof Quota>;
const QUOTA_KEYS = Object.keys(Quota.properties);
const PROJECT_NAME_RE = new RegExp(PROJECT_PATTERN);

/** Says what is wrong with a quota: any of vms, vcpus, memory_mb, disk_gb, each a non-negative integer or null. */
function checkQuota(v: unknown): string | null {
  if (typeof v !== "object" || v === null || Array.isArray(v)) return `must be a mapping with any of ${QUOTA_KEYS.join(", ")}, got ${describeValue(v)}`;
  for (const [k, n] of Object.entries(v as Record<string, unknown>)) {
    if (!QUOTA_KEYS.includes(k)) return `unknown quota key ${JSON.stringify(k)} (known: ${QUOTA_KEYS.join(", ")})`;
    if (n === null) continue;
    if (typeof n !== "number" || !Number.isInteger(n) || n < 0) return `${k} must be a non-negative integer, got ${describeValue(n)}`;
  }
  return null;
}

function checkQuotas(v: unknown): string | null {
  if (typeof v !== "object" || v === null || Array.isArray(v)) return `must be a mapping of project names to quotas, got ${describeValue(v)}`;
  for (const [project, q] of Object.entries(v as Record<string, unknown>)) {
    if (!PROJECT_NAME_RE.test(project)) return `project name ${JSON.stringify(project)} must be lower-case letters, digits, '-' or '_' (1-64)`;
    const reason = checkQuota(q);
    if (reason !== null) return `${project}: ${reason}`;
  }
  return null;
}

/**
 * One libvirt host of the fleet (`hosts:`); a missing key takes the top-level default
 * (libvirt.storage_pool_path, images.base_images_dir, vm_defaults.kernel_dir and overcommits).
 * Paths are paths on that host: rcloud never assumes it shares a file system with it.
 */
const HostEntry = Type.Object(
  {
    name: Type.String({ pattern: HOST_NAME_PATTERN }),
    uri: Type.String({ pattern: LIBVIRT_URI_RE.source }),
    labels: Type.Optional(Type.Record(Type.String(), Type.String())),
    storage_pool_path: Type.Optional(Type.String({ format: ABSOLUTE_PATH })),
    base_images_dir: Type.Optional(Type.String({ format: ABSOLUTE_PATH })),
    kernel_dir: Type.Optional(Type.Union([Type.String({ format: ABSOLUTE_PATH }), Type.Null()])),
    ssh_forward_address: Type.Optional(Type.Union([Type.String({ minLength: 1, maxLength: 253 }), Type.Null()])),
    vcpu_overcommit: Type.Optional(Type.Integer({ minimum: 1, maximum: 64 })),
    memory_overcommit: Type.Optional(Type.Number({ minimum: 0.1, maximum: 64 })),
  },
  { additionalProperties: false },
);
export type HostConfig = Static<typeof HostEntry>;
const HOST_KEYS = Object.keys(HostEntry.properties);

/** Says what is wrong with a `hosts:` list: each entry, then names and URIs unique. */
function checkHosts(v: unknown): string | null {
  if (!Array.isArray(v)) return `must be a list of hosts (name, uri, ...), got ${describeValue(v)}`;
  const names = new Set<string>();
  const uris = new Set<string>();
  for (const [i, h] of v.entries()) {
    const at = `hosts[${i}]`;
    if (typeof h !== "object" || h === null || Array.isArray(h)) return `${at} must be a mapping with name and uri, got ${describeValue(h)}`;
    const entry = h as Record<string, unknown>;
    for (const k of Object.keys(entry)) if (!HOST_KEYS.includes(k)) return `${at}: unknown key ${JSON.stringify(k)} (known: ${HOST_KEYS.join(", ")})`;
    if (typeof entry.name !== "string" || !new RegExp(HOST_NAME_PATTERN).test(entry.name)) {
      return `${at}.name must be a DNS label (lower-case letters, digits and '-', up to 63), got ${describeValue(entry.name)}`;
    }
    if (typeof entry.uri !== "string" || !LIBVIRT_URI_RE.test(entry.uri)) return `${at}.uri must be a libvirt URI such as qemu+tls://host/system, got ${describeValue(entry.uri)}`;
    if (names.has(entry.name)) return `${at}.name ${JSON.stringify(entry.name)} is used twice`;
    if (uris.has(entry.uri)) return `${at}.uri ${JSON.stringify(entry.uri)} is used twice (two names for one host)`;
    names.add(entry.name);
    uris.add(entry.uri);
    const error = Value.Errors(HostEntry, entry).First();
    if (error) return `${at}${error.path.replaceAll("/", ".")}: ${error.message}, got ${describeValue(error.value)}`;
  }
  return null;
}

export const CONFIG_SCHEMA = Section({
  server: Section({
    bind_address: Str({
      default: "127.0.0.1:8765",
      env: "RCLOUD_SERVER_BIND",
      check: checkBindAddress,
      expected: "host:port, port 1-65535; an IPv6 host in brackets ([::1]:8765)",
      description: "address the API listens on, host:port ([::1]:8765 for IPv6)",
    }),
    workers: Int(1, 1024, { default: 4, env: "RCLOUD_WORKERS", description: "worker count (accepted for compatibility with the Rust rcloud)" }),
    idle_timeout_s: Int(1, 255, { default: 30, description: "seconds an idle connection (or a slow read request) may stay open; VM operations are exempt" }),
    public_names: List(Type.String(), {
      default: [],
      expected: "a list of host names or IP addresses (no port)",
      check: (v) => checkEach(v, checkPublicName),
      description: "names clients may reach the API by (Host header) besides the bind address and localhost",
    }),
    allowed_origins: List(Type.String(), {
      default: [],
      expected: "a list of origins (scheme://host[:port])",
      check: (v) => checkEach(v, checkOrigin),
      description: "origins of web pages other than rcloud's own that may call the API",
    }),
    max_body_bytes: Int(1024, 128 * 1024 * 1024, { default: 1024 * 1024, description: "largest request body accepted, in bytes; a larger one is answered 413 unread" }),
    state_dir: Path({
      defaultFrom: defaultStateDir,
      defaultText: '`"/var/lib/rcloud"` when running as root, else `"$HOME/.local/share/rcloud"`',
      description: "directory where rcloud keeps what libvirt cannot hold for it (cordoned hosts)",
    }),
    tls: Section({
      cert_file: Path({ nullable: true, default: null, description: "HTTPS certificate (PEM); null = plain HTTP" }),
      key_file: Path({ nullable: true, default: null, description: "HTTPS private key (PEM); null = plain HTTP" }),
    }),
  }),
  kdevops: Section({
    // May be relative: resolved against the config file's directory (or the working directory for KDEVOPS_ROOT).
    config_path: NonEmpty({
      nullable: true,
      default: null,
      env: "KDEVOPS_ROOT",
      description: "kdevops checkout whose extra_vars.yaml is read (enables the extra_vars layer)",
    }),
    extra_vars_file: NonEmpty({ default: "extra_vars.yaml", description: "file name (or absolute path) of the extra_vars file inside config_path" }),
  }),
  driver: OneOf(["libvirt", "qemu"], {
    default: "qemu",
    defaultText: '`"libvirt"` if a libvirt URI is configured anywhere (libvirt.uri, extra_vars, RCLOUD_LIBVIRT_URI), else `"qemu"`',
    env: "RCLOUD_DRIVER",
    description: "VM driver: libvirt or qemu",
  }),
  libvirt: Section({
    uri: Str({
      default: "qemu:///system",
      env: "RCLOUD_LIBVIRT_URI",
      pattern: LIBVIRT_URI_RE,
      expected: "a libvirt URI such as qemu:///system or qemu+ssh://host/system (scheme://...)",
      description: "libvirt connection URI, e.g. qemu:///system",
    }),
    storage_pool_name: Str({
      default: "rcloud",
      env: "RCLOUD_STORAGE_POOL_NAME",
      pattern: POOL_NAME_RE,
      expected: "1-64 characters of A-Z a-z 0-9 _ . -",
      description: "name of rcloud's libvirt storage pool",
    }),
    storage_pool_path: Path({
      default: "/var/lib/libvirt/images/rcloud",
      env: "RCLOUD_STORAGE_POOL_PATH",
      description: "directory of rcloud's storage pool (absolute)",
    }),
    domain_type: OneOf(["auto", "kvm", "qemu"], { default: "auto", env: "RCLOUD_DOMAIN_TYPE", description: "libvirt domain type: auto, kvm or qemu (TCG)" }),
    console_log_dir: Path({ nullable: true, default: null, description: "host directory for serial console logs; null = the storage pool, next to the disks" }),
    busy_poll_us: Int(0, 10000, { default: 0, description: "busy-poll window of the RPC client while two or more calls are outstanding (µs; 0 = off)" }),
    slow_call_spacing_ms: Int(0, 1000, { default: 10, description: "growth step of the window for slow libvirt calls, ms; 0 = no window" }),
    max_slow_calls: Int(1, 1000, { default: 20, description: "the most slow libvirt calls in flight per host: that libvirtd's max_workers" }),
    call_timeout_s: Int(0, 3600, { default: 60, description: "deadline of quick libvirt calls (lookups, XML, state), seconds; 0 = none" }),
    slow_call_timeout_s: Int(0, 86400, {
      default: 0,
      description: "deadline of worker-holding libvirt calls (domain start, volume creation), seconds; 0 = none while keepalive answers",
    }),
    keepalive_interval_s: Int(0, 3600, { default: 5, description: "ping libvirtd after this many idle seconds; 0 = no keepalive of our own" }),
    keepalive_count: Int(1, 100, { default: 3, description: "libvirtd is declared dead after keepalive_interval_s × keepalive_count seconds without a packet" }),
  }),
  hosts: List(HostEntry, {
    default: [],
    check: checkHosts,
    expected: "a list of hosts, each a mapping with name and uri (and optional labels, storage_pool_path, base_images_dir, kernel_dir, ssh_forward_address, vcpu_overcommit, memory_overcommit)",
    description: "libvirt hosts rcloud places VMs on; empty = the one host of libvirt.uri",
  }),
  placement: Section({
    policy: OneOf(PLACEMENT_POLICIES, { default: "spread", env: "RCLOUD_PLACEMENT_POLICY", description: "how a host is chosen: spread (least memory allocated, as a fraction) or pack (most)" }),
  }),
  images: Section({
    base_images_dir: Path({
      default: "/var/lib/libvirt/images/kdevops/guestfs/base_images",
      env: "RCLOUD_BASE_IMAGES_DIR",
      description: "directory of base images (absolute)",
    }),
  }),
  qemu: Section({
    binary: NonEmpty({ default: "qemu-system-x86_64", env: "RCLOUD_QEMU_BINARY", description: "QEMU system emulator for the qemu driver" }),
    state_dir: Path({
      defaultFrom: defaultStateDir,
      defaultText: '`"/var/lib/rcloud"` when running as root, else `"$HOME/.local/share/rcloud"`',
      env: "RCLOUD_STATE_DIR",
      description: "state directory of the qemu driver (absolute)",
    }),
    accel: OneOf(["auto", "kvm", "tcg"], { default: "auto", env: "RCLOUD_QEMU_ACCEL", description: "qemu driver accelerator: auto, kvm or tcg" }),
    run_as: Str({
      nullable: true,
      default: "auto",
      pattern: LOGIN_USER_RE, // useradd's rule, as for the guest's login user
      expected: "auto or a user name (a-z 0-9 _ -, up to 32 characters)",
      env: "RCLOUD_QEMU_RUN_AS",
      description: "user the qemu driver runs QEMU as when rcloud is root: auto (rcloud-qemu if it exists), a user name, or null (rcloud's own)",
    }),
  }),
  vm_defaults: Section({
    vcpus: Int(VM_LIMITS.vcpus.min, VM_LIMITS.vcpus.max, { default: 2, description: "vCPUs of a new VM when the request does not say" }),
    memory_mb: Int(VM_LIMITS.memoryMb.min, VM_LIMITS.memoryMb.max, { default: 2048, description: "memory of a new VM when the request does not say, MiB" }),
    root_disk_gb: Int(VM_LIMITS.diskGb.min, VM_LIMITS.diskGb.max, { default: 20, description: "root disk size of a new VM when the request does not say, GiB" }),
    network_mode: OneOf(NETWORK_MODES, { default: "bridge", env: "RCLOUD_NETWORK_MODE", description: "default network mode: bridge or user" }),
    network_bridge: NonEmpty({ default: "default", env: "RCLOUD_NETWORK_BRIDGE", description: "libvirt network new VMs attach to in bridge mode" }),
    user_network_restrict: Bool({
      default: false,
      env: "RCLOUD_USER_NET_RESTRICT",
      description: "restrict user-mode networking to the host (no outbound traffic)",
    }),
    on_panic: OneOf(ON_PANIC_ACTIONS, {
      default: "preserve",
      description: "what a guest panic (pvpanic) does to a VM whose create leaves on_panic out: dump (memory saved as an ELF core next to its disks, VM kept halted), restart, stop, preserve (kept halted)",
    }),
    disk_format: OneOf(["qcow2", "raw"], { default: "qcow2", description: "root disk format: a qcow2 overlay on the base image, or a raw copy" }),
    disk_driver: OneOf(DISK_BUSES, { default: "virtio", description: "disk bus" }),
    ssh_user: Str({
      default: "kdevops",
      expected: "a Unix user name other than root (a lower-case letter or _, then lower-case letters, digits, _ or -; up to 32)",
      // The API refuses a create with a user cloud-init cannot make; refuse it at start-up instead.
      check: loginUserProblem,
      description: "user created in the guest for SSH access",
    }),
    template: Path({ nullable: true, default: null, env: "RCLOUD_TEMPLATE", description: "custom domain XML template (absolute path)" }),
    kernel_dir: Path({
      nullable: true,
      default: null,
      env: "RCLOUD_KERNEL_DIR",
      description: "directory direct-kernel-boot files must live under (absolute); enables the feature",
    }),
    max_kernel_bytes: Int(1024 * 1024, 4 * 1024 * 1024 * 1024, {
      default: 512 * 1024 * 1024,
      description: "largest kernel or initrd a VM may be sent (PUT /vms/{id}/kernel, /initrd), bytes; server.max_body_bytes does not apply to these",
    }),
    share_dirs: List(Type.String({ format: ABSOLUTE_PATH }), {
      default: [],
      expected: "a list of absolute directory paths",
      description: "directories whose subdirectories VMs may share (shares[].host_path); empty: sharing is off",
    }),
    on_crash: OneOf(ON_CRASH, {
      default: "stop",
      description: "when a VM's QEMU process dies (killed, out of memory): restart it (a failed start is tried again after 2, 10 and 30 s), leave it stopped, or preserve it as crashed (each with crash_reason)",
    }),
    stop_timeout_s: Int(1, 3600, { default: 60, description: "seconds a graceful stop waits before forcing the guest off" }),
    pool_reserve_mb: Int(0, 1048576, {
      default: 512,
      description: "free space a storage pool keeps for thin disks to grow into: a create that would leave less is refused (507 insufficient_storage), MiB",
    }),
    max_extra_disks: Int(0, VM_LIMITS.extraDisksMax, { default: 8, description: "most extra disks per VM" }),
    vcpu_overcommit: Int(1, 64, { default: 16, description: "vCPUs a host's VMs may have in all, per host CPU (VMs not stopped, creates in flight)" }),
    memory_overcommit: Num(0.1, 64, { default: 1, description: "a host's VMs may have its memory times this in all (a ratio; VMs not stopped)" }),
  }),
  events: Section({
    buffer: Int(100, 1_000_000, { default: 10_000, description: "events kept for resuming a stream (GET /events?since=ID, Last-Event-ID)" }),
    subscriber_buffer: Int(10, 1_000_000, { default: 1_000, description: "events a stream consumer may fall behind before it is cut off" }),
  }),
  logging: Section({
    level: OneOf(["debug", "info", "warn", "error"], { default: "info", env: "RCLOUD_LOG_LEVEL", description: "log level: debug, info, warn or error" }),
    format: OneOf(["json", "text"], { default: "json", env: "RCLOUD_LOG_FORMAT", description: "log format: json or text" }),
  }),
  auth: Section({
    enabled: key(Type.Union([Type.Literal("auto"), Type.Boolean()]), {
      default: "auto",
      expected: "auto, true or false",
      description: "API tokens required: auto = when bind_address is not a loopback address",
    }),
    tokens_file: Path({
      default: DEFAULT_TOKENS_FILE,
      env: "RCLOUD_TOKENS_FILE",
      description: "API tokens file (JSON of hashed tokens; rcloud token create/list/revoke edit it)",
    }),
    metrics_open: Bool({ default: false, description: "serve /metrics without a token while auth is on" }),
    quotas: key(Type.Record(Type.String({ pattern: PROJECT_PATTERN }), Quota, { additionalProperties: false }), {
      default: {},
      check: checkQuotas,
      expected: "a mapping of project names to quotas",
      description: "per-project limits; a missing limit is unlimited",
    }),
    default_quota: key(Quota, {
      nullable: true,
      default: null,
      check: checkQuota,
      expected: `a quota (${QUOTA_KEYS.join(", ")})`,
      description: "limits of projects not listed in quotas; null = unlimited",
    }),
  }),
});

export type RcloudConfig = Static<typeof CONFIG_SCHEMA>;
export type Driver = RcloudConfig["driver"];
export type NetworkMode = RcloudConfig["vm_defaults"]["network_mode"];
export type DiskFormat = RcloudConfig["vm_defaults"]["disk_format"];
export type DiskDriver = RcloudConfig["vm_defaults"]["disk_driver"];
export type LogLevel = RcloudConfig["logging"]["level"];
export type LogFormat = RcloudConfig["logging"]["format"];

/** Keys accepted in the file that set another key (the design document put base_images_dir under `libvirt:`). */
export const ALIASES: Readonly<Record<string, string>> = { "libvirt.base_images_dir": "images.base_images_dir" };

export const isSection = (s: TSchema): s is TObject => s.section === true;

/** Every key's schema by dotted name, in schema order. */
export const LEAVES: ReadonlyMap<string, KeySchema> = (() => {
  const out = new Map<string, KeySchema>();
  const walk = (section: TObject, prefix: string): void => {
    for (const [name, child] of Object.entries(section.properties)) {
      if (isSection(child)) walk(child, `${prefix + name}.`);
      else out.set(prefix + name, child as KeySchema);
    }
  };
  walk(CONFIG_SCHEMA, "");
  return out;
})();

/** The environment variable names the schema declares (a type: ENV_VARS.RCLOUD_WORKERS type-checks). */
export type EnvVarName = EnvNames<typeof CONFIG_SCHEMA>;
type EnvNames<T> = T extends { env: infer N extends string } ? N : T extends TObject<infer P> ? { [K in keyof P]: EnvNames<P[K]> }[keyof P] : never;

/** `/var/lib/rcloud` for root, else `$HOME/.local/share/rcloud`. */
function defaultStateDir(env: Env): string {
  if (process.getuid?.() === 0) return "/var/lib/rcloud";
  const home = env.HOME !== undefined && posix.isAbsolute(env.HOME) ? env.HOME : homedir();
  return posix.join(home, ".local/share/rcloud");
}
