/** The options every configuration key carries (schema.ts defines the keys; checks.ts applies them). */
import type { TSchema } from "@sinclair/typebox";

export type Env = Record<string, string | undefined>;

/** rcloud's keywords on a key's schema, next to TypeBox's own (minimum, pattern, ...); V is the key's value type. */
export interface KeyOptions<V = unknown> {
  /** One line: what the key sets (the doc and its table of environment variables). */
  description: string;
  /** Built-in default (the lowest layer); omitted only with `defaultFrom`. */
  default?: V | null;
  /** A default computed at start-up, e.g. from HOME; `defaultText` says how the doc shows it. */
  defaultFrom?: (env: Env) => V;
  /** The doc's words for a default that depends on the machine or on other layers. */
  defaultText?: string;
  /** Environment variable that sets the key (the highest layer). */
  env?: string;
  /** null is a valid value. */
  nullable?: boolean;
  /** What the key accepts, in words, where the type does not say it (doc, messages for null or a pattern). */
  expected?: string;
  /** A rule the type cannot express, run after the type check; returns the reason a value is wrong, or null. */
  check?: (value: unknown) => string | null;
}

/** A key's schema: TypeBox's type (a union with null when nullable) carrying the key's options. */
export type KeySchema = TSchema & KeyOptions;
