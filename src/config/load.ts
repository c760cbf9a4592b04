/**
 * Loading: built-in defaults < kdevops extra_vars.yaml < config file < environment, each value
 * checked with the key and the place it came from, the result deeply frozen.
 *
 * extra_vars.yaml is read only when `kdevops.config_path` (file) or KDEVOPS_ROOT (env) is set;
 * the file is `<config_path>/<kdevops.extra_vars_file>` and must then exist.
 */
import { dirname, resolve } from "node:path";
import type { TObject } from "@sinclair/typebox";
import { checkKey, closestMatch } from "./checks.ts";
import { envSettings } from "./env.ts";
import { ConfigError } from "./errors.ts";
import { extraVarsSettings, readExtraVars } from "./extra-vars.ts";
import { ALIASES, CONFIG_SCHEMA, isSection, LEAVES, type RcloudConfig } from "./schema.ts";
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

/** Built-in defaults from the schema (`driver` is computed by loadConfig: "qemu" when nothing configures a libvirt URI). */
function defaultSettings(env: Env): Map<string, unknown> {
  return new Map([...LEAVES].map(([key, schema]) => [key, schema.defaultFrom?.(env) ?? structuredClone(schema.default)]));
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
  const schema = LEAVES.get(key);
  if (schema === undefined) throw new ConfigError(key, "unknown key", source);
  const reason = checkKey(schema, value);
  if (reason !== null) throw new ConfigError(key, reason, source);
}

/** Reads a config file into dotted-key settings, rejecting unknown keys and ill-typed values. */
function readConfigFile(file: string): Map<string, Setting> {
  const parsed = parseYamlMapping(readTextFile(file, "config file"), file);
  const out = new Map<string, Setting>();
  walkSection(parsed, parsed.entries, CONFIG_SCHEMA, "", out);
  const rel = out.get("kdevops.config_path");
  if (rel !== undefined && typeof rel.value === "string") rel.value = resolve(dirname(file), rel.value);
  return out;
}

function walkSection(parsed: YamlMapping, entries: ReturnType<typeof mapEntries>, section: TObject, prefix: string, out: Map<string, Setting>): void {
  for (const e of entries) {
    const key = prefix + e.key;
    const source = `${parsed.file} line ${e.line}`;
    const alias = ALIASES[key];
    const node = Object.hasOwn(section.properties, e.key) ? section.properties[e.key] : undefined;
    if (node === undefined && alias === undefined) throw new ConfigError(key, unknownKeyReason(e.key, section, prefix), source);
    if (node !== undefined && isSection(node)) {
      const value = nodeValue(e.node, parsed.doc);
      if (value === null) continue; // `server:` with every key commented out
      if (typeof value !== "object" || Array.isArray(value)) {
        throw new ConfigError(key, `must be a section (a mapping of keys to values), got ${Array.isArray(value) ? "a list" : JSON.stringify(value)}`, source);
      }
      walkSection(parsed, mapEntries(e.node as NonNullable<typeof e.node>, parsed.doc, parsed.lines, parsed.file, `${key}.`), node, `${key}.`, out);
      continue;
    }
    const target = alias ?? key;
    if (out.has(target)) {
      const other = out.get(target)?.source ?? "";
      throw new ConfigError(key, `${target} is already set (${other}); ${key} is an alias of it, set only one`, source);
    }
    const value = nodeValue(e.node, parsed.doc);
    checkSetting(target, value, alias === undefined ? source : `${source}, as ${key}`);
    out.set(target, { value, source });
  }
}

function unknownKeyReason(name: string, section: TObject, prefix: string): string {
  const aliases = Object.keys(ALIASES).filter((a) => a.startsWith(prefix) && !a.slice(prefix.length).includes("."));
  const names = [...Object.keys(section.properties), ...aliases.map((a) => a.slice(prefix.length))];
  const near = closestMatch(name, names);
  if (near !== null) return `unknown key (did you mean ${near}?)`;
  // A known key in the wrong section (`vm_defaults.uri`).
  const elsewhere = [...LEAVES.keys()].find((k) => k.endsWith(`.${name}`) || k === name);
  if (elsewhere !== undefined) return `unknown key (did you mean ${elsewhere}?)`;
  const known = names.join(", ");
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

