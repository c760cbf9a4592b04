/**
 * kdevops extra_vars.yaml: loading, `{{ var }}` resolution and the mapping of its variables onto
 * rcloud keys.
 *
 * kdevops writes the file from Kconfig and Makefiles: one flat mapping whose
 * strings may hold unresolved Jinja references, three levels deep for the base-image directory:
 *   guestfs_base_image_dir    = "{{ guestfs_storage_dir }}/base_images"
 *   guestfs_storage_dir       = "{{ kdevops_storage_pool_path }}/guestfs"
 *   kdevops_storage_pool_path = "{{ libvirt_storage_pool_path }}/{{ kdevops_storage_pool_user }}"
 * Only plain `{{ name }}` references are supported. A name missing from the file falls back to
 * ROLE_DEFAULTS (kdevops role defaults, which are never written to the file); an unknown name, a
 * filter (`{{ x | default(y) }}`) or any other Jinja syntax (`{% ... %}`, `{# ... #}`, expressions)
 * is a ConfigError naming the variable. Nothing else is interpreted: `~` stays literal.
 */
import { posix } from "node:path";
import { ConfigError } from "./errors.ts";
import { nodeValue, parseYamlMapping, readTextFile } from "./yaml.ts";

/** kdevops role defaults used when a referenced variable is not in the file. */
export const ROLE_DEFAULTS: Readonly<Record<string, unknown>> = Object.freeze({
  // playbooks/roles/gen_nodes/defaults/main.yml
  libvirt_session_public_network_dev: "virbr0",
  libvirt_gdb_baseport: 1234,
  bootlinux_9p: false,
  // Kconfig defaults (LIBVIRT_STORAGE_POOL_PATH "CUSTOM_DEFAULT_DISTRO", KDEVOPS_STORAGE_POOL_USER)
  libvirt_storage_pool_path: "/var/lib/libvirt/images",
  kdevops_storage_pool_user: "kdevops",
});

const REF_RE = /\{\{(.*?)\}\}/gs;
const NAME_RE = /^\s*([A-Za-z_][A-Za-z0-9_]*)\s*$/;
const WHOLE_REF_RE = /^\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}$/;

/**
 * Resolves variables on demand, memoising results. `where(name)` says where a variable was defined
 * (file and line), for messages.
 */
export class ExtraVarsResolver {
  private readonly memo = new Map<string, unknown>();

  constructor(
    private readonly raw: Record<string, unknown>,
    private readonly sourceName: string | null = null,
    private readonly lineOf: ReadonlyMap<string, number> = new Map(),
  ) {}

  has(name: string): boolean {
    return Object.hasOwn(this.raw, name);
  }

  /** Where `name` is defined, for error messages. */
  where(name: string): string | null {
    if (this.sourceName === null) return null;
    const line = this.lineOf.get(name);
    return line === undefined ? this.sourceName : `${this.sourceName} line ${line}`;
  }

  /** The resolved value of a variable present in the file or in ROLE_DEFAULTS. */
  resolve(name: string): unknown {
    return this.resolveIn(name, []);
  }

  private resolveIn(name: string, chain: readonly string[]): unknown {
    if (this.memo.has(name)) return this.memo.get(name);
    const start = chain.indexOf(name);
    if (start >= 0) {
      const cycle = [...chain.slice(start), name].join(" -> ");
      const first = chain[start] ?? name;
      throw new ConfigError(first, `reference cycle ${cycle}`, this.where(first));
    }
    let value: unknown;
    if (this.has(name)) value = this.raw[name];
    else if (Object.hasOwn(ROLE_DEFAULTS, name)) value = ROLE_DEFAULTS[name];
    else {
      const referrer = chain[chain.length - 1] ?? name;
      throw new ConfigError(
        referrer,
        `references undefined variable '${name}' (not in the file and not a known kdevops role default)${via(chain)}`,
        this.where(referrer),
      );
    }
    if (typeof value === "string") value = this.render(name, value, [...chain, name]);
    this.memo.set(name, value);
    return value;
  }

  private render(name: string, text: string, chain: readonly string[]): unknown {
    const fail = (reason: string, hint = ""): never => {
      throw new ConfigError(name, `${reason}${via(chain.slice(0, -1))}${hint === "" ? "" : `; ${hint}`}`, this.where(name));
    };
    // A value that is exactly one reference keeps the referenced value's type (`"{{ port }}"` -> 22).
    const whole = WHOLE_REF_RE.exec(text);
    if (whole !== null) return this.resolveIn(whole[1] ?? "", chain);

    let out = "";
    let last = 0;
    for (const m of text.matchAll(REF_RE)) {
      const literal = text.slice(last, m.index);
      checkLiteral(literal, fail);
      out += literal;
      const inner = m[1] ?? "";
      const ref = NAME_RE.exec(inner);
      if (ref === null) {
        if (inner.includes("|")) fail(`Jinja filters are not supported: '{{${inner}}}'`, "write the plain value instead");
        fail(`unsupported Jinja expression '{{${inner}}}'`, "only plain {{ variable }} references are resolved");
      }
      const refName = ref?.[1] ?? "";
      out += embed(this.resolveIn(refName, chain), refName, fail);
      last = (m.index ?? 0) + m[0].length;
    }
    const rest = text.slice(last);
    checkLiteral(rest, fail);
    return out + rest;
  }
}

function via(chain: readonly string[]): string {
  return chain.length === 0 ? "" : ` (needed by ${chain.join(" -> ")})`;
}

