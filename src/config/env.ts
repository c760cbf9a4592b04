/**
 * Environment variables that override configuration (the highest layer), declared by the `env`
 * option of their key in schema.ts (docs/configuration.md lists them). KDEVOPS_ROOT and the first
 * RCLOUD_* variables are the Rust rcloud's and keep their meaning. An empty variable counts as unset.
 */
import { valueType } from "./checks.ts";
import { ConfigError } from "./errors.ts";
import { type EnvVarName, LEAVES } from "./schema.ts";

export type { EnvVarName };

export interface EnvVarSpec {
  /** Dotted configuration key the variable sets. */
  readonly key: string;
  readonly description: string;
}

export const ENV_VARS = Object.fromEntries(
  [...LEAVES].flatMap(([key, schema]) => (schema.env === undefined ? [] : [[schema.env, { key, description: schema.description }]])),
) as Readonly<Record<EnvVarName, EnvVarSpec>>;

export interface EnvSetting {
  key: string;
  value: unknown;
  name: string;
}

/** Settings from the environment, converted to the key's type (range checks come later). */
export function envSettings(env: Record<string, string | undefined>): EnvSetting[] {
  const out: EnvSetting[] = [];
  for (const [key, schema] of LEAVES) {
    const name = schema.env;
    const raw = name === undefined ? undefined : env[name];
    if (name === undefined || raw === undefined || raw === "") continue;
    const type = valueType(schema).type;
    const invalid = (words: string) => new ConfigError(key, `must be ${words}, got ${JSON.stringify(raw)}`, `environment variable ${name}`);
    const text = raw.trim();
    let value: unknown = raw;
    if (type === "integer" || type === "number") {
      if (!(type === "integer" ? /^[0-9]+$/ : /^[0-9]+(\.[0-9]+)?$/).test(text)) throw invalid(type === "integer" ? "an integer" : "a number");
      value = Number(text);
    } else if (type === "boolean") {
      const v = text.toLowerCase();
      if (["1", "true", "yes"].includes(v)) value = true;
      else if (["0", "false", "no"].includes(v)) value = false;
      else throw invalid("1, true, yes, 0, false or no");
    }
    out.push({ key, value, name });
  }
  return out;
}
