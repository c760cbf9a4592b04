/**
 * The shape of rcloud's configuration: the `RcloudConfig` type, one spec per leaf key (type and
 * bounds) and the checks shared by the file, extra_vars and environment layers.
 */
import { posix } from "node:path";

export type Driver = "libvirt" | "qemu";
export type NetworkMode = "bridge" | "user" | "none";
export type DiskFormat = "qcow2" | "raw";
export type DiskDriver = "virtio" | "nvme" | "scsi" | "ide";
export type LogLevel = "debug" | "info" | "warn" | "error";
export type LogFormat = "json" | "text";

export interface RcloudConfig {
  server: {
    /** `host:port`, IPv6 as `[::1]:8765`. */
    bind_address: string;
    /** Accepted for compatibility with the Rust rcloud (actix worker threads); unused by Bun. */
    workers: number;
    /** Seconds an idle connection (or a slow read request) may stay open; VM operations are exempt. */
    idle_timeout_s: number;
    tls: { cert_file: string | null; key_file: string | null };
  };
  kdevops: {
    /** kdevops checkout holding extra_vars.yaml; null = do not read extra_vars. */
    config_path: string | null;
    extra_vars_file: string;
  };
  driver: Driver;
  libvirt: {
    uri: string;
    storage_pool_name: string;
    storage_pool_path: string;
    /** Domain type: auto (kvm when the host offers it, else TCG), kvm or qemu (TCG). */
    domain_type: "auto" | "kvm" | "qemu";
    /** Host directory for serial console logs; null = the storage pool, next to the disks. */
    console_log_dir: string | null;
    /** Busy-poll window of the RPC client while calls are outstanding (µs; 0 = off). */
    busy_poll_us: number;
    /** Growth step of the window for slow libvirt calls (domain starts, volume creation), ms; 0 = no window. */
    slow_call_spacing_ms: number;
    /** The most slow libvirt calls in flight per host: that libvirtd's max_workers. */
    max_slow_calls: number;
    /** Deadline of quick libvirt calls (lookups, XML, state), s; 0 = none. */
    call_timeout_s: number;
    /** Deadline of worker-holding libvirt calls (domain start, volume creation), s; 0 = none while keepalive answers. */
    slow_call_timeout_s: number;
    /** Ping libvirtd after this many idle seconds; 0 = no keepalive of our own. */
    keepalive_interval_s: number;
    /** libvirtd is declared dead after keepalive_interval_s × keepalive_count without a packet. */
    keepalive_count: number;
  };
  images: { base_images_dir: string };
  qemu: {
    binary: string;
    state_dir: string;
    /** Accelerator: auto (KVM when /dev/kvm is usable, else TCG), kvm or tcg. */
    accel: "auto" | "kvm" | "tcg";
  };
  vm_defaults: {
    vcpus: number;
    memory_mb: number;
    root_disk_gb: number;
    network_mode: NetworkMode;
    network_bridge: string;
    user_network_restrict: boolean;
    disk_format: DiskFormat;
    disk_driver: DiskDriver;
    ssh_user: string;
    /** Path of a custom domain XML template; null = built-in. */
    template: string | null;
    /** Directory under which direct-kernel-boot files must live; null = feature disabled. */
    kernel_dir: string | null;
    stop_timeout_s: number;
    max_extra_disks: number;
    /** vCPUs one VM may have per host CPU. */
    vcpu_overcommit: number;
  };
  logging: { level: LogLevel; format: LogFormat };
  auth: {
    /** auto: on when bind_address is not a loopback address. */
    enabled: "auto" | boolean;
    tokens_file: string;
    /** Serve /metrics without a token while auth is on. */
    metrics_open: boolean;
    /** Per-project limits; a missing limit is unlimited. */
    quotas: Readonly<Record<string, QuotaSpec>>;
    /** Limits of projects not listed in `quotas`; null = unlimited. */
    default_quota: QuotaSpec | null;
  };
}