function checkLiteral(s: string, fail: (reason: string, hint?: string) => never): void {
  if (s.includes("{%")) fail("Jinja statements ({% ... %}) are not supported");
  if (s.includes("{#")) fail("Jinja comments ({# ... #}) are not supported");
  if (s.includes("{{")) fail("unterminated Jinja expression ('{{' without '}}')");
}

/** Text of a resolved value embedded in a string, as Jinja would print it. */
function embed(v: unknown, name: string, fail: (reason: string, hint?: string) => never): string {
  if (typeof v === "string") return v;
  if (typeof v === "number") return String(v);
  if (typeof v === "boolean") return v ? "True" : "False";
  if (v === null || v === undefined) return "None";
  return fail(`'${name}' is a ${Array.isArray(v) ? "list" : "mapping"} and cannot be embedded in a string`);
}

/**
 * Resolves every `{{ name }}` reference in a flat extra_vars mapping. Non-string values pass
 * through unchanged (lists and mappings are not searched). Throws ConfigError on the first
 * unresolvable value.
 */
export function resolveExtraVars(raw: Record<string, unknown>, sourceName?: string): Record<string, unknown> {
  const r = new ExtraVarsResolver(raw, sourceName ?? null);
  const out: Record<string, unknown> = {};
  for (const name of Object.keys(raw)) out[name] = r.resolve(name);
  return out;
}

/** Reads and parses extra_vars.yaml; resolution is left to the caller (lazily, see extraVarsSettings). */
export function readExtraVars(file: string, key: string, source: string | null): ExtraVarsResolver {
  const text = readTextFile(file, "kdevops extra_vars file", key, source);
  const parsed = parseYamlMapping(text, file);
  const raw: Record<string, unknown> = {};
  const lines = new Map<string, number>();
  for (const e of parsed.entries) {
    raw[e.key] = nodeValue(e.node, parsed.doc);
    lines.set(e.key, e.line);
  }
  return new ExtraVarsResolver(raw, file, lines);
}

/**
 * extra_vars variables rcloud reads, per rcloud key; the first variable present (and not null or
 * empty) wins, as in the Rust rcloud. (docs/configuration.md shows them under each key.)
 *
 * | rcloud key                  | extra_vars variable(s)                                            |
 * |-----------------------------|-------------------------------------------------------------------|
 * | libvirt.uri                 | libvirt_uri, libvirt_system_uri                                   |
 * | libvirt.storage_pool_path   | kdevops_storage_pool_path + "/rcloud", else libvirt_storage_pool_path + "/rcloud" |
 * | images.base_images_dir      | guestfs_base_image_dir                                            |
 * | server.bind_address         | rcloud_server_bind                                                |
 * | server.workers              | rcloud_workers                                                    |
 * | vm_defaults.network_bridge  | libvirt_bridge_name, libvirt_session_public_network_dev           |
 * | vm_defaults.vcpus           | libvirt_vcpus_count                                               |
 * | vm_defaults.memory_mb       | libvirt_mem_mb                                                    |
 *
 * rcloud keeps its volumes in its own directory `rcloud` under the kdevops pool root
 * (`/var/lib/libvirt/images/kdevops/rcloud` with kdevops defaults), apart from guestfs's files.
 * Role defaults (ROLE_DEFAULTS) are used only to resolve references, never as mapped values.
 */
export const EXTRA_VARS_MAPPING: ReadonlyArray<{ key: string; vars: readonly string[]; transform?: (v: unknown) => unknown }> = [
  { key: "libvirt.uri", vars: ["libvirt_uri", "libvirt_system_uri"] },
  {
    key: "libvirt.storage_pool_path",
    vars: ["kdevops_storage_pool_path", "libvirt_storage_pool_path"],
    transform: (v) => (typeof v === "string" ? posix.join(v, "rcloud") : v),
  },
  { key: "images.base_images_dir", vars: ["guestfs_base_image_dir"] },
  { key: "server.bind_address", vars: ["rcloud_server_bind"] },
  { key: "server.workers", vars: ["rcloud_workers"], transform: intFromString },
  { key: "vm_defaults.network_bridge", vars: ["libvirt_bridge_name", "libvirt_session_public_network_dev"] },
  { key: "vm_defaults.vcpus", vars: ["libvirt_vcpus_count"], transform: intFromString },
  { key: "vm_defaults.memory_mb", vars: ["libvirt_mem_mb"], transform: intFromString },
];

/** kdevops writes Kconfig ints bare, but a quoted "8" from a Makefile is accepted too. */
function intFromString(v: unknown): unknown {
  return typeof v === "string" && /^[0-9]+$/.test(v.trim()) ? Number(v.trim()) : v;
}

export interface ExtraVarsSetting {
  key: string;
  value: unknown;
  /** `extra_vars variable <name> (<file> line N)`. */
  source: string;
}

/** The rcloud settings an extra_vars file provides, resolving only the variables they need. */
export function extraVarsSettings(r: ExtraVarsResolver): ExtraVarsSetting[] {
  const out: ExtraVarsSetting[] = [];
  for (const m of EXTRA_VARS_MAPPING) {
    for (const name of m.vars) {
      if (!r.has(name)) continue;
      const resolved = r.resolve(name);
      if (resolved === null || resolved === "") continue;
      out.push({ key: m.key, value: m.transform ? m.transform(resolved) : resolved, source: `from extra_vars variable ${name}, ${r.where(name) ?? "extra_vars"}` });
      break;
    }
  }
  return out;
}
