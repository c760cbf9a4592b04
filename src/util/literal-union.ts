/**
 * A TypeBox union of string literals built from one of the value lists (src/api-types/values.ts):
 * the API's schemas (Elysia's `t` is TypeBox) and the configuration schema list the values
 * from the list itself, so the OpenAPI document and the config checks follow it.
 */
import { type SchemaOptions, type TLiteral, type TUnion, Type } from "@sinclair/typebox";

/** One literal schema per value, as a tuple (a plain array type would make the union's static type `never`). */
export type TLiterals<V extends readonly string[]> = { -readonly [K in keyof V]: TLiteral<V[K]> };

export function literalUnion<const V extends readonly string[]>(values: V, options?: SchemaOptions): TUnion<TLiterals<V>> {
  return Type.Union(values.map((v) => Type.Literal(v)), options) as unknown as TUnion<TLiterals<V>>;
}