export interface QuotaSpec {
  vms?: number | null;
  vcpus?: number | null;
  memory_mb?: number | null;
  disk_gb?: number | null;
}

export type LeafSpec =
  | { kind: "string"; nullable?: boolean; check?: (v: string) => string | null }
  | { kind: "path"; nullable?: boolean }
  | { kind: "int"; min: number; max: number }
  | { kind: "bool" }
  | { kind: "enum"; values: readonly string[] }
  /** Anything else (mappings, mixed types): `expected` for messages, `check` returns a reason or null. */
  | { kind: "custom"; nullable?: boolean; expected: string; check: (v: unknown) => string | null };

/** A section maps names to leaves, sub-sections or aliases (another leaf's dotted key). */
export type SchemaNode = { leaf: LeafSpec } | { section: Record<string, SchemaNode> } | { alias: string };

const leaf = (spec: LeafSpec): SchemaNode => ({ leaf: spec });
const section = (children: Record<string, SchemaNode>): SchemaNode => ({ section: children });

export const LIBVIRT_URI_RE = /^[a-z][a-z0-9+-]*:\/\//;
export const POOL_NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/;

export const SCHEMA: Record<string, SchemaNode> = {
  server: section({
    bind_address: leaf({ kind: "string", check: checkBindAddress }),
    workers: leaf({ kind: "int", min: 1, max: 1024 }),
    idle_timeout_s: leaf({ kind: "int", min: 1, max: 255 }),
    tls: section({ cert_file: leaf({ kind: "path", nullable: true }), key_file: leaf({ kind: "path", nullable: true }) }),
  }),
  kdevops: section({
    // May be relative: resolved against the config file's directory (or the working directory for KDEVOPS_ROOT).
    config_path: leaf({ kind: "string", nullable: true, check: nonEmpty }),
    extra_vars_file: leaf({ kind: "string", check: nonEmpty }),
  }),
  driver: leaf({ kind: "enum", values: ["libvirt", "qemu"] }),
  libvirt: section({
    uri: leaf({
      kind: "string",
      check: (v) => (LIBVIRT_URI_RE.test(v) ? null : `must be a libvirt URI such as qemu:///system (scheme://...), got ${JSON.stringify(v)}`),
    }),
    storage_pool_name: leaf({
      kind: "string",
      check: (v) => (POOL_NAME_RE.test(v) ? null : `must be 1-64 characters of A-Z a-z 0-9 _ . -, got ${JSON.stringify(v)}`),
    }),
    storage_pool_path: leaf({ kind: "path" }),
    domain_type: leaf({ kind: "enum", values: ["auto", "kvm", "qemu"] }),
    console_log_dir: leaf({ kind: "path", nullable: true }),
    busy_poll_us: leaf({ kind: "int", min: 0, max: 10000 }),
    slow_call_spacing_ms: leaf({ kind: "int", min: 0, max: 1000 }),
    max_slow_calls: leaf({ kind: "int", min: 1, max: 1000 }),
    call_timeout_s: leaf({ kind: "int", min: 0, max: 3600 }),
    slow_call_timeout_s: leaf({ kind: "int", min: 0, max: 86400 }),
    keepalive_interval_s: leaf({ kind: "int", min: 0, max: 3600 }),
    keepalive_count: leaf({ kind: "int", min: 1, max: 100 }),
    // The design document put the base-image directory under `libvirt:`.
    base_images_dir: { alias: "images.base_images_dir" },
  }),
  images: section({ base_images_dir: leaf({ kind: "path" }) }),
  qemu: section({
    binary: leaf({ kind: "string", check: nonEmpty }),
    state_dir: leaf({ kind: "path" }),
    accel: leaf({ kind: "enum", values: ["auto", "kvm", "tcg"] }),
  }),
  vm_defaults: section({
    vcpus: leaf({ kind: "int", min: 1, max: 512 }),
    memory_mb: leaf({ kind: "int", min: 64, max: 4194304 }),
    root_disk_gb: leaf({ kind: "int", min: 1, max: 65536 }),
    network_mode: leaf({ kind: "enum", values: ["bridge", "user", "none"] }),
    network_bridge: leaf({ kind: "string", check: nonEmpty }),
    user_network_restrict: leaf({ kind: "bool" }),
    disk_format: leaf({ kind: "enum", values: ["qcow2", "raw"] }),
    disk_driver: leaf({ kind: "enum", values: ["virtio", "nvme", "scsi", "ide"] }),
    ssh_user: leaf({
      kind: "string",
      check: (v) => (/^[A-Za-z_][A-Za-z0-9_.-]*$/.test(v) ? null : `must be a user name (letters, digits, _ . -), got ${JSON.stringify(v)}`),
    }),
    template: leaf({ kind: "path", nullable: true }),
    kernel_dir: leaf({ kind: "path", nullable: true }),
    stop_timeout_s: leaf({ kind: "int", min: 1, max: 3600 }),
    max_extra_disks: leaf({ kind: "int", min: 0, max: 32 }),
    vcpu_overcommit: leaf({ kind: "int", min: 1, max: 64 }),
  }),
  logging: section({
    level: leaf({ kind: "enum", values: ["debug", "info", "warn", "error"] }),
    format: leaf({ kind: "enum", values: ["json", "text"] }),
  }),
  auth: section({
    enabled: leaf({
      kind: "custom",
      expected: "auto, true or false",
      check: (v) => (v === "auto" || v === true || v === false ? null : `must be auto, true or false, got ${describeValue(v)}`),
    }),
    tokens_file: leaf({ kind: "path" }),
    metrics_open: leaf({ kind: "bool" }),
    quotas: leaf({ kind: "custom", expected: "a mapping of project names to quotas", check: checkQuotas }),
    default_quota: leaf({ kind: "custom", nullable: true, expected: "a quota (vms, vcpus, memory_mb, disk_gb)", check: checkQuota }),
  }),
};

