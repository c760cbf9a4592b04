/**
 * Generates docs/configuration.md from the code: the keys and their types and bounds from
 * src/config/schema.ts (SCHEMA, LEAVES), the defaults from defaultConfig() (src/config/load.ts),
 * the environment variables from ENV_VARS (src/config/env.ts), the extra_vars.yaml variables from
 * EXTRA_VARS_MAPPING, and each key's description from the comments of config/rcloud.yaml.
 *
 *   bun scripts/gen-config-doc.ts            write docs/configuration.md
 *   bun scripts/gen-config-doc.ts --stdout   print it (test/deploy/config-doc.test.ts compares)
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { ENV_VARS, type EnvVarSpec } from "../src/config/env.ts";
import { EXTRA_VARS_MAPPING } from "../src/config/extra-vars.ts";
import { defaultConfig } from "../src/config/load.ts";
import { LEAVES, type LeafSpec, SCHEMA, type SchemaNode } from "../src/config/schema.ts";

/** What the string checks in schema.ts accept (functions cannot be described by introspection). */
const STRING_CHECKS: Record<string, string> = {
  "server.bind_address": "`host:port`, port 1-65535; an IPv6 host in brackets (`[::1]:8765`)",
  "libvirt.uri": "a libvirt URI (`scheme://...`, e.g. `qemu:///system`, `qemu+ssh://host/system`)",
  "libvirt.storage_pool_name": "1-64 characters of `A-Z a-z 0-9 _ . -`",
  "vm_defaults.ssh_user": "a user name: a letter or `_`, then letters, digits, `_ . -`",
  "qemu.run_as": "`auto` or a user name (`a-z 0-9 _ -`, up to 32 characters)",
};

/** Defaults computed at start-up, described rather than shown as one machine's value. */
const COMPUTED_DEFAULTS: Record<string, string> = {
  driver: '`"libvirt"` if a libvirt URI is configured anywhere (libvirt.uri, extra_vars, RCLOUD_LIBVIRT_URI), else `"qemu"`',
  "qemu.state_dir": '`"/var/lib/rcloud"` when running as root, else `"$HOME/.local/share/rcloud"`',
};

function allowed(key: string, spec: LeafSpec): string {
  const nullable = "nullable" in spec && spec.nullable === true ? "; or null" : "";
  // Leaves with their own checker say what they expect.
  if ("expected" in spec && typeof spec.expected === "string") return spec.expected + nullable;
  switch (spec.kind) {
    case "string": {
      if (spec.check === undefined) return `a string${nullable}`;
      const described = STRING_CHECKS[key] ?? (spec.check.name === "nonEmpty" ? "a non-empty string" : undefined);
      if (described === undefined) throw new Error(`gen-config-doc: describe the check of ${key} in STRING_CHECKS`);
      return described + nullable;
    }
    case "path":
      return `an absolute path${nullable}`;
    case "int":
      return `an integer, ${spec.min}-${spec.max}`;
    case "bool":
      return "`true` or `false`";
    case "enum":
      return spec.values.map((v) => `\`${v}\``).join(", ");
    default:
      throw new Error(`gen-config-doc: cannot describe ${key} (kind ${(spec as { kind: string }).kind})`);
  }
}

function shownDefault(key: string, value: unknown): string {
  return COMPUTED_DEFAULTS[key] ?? `\`${value === null ? "null" : JSON.stringify(value)}\``;
}

