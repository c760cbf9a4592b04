/**
 * cty values on the wire (Terraform's DynamicValue): msgpack against the schema's implied
 * type. Unknown values are msgpack extensions: Terraform writes a plain unknown as ext 0
 * (`d4 00 00`) and a refined one as ext 12; we read *any* extension as unknown and write
 * ext 0 only (returning refinements would oblige us to honour them at apply).
 */
import { decode, encode, ExtData } from "@msgpack/msgpack";

export type CtyType =
  | "string"
  | "number"
  | "bool"
  | "dynamic"
  | readonly ["list" | "set" | "map", CtyType]
  | readonly ["object", { readonly [attr: string]: CtyType }]
  | readonly ["tuple", readonly CtyType[]];

/** The single unknown value (refinements are dropped on decode). */
export class Unknown {
  static readonly value = new Unknown();
  private readonly brand = "unknown"; // a private field makes the type nominal
  private constructor() {}
  toString(): string {
    return "(unknown)";
  }
}
export const UNKNOWN = Unknown.value;

export type CtyValue = null | string | number | boolean | Unknown | CtyValue[] | CtyObject;
export interface CtyObject {
  [key: string]: CtyValue;
}

export const isUnknown = (v: unknown): v is Unknown => v instanceof Unknown;

/** The value if it is a string, else undefined (null, unknown, another type). */
export const str = (v: CtyValue | undefined): string | undefined => (typeof v === "string" ? v : undefined);
/** The value if it is a number, else undefined. */
export const num = (v: CtyValue | undefined): number | undefined => (typeof v === "number" ? v : undefined);
/** The value if it is a known object, else null. */
export const obj = (v: CtyValue | undefined): CtyObject | null => (v !== null && v !== undefined && typeof v === "object" && !Array.isArray(v) && !isUnknown(v) ? (v as CtyObject) : null);

/** True if the value contains no unknown anywhere. */
export function isWhollyKnown(v: CtyValue): boolean {
  if (isUnknown(v)) return false;
  if (Array.isArray(v)) return v.every(isWhollyKnown);
  if (v !== null && typeof v === "object") return Object.values(v).every(isWhollyKnown);
  return true;
}

export class CtyError extends Error {
  override readonly name = "CtyError";
}

const UNKNOWN_EXT = new ExtData(0, Uint8Array.of(0));

type Raw = unknown; // what @msgpack/msgpack or JSON.parse produced, before typing

function fromRaw(raw: Raw, type: CtyType, path: string, allowUnknown: boolean): CtyValue {
  if (raw instanceof ExtData) {
    if (!allowUnknown) throw new CtyError(`${path || "value"}: unknown value where none is allowed`);
    return UNKNOWN;
  }
  if (raw === null || raw === undefined) return null;
  if (type === "string") {
    if (typeof raw !== "string") throw new CtyError(`${path}: expected a string`);
    return raw;
  }
  if (type === "bool") {
    if (typeof raw !== "boolean") throw new CtyError(`${path}: expected a bool`);
    return raw;
  }
  if (type === "number") {
    // cty writes integers as ints, exact floats as float64 and anything else as a decimal string.
    const n = typeof raw === "number" ? raw : typeof raw === "bigint" || typeof raw === "string" ? Number(raw) : NaN;
    if (Number.isNaN(n)) throw new CtyError(`${path}: expected a number`);
    return n;
  }
  if (type === "dynamic") {
    // [type JSON, value]; we have no dynamic attributes, so keep the value as-is.
    if (!Array.isArray(raw) || raw.length !== 2) throw new CtyError(`${path}: malformed dynamic value`);
    const t = JSON.parse(new TextDecoder().decode(raw[0] as Uint8Array)) as CtyType;
    return fromRaw(raw[1], t, path, allowUnknown);
  }
  const [kind, elem] = type;
  switch (kind) {
    case "list":
    case "set": {
      if (!Array.isArray(raw)) throw new CtyError(`${path}: expected a ${kind}`);
      return raw.map((x, i) => fromRaw(x, elem, `${path}[${i}]`, allowUnknown));
    }
    case "tuple": {
      if (!Array.isArray(raw) || raw.length !== elem.length) throw new CtyError(`${path}: expected a tuple of ${elem.length}`);
      return raw.map((x, i) => fromRaw(x, elem[i] as CtyType, `${path}[${i}]`, allowUnknown));
    }
    case "map": {
      const m = asRecord(raw, path);
      return Object.fromEntries(Object.entries(m).map(([k, x]) => [k, fromRaw(x, elem, `${path}["${k}"]`, allowUnknown)]));
    }
    case "object": {
      const m = asRecord(raw, path);
      // Every attribute is present in the result; absent keys read as null.
      return Object.fromEntries(Object.entries(elem).map(([k, t]) => [k, fromRaw(m[k], t, path ? `${path}.${k}` : k, allowUnknown)]));
    }
  }
}

function asRecord(raw: Raw, path: string): Record<string, Raw> {
  if (raw === null || typeof raw !== "object" || Array.isArray(raw) || raw instanceof Uint8Array) {
    throw new CtyError(`${path || "value"}: expected an object`);
  }
  return raw as Record<string, Raw>;
}

function toRaw(v: CtyValue | undefined, type: CtyType, path: string): Raw {
  if (isUnknown(v)) return UNKNOWN_EXT;
  if (v === null || v === undefined) return null;
  if (type === "string" || type === "bool" || type === "number") {
    const want = type === "bool" ? "boolean" : type;
    if (typeof v !== want) throw new CtyError(`${path}: expected a ${type}, got ${JSON.stringify(v)}`);
    return v;
  }
  if (type === "dynamic") throw new CtyError(`${path}: dynamic values are not supported`);
  const [kind, elem] = type;
  switch (kind) {
    case "list":
    case "set":
    case "tuple": {
      if (!Array.isArray(v)) throw new CtyError(`${path}: expected a ${kind}`);
      return v.map((x, i) => toRaw(x, kind === "tuple" ? (elem[i] as CtyType) : elem, `${path}[${i}]`));
    }
    case "map":
    case "object": {
      if (typeof v !== "object" || Array.isArray(v)) throw new CtyError(`${path}: expected a ${kind}`);
      if (kind === "map") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, toRaw(x, elem, `${path}["${k}"]`)]));
      // Terraform rejects objects with missing attributes: emit every one.
      return Object.fromEntries(Object.entries(elem).map(([k, t]) => [k, toRaw(v[k], t, path ? `${path}.${k}` : k)]));
    }
  }
}

export function decodeMsgpack(bytes: Uint8Array, type: CtyType): CtyValue {
  return fromRaw(decode(bytes, { useBigInt64: true }), type, "", true);
}

export function encodeMsgpack(value: CtyValue, type: CtyType): Uint8Array {
  return encode(toRaw(value, type, ""), { ignoreUndefined: false });
}

/** The JSON form (stored state in UpgradeResourceState): no unknowns. */
export function decodeJson(bytes: Uint8Array | string, type: CtyType): CtyValue {
  const text = typeof bytes === "string" ? bytes : new TextDecoder().decode(bytes);
  return fromRaw(JSON.parse(text), type, "", false);
}
