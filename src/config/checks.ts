/**
 * Checking one key's value against its schema (schema.ts) with TypeBox, and turning TypeBox's
 * first error into a reason a person can act on ("must be between 1 and 512, got 0"), plus the
 * small checks TypeBox cannot express (bind addresses, non-empty strings).
 */
import { posix } from "node:path";
import { FormatRegistry, type TSchema } from "@sinclair/typebox";
import { Value, ValueErrorType } from "@sinclair/typebox/value";
import type { KeySchema } from "./key-options.ts";

/** String format of path keys: absolute, and not starting with `~` (which nothing expands). */
export const ABSOLUTE_PATH = "rcloud-absolute-path";
if (!FormatRegistry.Has(ABSOLUTE_PATH)) FormatRegistry.Set(ABSOLUTE_PATH, (v) => !v.startsWith("~") && posix.isAbsolute(v));

/** Checks a value against a key's schema; returns the reason it is wrong, or null. */
export function checkKey(schema: KeySchema, value: unknown): string | null {
  if (value === null || value === undefined) {
    return schema.nullable === true ? null : `must be ${expected(schema)}, got no value (an empty value means null in YAML)`;
  }
  const type = valueType(schema);
  const error = Value.Errors(type, value).First();
  if (error === undefined) return schema.check?.(value) ?? null;
  const shown = describeValue(value);
  switch (error.path === "" ? error.type : null) {
    case ValueErrorType.Integer:
      return `must be an integer between ${type.minimum} and ${type.maximum}, got ${shown}`;
    case ValueErrorType.IntegerMinimum:
    case ValueErrorType.IntegerMaximum:
      return `must be between ${type.minimum} and ${type.maximum}, got ${shown}`;
    case ValueErrorType.Number:
      return `must be a number between ${type.minimum} and ${type.maximum}, got ${shown}`;
    case ValueErrorType.NumberMinimum:
    case ValueErrorType.NumberMaximum:
      return `must be between ${type.minimum} and ${type.maximum}, got ${shown}`;
    case ValueErrorType.Boolean:
      return `must be true or false, got ${shown}`;
    case ValueErrorType.String:
      return type.format === ABSOLUTE_PATH ? `must be an absolute path (string), got ${shown}` : `must be a string, got ${shown}`;
    case ValueErrorType.StringFormat:
      return String(value).startsWith("~") ? `must be an absolute path (~ is not expanded), got ${shown}` : `must be an absolute path, got ${shown}`;
  }
  // Patterns, enums and nested values: the key's own check explains if it can, else what it expects.
  return schema.check?.(value) ?? `must be ${expected(schema)}, got ${shown}`;
}

/** The schema a non-null value must match (a nullable key's schema is a union with null). */
export function valueType(schema: KeySchema): TSchema {
  return schema.nullable === true ? (schema.anyOf as TSchema[])[0] ?? schema : schema;
}

/** What a key accepts, in words: for messages, or `forDoc` for docs/configuration.md (code spans, "1-64", "; or null"). */
export function expected(schema: KeySchema, forDoc = false): string {
  const orNull = forDoc && schema.nullable === true ? "; or null" : "";
  return (schema.expected ?? typeWords(valueType(schema), forDoc)) + orNull;
}

function typeWords(type: TSchema, forDoc: boolean): string {
  const code = (v: unknown) => (forDoc ? `\`${v}\`` : String(v));
  const range = forDoc ? `, ${type.minimum}-${type.maximum}` : ` between ${type.minimum} and ${type.maximum}`;
  if (type.format === ABSOLUTE_PATH) return "an absolute path";
  if (type.type === "integer") return `an integer${range}`;
  if (type.type === "number") return `a number${range}`;
  if (type.type === "boolean") return `${code(true)} or ${code(false)}`;
  if (type.type === "string") return "a string";
  if (type.type === "array") return `a list, each ${typeWords(type.items as TSchema, forDoc)}`;
  const values = enumValues(type).map(code).join(", ");
  return forDoc ? values : `one of ${values}`;
}

/** The values of an enum key (a union of string literals). */
function enumValues(type: TSchema): string[] {
  return ((type.anyOf ?? []) as TSchema[]).map((t) => String(t.const));
}

export function nonEmpty(v: unknown): string | null {
  return String(v).trim() === "" ? "must not be empty" : null;
}

/** `host:port` with port 1-65535; IPv6 hosts in brackets. Returns a reason or null. */
export function checkBindAddress(value: unknown): string | null {
  const v = String(value);
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

/** A list whose every entry passes `check`; returns the first reason or null. */
export function checkEach(v: unknown, check: (entry: unknown) => string | null): string | null {
  if (!Array.isArray(v)) return `must be a list, got ${describeValue(v)}`;
  for (const entry of v) {
    const reason = check(entry);
    if (reason !== null) return reason;
  }
  return null;
}

/** A DNS name or IP address as it appears in a Host header, without port. */
export function checkPublicName(v: unknown): string | null {
  if (typeof v !== "string" || !/^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?)+$|^\[[0-9A-Fa-f:.]+\]$/.test(v) || v.length > 253) {
    return `must be a host name or IP address without port (IPv6 in brackets), got ${describeValue(v)}`;
  }
  return null;
}

/** A web origin exactly as browsers send it in the Origin header: scheme://host[:port], nothing more. */
export function checkOrigin(v: unknown): string | null {
  const shown = describeValue(v);
  if (typeof v !== "string") return `must be an origin such as https://rcloud.example.org, got ${shown}`;
  let url: URL;
  try {
    url = new URL(v);
  } catch {
    return `must be an origin such as https://rcloud.example.org, got ${shown}`;
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") return `must be an http or https origin, got ${shown}`;
  if (url.origin !== v.replace(/\/$/, "").toLowerCase()) return `must be just scheme://host[:port] (no path, lower case, no default port), e.g. ${url.origin}, got ${shown}`;
  return null;
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
