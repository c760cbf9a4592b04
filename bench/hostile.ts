/**
 * fast-check arbitraries of hostile input, shared by the API fuzzer (bench/fuzz.ts) and the
 * CLI and Terraform provider fuzz tests: the strings and values that break parsers, paths,
 * XML, templates and shells when they are pasted where they should not be.
 */
import fc from "fast-check";

/** Fixed nasties: traversal, NUL, XML and Liquid metacharacters, shell, format strings, odd numbers. */
export const NASTY_STRINGS: readonly string[] = [
  "",
  " ",
  "../../../../etc/passwd",
  "..%2f..%2fetc%2fpasswd",
  "..",
  ".",
  "/",
  "a/b",
  "\u0000",
  "a\u0000b",
  "%00",
  "<domain type='kvm'/>",
  "]]><!--",
  "<![CDATA[x]]>",
  "&amp;&lt;&#0;&#xD800;",
  "'\"><script>alert(1)</script>",
  "{{ 7 | times: 7 }}",
  "{% include '/etc/passwd' %}",
  "$(reboot)",
  "`id`",
  "; rm -rf /",
  "%s%s%s%n",
  "\r\n\r\nX-Injected: 1",
  "\ud800",
  "\udfff\ud800",
  "🙂🙃",
  "\u202e\u0645\u0631\u062d\u0628\u0627",
  "é",
  "NaN",
  "-1",
  "0",
  "1e309",
  "-0",
  "0x10",
  "9007199254740993",
  "true",
  "null",
  "[]",
  "{}",
  "vm-00000000",
  "vm-zzzzzzzz",
  "CON",
  "a".repeat(64),
  "x".repeat(70_000),
];

/** One string: a nasty one, a random unicode one, a long one, or nasties glued together. */
export function hostileString(): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom(...NASTY_STRINGS) },
    { weight: 2, arbitrary: fc.string({ unit: "grapheme", maxLength: 40 }) },
    { weight: 2, arbitrary: fc.string({ unit: "binary", maxLength: 40 }) },
    { weight: 1, arbitrary: fc.integer({ min: 256, max: 300_000 }).map((n) => "A".repeat(n)) },
    { weight: 1, arbitrary: fc.array(fc.constantFrom(...NASTY_STRINGS.slice(0, 30)), { minLength: 2, maxLength: 4 }).map((a) => a.join("")) },
  );
}

/** A JSON value of the wrong kind for anything: odd numbers, nesting, long arrays, nasty keys. */
export function hostileJson(): fc.Arbitrary<unknown> {
  const scalar = fc.oneof(
    hostileString(),
    fc.constantFrom(null, true, false, 0, -1, 1.5, -1e308, 1e308, 2 ** 53 + 2, -(2 ** 63), Number.MIN_VALUE),
    fc.integer(),
    fc.double({ noNaN: true }),
  );
  return fc.oneof(
    { weight: 3, arbitrary: scalar },
    { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 4 }) },
    { weight: 1, arbitrary: fc.integer({ min: 50, max: 5000 }).map((d) => nest(d)) },
    { weight: 1, arbitrary: fc.integer({ min: 1000, max: 60_000 }).map((n) => Array.from({ length: n }, (_, i) => i)) },
    { weight: 1, arbitrary: fc.dictionary(hostileString(), scalar, { maxKeys: 5 }) },
    { weight: 1, arbitrary: fc.constant(Object.fromEntries([["__proto__", { admin: true }], ["constructor", { prototype: { x: 1 } }]])) },
  );
}

/** `depth` arrays or objects inside each other. */
export function nest(depth: number): unknown {
  let v: unknown = "deep";
  for (let i = 0; i < depth; i++) v = i % 2 ? [v] : { a: v };
  return v;
}

/** A request body that is not JSON, or JSON-ish text that breaks parsers. */
export function hostileRawBody(): fc.Arbitrary<string> {
  return fc.oneof(
    fc.constantFrom(
      "{",
      "}{",
      '{"name":',
      "[".repeat(10_000),
      '{"a":1}garbage',
      "<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a SYSTEM 'file:///etc/passwd'>]><x>&a;</x>",
      "\u0000\u0000\u0000",
      '{"name":"\u0000"}',
      '{"name":"\\ud800"}',
      "name=x&image=y",
      "\ufeff{}",
      "null",
      "1e999999",
      '"' + "\\u0000".repeat(1000) + '"',
      "--boundary\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nx\r\n--boundary--",
    ),
    fc.string({ unit: "binary", maxLength: 200 }),
  );
}
