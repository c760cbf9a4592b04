/**
 * Loading: built-in defaults < kdevops extra_vars.yaml < config file < environment, each value
 * checked with the key and the place it came from, the result deeply frozen.
 *
 * extra_vars.yaml is read only when `kdevops.config_path` (file) or KDEVOPS_ROOT (env) is set;
 * the file is `<config_path>/<kdevops.extra_vars_file>` and must then exist.
 */
import { homedir } from "node:os";
import { dirname, posix, resolve } from "node:path";
import { envSettings } from "./env.ts";
import { ConfigError } from "./errors.ts";
import { extraVarsSettings, readExtraVars } from "./extra-vars.ts";
import { checkLeaf, closestMatch, LEAVES, type RcloudConfig, SCHEMA, type SchemaNode } from "./schema.ts";
import { mapEntries, nodeValue, parseYamlMapping, readTextFile, type YamlMapping } from "./yaml.ts";

type Env = Record<string, string | undefined>;

interface Setting {
  value: unknown;
  /** Where the value came from; null for a built-in default. */
  source: string | null;
}

export interface LoadOptions {
  /** Config file (`--config FILE`); relative to `cwd`. None: defaults, extra_vars and environment only. */
  file?: string | null;
  /** Defaults to process.env. */
  env?: Env;
  /** Base for relative paths given in `file` and KDEVOPS_ROOT; defaults to process.cwd(). */
  cwd?: string;
}

/** Built-in defaults (`driver` is computed by loadConfig: "qemu" when nothing configures a libvirt URI). */
function defaultSettings(env: Env): Map<string, unknown> {
  return new Map<string, unknown>([
    ["server.bind_address", "127.0.0.1:8765"],
    ["server.workers", 4],
    ["server.idle_timeout_s", 30],
    ["server.tls.cert_file", null],
    ["server.tls.key_file", null],
    ["kdevops.config_path", null],
    ["kdevops.extra_vars_file", "extra_vars.yaml"],
    ["driver", "qemu"],
    ["libvirt.uri", "qemu:///system"],
    ["libvirt.storage_pool_name", "rcloud"],
    ["libvirt.storage_pool_path", "/var/lib/libvirt/images/rcloud"],
    ["libvirt.domain_type", "auto"],
    ["libvirt.console_log_dir", null],
    ["libvirt.busy_poll_us", 200],
    ["libvirt.slow_call_spacing_ms", 10],
    ["libvirt.max_slow_calls", 20],
    ["libvirt.call_timeout_s", 60],
    ["libvirt.slow_call_timeout_s", 0],
    ["libvirt.keepalive_interval_s", 5],
    ["libvirt.keepalive_count", 3],
    ["images.base_images_dir", "/var/lib/libvirt/images/kdevops/guestfs/base_images"],
    ["qemu.binary", "qemu-system-x86_64"],
    ["qemu.accel", "auto"],
    ["qemu.state_dir", defaultStateDir(env)],
    ["vm_defaults.vcpus", 2],
    ["vm_defaults.memory_mb", 2048],
    ["vm_defaults.root_disk_gb", 20],
    ["vm_defaults.network_mode", "bridge"],
    ["vm_defaults.network_bridge", "default"],
    ["vm_defaults.user_network_restrict", false],
    ["vm_defaults.disk_format", "qcow2"],
    ["vm_defaults.disk_driver", "virtio"],
    ["vm_defaults.ssh_user", "kdevops"],
    ["vm_defaults.template", null],
    ["vm_defaults.kernel_dir", null],
    ["vm_defaults.stop_timeout_s", 60],
    ["vm_defaults.max_extra_disks", 8],
    ["vm_defaults.vcpu_overcommit", 4],
    ["logging.level", "info"],
    ["logging.format", "json"],
    ["auth.enabled", "auto"],
    ["auth.tokens_file", "/etc/rcloud/tokens.json"],
    ["auth.metrics_open", false],
    ["auth.quotas", {}],
    ["auth.default_quota", null],
  ]);
}

/** `/var/lib/rcloud` for root, else `$HOME/.local/share/rcloud`. */
function defaultStateDir(env: Env): string {
  if (process.getuid?.() === 0) return "/var/lib/rcloud";
  const home = env.HOME !== undefined && posix.isAbsolute(env.HOME) ? env.HOME : homedir();
  return posix.join(home, ".local/share/rcloud");
}

/** The built-in defaults (environment variables only feed computed defaults such as HOME; no overrides). */
export function defaultConfig(env: Env = process.env): RcloudConfig {
  return build(new Map([...defaultSettings(env)].map(([k, v]) => [k, { value: v, source: null }])));
}