/** Dotted key -> the `##` comment lines above its commented-out line in config/rcloud.yaml. */
export function yamlComments(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  const stack: { indent: number; name: string }[] = [];
  let pending: string[] = [];
  let lastWasKey = false;
  for (const line of text.split("\n")) {
    const indent = line.length - line.trimStart().length;
    const t = line.trim();
    if (t === "") {
      pending = [];
      lastWasKey = false;
      continue;
    }
    if (t.startsWith("##")) {
      if (lastWasKey) pending = [];
      lastWasKey = false;
      pending.push(t.replace(/^##\s?/, ""));
      continue;
    }
    const section = /^([a-z_]+):\s*$/.exec(t);
    const key = /^#\s*([a-z_]+):/.exec(t);
    const name = section?.[1] ?? key?.[1];
    if (name === undefined) continue;
    while (stack.length > 0 && (stack[stack.length - 1]?.indent ?? 0) >= indent) stack.pop();
    if (section !== null) {
      stack.push({ indent, name });
      pending = [];
      lastWasKey = false;
      continue;
    }
    const dotted = [...stack.map((s) => s.name), name].join(".");
    // Only the file header has comments above the first section: not a key's description.
    if (stack.length > 0 || LEAVES.has(dotted)) out.set(dotted, [...pending]);
    lastWasKey = true;
  }
  return out;
}

export function generate(root: string): string {
  const comments = yamlComments(readFileSync(join(root, "config/rcloud.yaml"), "utf8"));
  // Values that do not depend on who runs the generator (COMPUTED_DEFAULTS covers the rest).
  const defaults = defaultConfig({ HOME: "/home/user" }) as unknown as Record<string, unknown>;
  const get = (key: string): unknown => key.split(".").reduce<unknown>((o, p) => (o as Record<string, unknown>)[p], defaults);
  const envOf = new Map<string, string[]>();
  for (const [name, spec] of Object.entries(ENV_VARS) as [string, EnvVarSpec][]) envOf.set(spec.key, [...(envOf.get(spec.key) ?? []), name]);
  const extraOf = new Map(EXTRA_VARS_MAPPING.map((m) => [m.key, m.vars]));
  const aliases: [string, string][] = [];
  const walk = (node: Record<string, SchemaNode>, prefix: string): void => {
    for (const [name, child] of Object.entries(node)) {
      if ("alias" in child) aliases.push([prefix + name, child.alias]);
      else if ("section" in child) walk(child.section, `${prefix + name}.`);
    }
  };
  walk(SCHEMA, "");
  for (const key of envOf.keys()) if (!LEAVES.has(key)) throw new Error(`gen-config-doc: ENV_VARS names unknown key ${key}`);

  const code = (s: string) => `\`${s}\``;
  const L: string[] = [];
  L.push(
    "<!-- Generated by scripts/gen-config-doc.ts from src/config/ and config/rcloud.yaml; do not edit. -->",
    "<!-- Regenerate: bun scripts/gen-config-doc.ts (test/deploy/config-doc.test.ts checks it is current). -->",
    "",
    "# Configuration reference",
    "",
    "rcloud reads its configuration from these layers, lowest to highest:",
    "",
    "1. built-in defaults (below);",
    "2. kdevops's `extra_vars.yaml`, read when `kdevops.config_path` or `KDEVOPS_ROOT` is set (the \"extra_vars\" lines below say which variables feed which key);",
    "3. the YAML file given with `rcloud serve --config FILE` (`/etc/rcloud/rcloud.yaml` under systemd; [config/rcloud.yaml](../config/rcloud.yaml) is a commented template);",
    "4. environment variables.",
    "",
    "Unknown keys, wrong types and out-of-range values are errors at start-up, naming the key and where the value came from. Paths must be absolute (`~` is not expanded). In YAML an empty value (`key:`) means null. An empty environment variable counts as unset.",
    "",
    "## Summary",
    "",
    "| Key | Default | Allowed values | Environment variable |",
    "| --- | --- | --- | --- |",
  );
  for (const [key, spec] of LEAVES) {
    const env = (envOf.get(key) ?? []).map(code).join(", ") || "—";
    L.push(`| ${code(key)} | ${shownDefault(key, get(key)).replaceAll("|", "\\|")} | ${allowed(key, spec).replaceAll("|", "\\|")} | ${env} |`);
  }
  if (aliases.length > 0) {
    L.push("", "Aliases (accepted in the file, set the other key; setting both is an error):", "");
    for (const [a, target] of aliases) L.push(`- ${code(a)} → ${code(target)}`);
  }
  L.push("", "## Keys", "");
  let section = "";
  for (const [key, spec] of LEAVES) {
    const top = key.includes(".") ? (key.split(".")[0] ?? "") : "";
    if (top !== section) {
      section = top;
      if (top !== "") L.push(`### ${code(top)}`, "");
    }
    L.push(`#### ${code(key)}`, "");
    const text = (comments.get(key) ?? []).join(" ").trim();
    if (text !== "") L.push(text, "");
    L.push(`- Default: ${shownDefault(key, get(key))}`, `- Allowed: ${allowed(key, spec)}`);
    const env = envOf.get(key);
    if (env !== undefined) {
      for (const name of env) L.push(`- Environment: ${code(name)} — ${(ENV_VARS as Record<string, EnvVarSpec>)[name]?.description ?? ""}`);
    }
    const extra = extraOf.get(key);
    if (extra !== undefined) L.push(`- extra_vars.yaml: ${extra.map(code).join(", ")} (the first one set)`);
    L.push("");
  }
  L.push(
    "## Environment variables",
    "",
    "| Variable | Key | Meaning |",
    "| --- | --- | --- |",
    ...(Object.entries(ENV_VARS) as [string, EnvVarSpec][]).map(([name, s]) => `| ${code(name)} | ${code(s.key)} | ${s.description} |`),
    "",
    "Integer variables take decimal digits; boolean ones `1`, `true`, `yes`, `0`, `false` or `no`.",
    "",
  );
  return L.join("\n");
}

if (import.meta.main) {
  const root = resolve(import.meta.dir, "..");
  const text = generate(root);
  if (process.argv.includes("--stdout")) process.stdout.write(text);
  else writeFileSync(join(root, "docs/configuration.md"), text);
}