const QUOTA_KEYS = ["vms", "vcpus", "memory_mb", "disk_gb"];
export const PROJECT_NAME_RE = /^[a-z0-9]([a-z0-9_-]{0,62}[a-z0-9])?$/;

/** A quota: a mapping of any of vms, vcpus, memory_mb, disk_gb to non-negative integers (null = unlimited). */
export function checkQuota(v: unknown): string | null {
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

/** Every leaf's spec by dotted key (aliases excluded). */
export const LEAVES: ReadonlyMap<string, LeafSpec> = (() => {
  const out = new Map<string, LeafSpec>();
  const walk = (node: Record<string, SchemaNode>, prefix: string): void => {
    for (const [name, child] of Object.entries(node)) {
      const key = prefix + name;
      if ("leaf" in child) out.set(key, child.leaf);
      else if ("section" in child) walk(child.section, `${key}.`);
    }
  };
  walk(SCHEMA, "");
  return out;
})();

function nonEmpty(v: string): string | null {
  return v.trim() === "" ? "must not be empty" : null;
}

/** `host:port` with port 1-65535; IPv6 hosts in brackets. Returns a reason or null. */
export function checkBindAddress(v: string): string | null {
  const shown = JSON.stringify(v);
  let host: string;
  let port: string;
  if (v.startsWith("[")) {
    const m = /^\[([0-9A-Fa-f:.]+(?:%[A-Za-z0-9_.-]+)?)\]:([^:]*)$/.exec(v);
    if (m === null) return `must be host:port with an IPv6 host in brackets, e.g. [::1]:8765, got ${shown}`;
    host = m[1] ?? "";
    port = m[2] ?? "";
    if (!host.includes(":")) return `brackets are only for IPv6 hosts, got ${shown}`;
  } else {
    const colons = v.split(":").length - 1;
    if (colons === 0) return `must be host:port, e.g. 127.0.0.1:8765, got ${shown}`;
    if (colons > 1) return `an IPv6 host must be in brackets, e.g. [::1]:8765, got ${shown}`;
    const i = v.indexOf(":");
    host = v.slice(0, i);
    port = v.slice(i + 1);
    if (host === "") return `host is missing (use 0.0.0.0:PORT to listen on all IPv4 addresses), got ${shown}`;
    if (!/^[A-Za-z0-9.-]+$/.test(host)) return `host must be a host name or IP address, got ${shown}`;
  }
  if (!/^[0-9]{1,5}$/.test(port)) return `port must be a number between 1 and 65535, got ${shown}`;
  const n = Number(port);
  if (n < 1 || n > 65535) return `port must be between 1 and 65535, got ${shown}`;
  return null;
}

/** Checks a value against a leaf spec; returns the reason it is wrong, or null. */
export function checkLeaf(spec: LeafSpec, value: unknown): string | null {
  const shown = describeValue(value);
  if (value === null || value === undefined) {
    if ((spec.kind === "string" || spec.kind === "path" || spec.kind === "custom") && spec.nullable === true) return null;
    return `must be ${expected(spec)}, got no value (an empty value means null in YAML)`;
  }
  switch (spec.kind) {
    case "string":
      if (typeof value !== "string") return `must be a string, got ${shown}`;
      return spec.check?.(value) ?? null;
    case "path":
      if (typeof value !== "string") return `must be an absolute path (string), got ${shown}`;
      if (value.startsWith("~")) return `must be an absolute path (~ is not expanded), got ${shown}`;
      if (!posix.isAbsolute(value)) return `must be an absolute path, got ${shown}`;
      return null;
    case "int":
      if (typeof value !== "number" || !Number.isInteger(value)) return `must be an integer between ${spec.min} and ${spec.max}, got ${shown}`;
      if (value < spec.min || value > spec.max) return `must be between ${spec.min} and ${spec.max}, got ${value}`;
      return null;
    case "bool":
      return typeof value === "boolean" ? null : `must be true or false, got ${shown}`;
    case "enum":
      if (typeof value === "string" && spec.values.includes(value)) return null;
      return `must be one of ${spec.values.join(", ")}, got ${shown}`;
    case "custom":
      return spec.check(value);
  }
}

function expected(spec: LeafSpec): string {
  switch (spec.kind) {
    case "string":
      return "a string";
    case "path":
      return "an absolute path";
    case "int":
      return `an integer between ${spec.min} and ${spec.max}`;
    case "bool":
      return "true or false";
    case "enum":
      return `one of ${spec.values.join(", ")}`;
    case "custom":
      return spec.expected;
  }
}

export function describeValue(v: unknown): string {
  if (v === null || v === undefined) return "null";
  if (typeof v === "string") return JSON.stringify(v);
  if (typeof v === "number" || typeof v === "boolean") return String(v);
  if (Array.isArray(v)) return "a list";
  if (typeof v === "object") return "a mapping";
  return typeof v;
}

/** The closest candidate by edit distance, if close enough to be a plausible typo. */
export function closestMatch(name: string, candidates: readonly string[]): string | null {
  let best: string | null = null;
  let bestDist = Infinity;
  for (const c of candidates) {
    const d = editDistance(name.toLowerCase(), c.toLowerCase());
    if (d < bestDist) {
      bestDist = d;
      best = c;
    }
  }
  if (best === null) return null;
  const limit = Math.max(2, Math.floor(Math.max(name.length, best.length) / 3));
  // Also accept a candidate that contains the name or vice versa (`pool_path` -> `storage_pool_path`).
  if (bestDist <= limit) return best;
  const contained = candidates.find((c) => name.length >= 4 && (c.includes(name) || name.includes(c)));
  return contained ?? null;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      cur.push(Math.min((prev[j] ?? 0) + 1, (cur[j - 1] ?? 0) + 1, (prev[j - 1] ?? 0) + cost));
    }
    prev = cur;
  }
  return prev[b.length] ?? 0;
}