export function loadConfig(opts: LoadOptions = {}): RcloudConfig {
  const env = opts.env ?? process.env;
  const cwd = opts.cwd ?? process.cwd();

  const fileSettings = opts.file == null ? new Map<string, Setting>() : readConfigFile(resolve(cwd, opts.file));
  const envLayer = new Map<string, Setting>();
  for (const s of envSettings(env)) {
    const source = `environment variable ${s.name}`;
    const value = s.key === "kdevops.config_path" && typeof s.value === "string" ? resolve(cwd, s.value) : s.value;
    checkSetting(s.key, value, source);
    envLayer.set(s.key, { value, source });
  }

  // extra_vars: located by the file and environment layers.
  const extraLayer = new Map<string, Setting>();
  const root = envLayer.get("kdevops.config_path") ?? fileSettings.get("kdevops.config_path");
  if (root !== undefined && typeof root.value === "string") {
    const name = fileSettings.get("kdevops.extra_vars_file")?.value ?? "extra_vars.yaml";
    const file = resolve(root.value, String(name));
    const resolver = readExtraVars(file, "kdevops.config_path", root.source);
    for (const s of extraVarsSettings(resolver)) extraLayer.set(s.key, { value: s.value, source: s.source });
  }

  const merged = new Map<string, Setting>();
  for (const [k, v] of defaultSettings(env)) merged.set(k, { value: v, source: null });
  for (const layer of [extraLayer, fileSettings, envLayer]) for (const [k, s] of layer) merged.set(k, s);

  // driver: explicit wins; otherwise libvirt when any layer configured a libvirt URI.
  if (!fileSettings.has("driver") && !envLayer.has("driver")) {
    const uriConfigured = [extraLayer, fileSettings, envLayer].some((l) => l.has("libvirt.uri"));
    merged.set("driver", { value: uriConfigured ? "libvirt" : "qemu", source: null });
  }

  for (const [key, s] of merged) checkSetting(key, s.value, s.source);
  return build(merged);
}

function checkSetting(key: string, value: unknown, source: string | null): void {
  const spec = LEAVES.get(key);
  if (spec === undefined) throw new ConfigError(key, "unknown key", source);
  const reason = checkLeaf(spec, value);
  if (reason !== null) throw new ConfigError(key, reason, source);
}

/** Reads a config file into dotted-key settings, rejecting unknown keys and ill-typed values. */
function readConfigFile(file: string): Map<string, Setting> {
  const parsed = parseYamlMapping(readTextFile(file, "config file"), file);
  const out = new Map<string, Setting>();
  walkSection(parsed, parsed.entries, SCHEMA, "", out);
  const rel = out.get("kdevops.config_path");
  if (rel !== undefined && typeof rel.value === "string") rel.value = resolve(dirname(file), rel.value);
  return out;
}

function walkSection(
  parsed: YamlMapping,
  entries: ReturnType<typeof mapEntries>,
  schema: Record<string, SchemaNode>,
  prefix: string,
  out: Map<string, Setting>,
): void {
  for (const e of entries) {
    const key = prefix + e.key;
    const source = `${parsed.file} line ${e.line}`;
    const node = schema[e.key];
    if (node === undefined || !Object.hasOwn(schema, e.key)) throw new ConfigError(key, unknownKeyReason(e.key, schema, prefix), source);
    if ("section" in node) {
      const value = nodeValue(e.node, parsed.doc);
      if (value === null) continue; // `server:` with every key commented out
      if (typeof value !== "object" || Array.isArray(value)) {
        throw new ConfigError(key, `must be a section (a mapping of keys to values), got ${Array.isArray(value) ? "a list" : JSON.stringify(value)}`, source);
      }
      walkSection(parsed, mapEntries(e.node as NonNullable<typeof e.node>, parsed.doc, parsed.lines, parsed.file, `${key}.`), node.section, `${key}.`, out);
      continue;
    }
    const target = "alias" in node ? node.alias : key;
    if (out.has(target)) {
      const other = out.get(target)?.source ?? "";
      throw new ConfigError(key, `${target} is already set (${other}); ${key} is an alias of it, set only one`, source);
    }
    const value = nodeValue(e.node, parsed.doc);
    checkSetting(target, value, "alias" in node ? `${source}, as ${key}` : source);
    out.set(target, { value, source });
  }
}

function unknownKeyReason(name: string, schema: Record<string, SchemaNode>, prefix: string): string {
  const near = closestMatch(name, Object.keys(schema));
  if (near !== null) return `unknown key (did you mean ${near}?)`;
  // A known key in the wrong section (`vm_defaults.uri`).
  const elsewhere = [...LEAVES.keys()].find((k) => k.endsWith(`.${name}`) || k === name);
  if (elsewhere !== undefined) return `unknown key (did you mean ${elsewhere}?)`;
  const known = Object.keys(schema).join(", ");
  return prefix === "" ? `unknown key (known sections: ${known})` : `unknown key (known keys: ${known})`;
}

/** Builds the nested, deeply frozen configuration object after the cross-key checks. */
function build(settings: Map<string, Setting>): RcloudConfig {
  const get = (k: string): unknown => settings.get(k)?.value ?? null;
  const cert = settings.get("server.tls.cert_file");
  const key = settings.get("server.tls.key_file");
  if ((cert?.value ?? null) !== null && (key?.value ?? null) === null) {
    throw new ConfigError("server.tls.key_file", "must be set when server.tls.cert_file is set (TLS needs both)", cert?.source ?? null);
  }
  if ((key?.value ?? null) !== null && (cert?.value ?? null) === null) {
    throw new ConfigError("server.tls.cert_file", "must be set when server.tls.key_file is set (TLS needs both)", key?.source ?? null);
  }
  const root: Record<string, unknown> = {};
  for (const k of LEAVES.keys()) {
    const parts = k.split(".");
    let obj = root;
    for (const p of parts.slice(0, -1)) obj = (obj[p] ??= {}) as Record<string, unknown>;
    obj[parts[parts.length - 1] ?? k] = get(k);
  }
  return deepFreeze(root) as unknown as RcloudConfig;
}

function deepFreeze<T>(o: T): T {
  if (o !== null && typeof o === "object") {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}

