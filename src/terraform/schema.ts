/**
 * A small schema DSL and its two projections: the tfplugin6 Schema message (for
 * GetProviderSchema) and the implied cty type (for encoding values).
 */
import type { CtyType } from "./cty.ts";

export type Nesting = "SINGLE" | "LIST" | "SET" | "MAP";

export interface Attr {
  name: string;
  description: string;
  type?: CtyType;
  /** Protocol-6 nested attributes (`x = { ... }` / `x = [{ ... }]`). */
  nested?: { nesting: Nesting; attributes: Attr[] };
  required?: boolean;
  optional?: boolean;
  computed?: boolean;
  sensitive?: boolean;
}

export interface BlockSchema {
  version: number;
  description: string;
  attributes: Attr[];
}

export function attrType(a: Attr): CtyType {
  if (a.type) return a.type;
  if (!a.nested) throw new Error(`attribute ${a.name} has neither type nor nested`);
  const obj = objectType(a.nested.attributes);
  switch (a.nested.nesting) {
    case "SINGLE":
      return obj;
    case "LIST":
      return ["list", obj];
    case "SET":
      return ["set", obj];
    case "MAP":
      return ["map", obj];
  }
}

export function objectType(attrs: Attr[]): CtyType {
  return ["object", Object.fromEntries(attrs.map((a) => [a.name, attrType(a)]))];
}

export const impliedType = (s: BlockSchema): CtyType => objectType(s.attributes);

/** The proto message shapes we send (field names as in tfplugin6.8.proto). */
export interface ProtoAttribute {
  name: string;
  type: Buffer;
  nested_type: { attributes: ProtoAttribute[]; nesting: Nesting } | null;
  description: string;
  description_kind: "MARKDOWN";
  required: boolean;
  optional: boolean;
  computed: boolean;
  sensitive: boolean;
}
export interface ProtoSchema {
  version: number;
  block: { version: number; attributes: ProtoAttribute[]; block_types: never[]; description: string; description_kind: "MARKDOWN" };
}

function protoAttr(a: Attr): ProtoAttribute {
  return {
    name: a.name,
    // Exactly one of type / nested_type; invalid type JSON makes Terraform panic.
    type: a.nested ? Buffer.alloc(0) : Buffer.from(JSON.stringify(a.type)),
    nested_type: a.nested ? { attributes: a.nested.attributes.map(protoAttr), nesting: a.nested.nesting } : null,
    description: a.description,
    description_kind: "MARKDOWN",
    required: a.required ?? false,
    optional: a.optional ?? false,
    computed: a.computed ?? false,
    sensitive: a.sensitive ?? false,
  };
}

export function toProtoSchema(s: BlockSchema): ProtoSchema {
  return {
    version: s.version,
    block: { version: s.version, attributes: s.attributes.map(protoAttr), block_types: [], description: s.description, description_kind: "MARKDOWN" },
  };
}
