/**
 * Parser for the XDR language (RFC 4506 §6) plus the rpcgen extensions libvirt uses
 * (`char`, `short`, their unsigned forms) and `/** ... *\/` doc comments, which carry
 * procedure annotations such as `@stream: read`.
 */

export type Primitive =
  | "int"
  | "uint"
  | "hyper"
  | "uhyper"
  | "bool"
  | "float"
  | "double"
  | "char"
  | "uchar"
  | "short"
  | "ushort";

export type BaseType = { kind: "prim"; prim: Primitive } | { kind: "opaque" } | { kind: "string" } | { kind: "ref"; name: string };

/** A size: a literal number, a constant's name, or null for an unbounded `<>`. */
export type Bound = number | string | null;

export type Declaration =
  | { name: string; base: BaseType; mode: "plain" }
  | { name: string; base: BaseType; mode: "optional" }
  | { name: string; base: BaseType; mode: "fixed"; bound: number | string }
  | { name: string; base: BaseType; mode: "var"; bound: Bound };

export interface EnumMember {
  name: string;
  value: number | string;
  doc: string | null;
}

export interface UnionCase {
  values: (number | string)[];
  arm: Declaration | null; // null = void
}

export type Definition =
  | { kind: "const"; name: string; value: number | string }
  | { kind: "typedef"; name: string; decl: Declaration }
  | { kind: "enum"; name: string; members: EnumMember[] }
  | { kind: "struct"; name: string; fields: Declaration[] }
  | {
      kind: "union";
      name: string;
      discriminant: Declaration;
      cases: UnionCase[];
      defaultArm: Declaration | null | undefined; // undefined = no default
    };

type Token =
  | { t: "ident"; v: string; line: number; doc: string | null }
  | { t: "number"; v: number; line: number; doc: string | null }
  | { t: "punct"; v: string; line: number; doc: string | null };

export class XdrSyntaxError extends Error {
  constructor(file: string, line: number, message: string) {
    super(`${file}:${line}: ${message}`);
  }
}

function tokenize(src: string, file: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  let line = 1;
  let pendingDoc: string | null = null;
  while (i < src.length) {
    const c = src[i]!;
    if (c === "\n") {
      line++;
      i++;
      continue;
    }
    if (c === " " || c === "\t" || c === "\r") {
      i++;
      continue;
    }
    if (c === "/" && src[i + 1] === "*") {
      const end = src.indexOf("*/", i + 2);
      if (end < 0) throw new XdrSyntaxError(file, line, "unterminated comment");
      const body = src.slice(i + 2, end);
      if (body.startsWith("*")) pendingDoc = body.slice(1);
      for (const ch of body) if (ch === "\n") line++;
      i = end + 2;
      continue;
    }
    if (/[A-Za-z_]/.test(c)) {
      let j = i + 1;
      while (j < src.length && /[A-Za-z0-9_]/.test(src[j]!)) j++;
      out.push({ t: "ident", v: src.slice(i, j), line, doc: pendingDoc });
      pendingDoc = null;
      i = j;
      continue;
    }
    if (/[0-9-]/.test(c)) {
      const m = /^-?(0x[0-9a-fA-F]+|[0-9]+)/.exec(src.slice(i));
      if (!m) throw new XdrSyntaxError(file, line, `bad number near '${src.slice(i, i + 10)}'`);
      const text = m[0];
      const neg = text.startsWith("-");
      const digits = neg ? text.slice(1) : text;
      const value = digits.startsWith("0x") ? parseInt(digits.slice(2), 16) : parseInt(digits, 10);
      out.push({ t: "number", v: neg ? -value : value, line, doc: null });
      i += text.length;
      continue;
    }
    if ("{}[]<>()=;:,*".includes(c)) {
      out.push({ t: "punct", v: c, line, doc: null });
      i++;
      continue;
    }
    throw new XdrSyntaxError(file, line, `unexpected character '${c}'`);
  }
  return out;
}

export function parseXdr(src: string, file: string): Definition[] {
  const toks = tokenize(src, file);
  let p = 0;

  const peek = (): Token | undefined => toks[p];
  const lineOf = (): number => toks[Math.min(p, toks.length - 1)]?.line ?? 0;
  const fail = (msg: string): never => {
    throw new XdrSyntaxError(file, lineOf(), msg);
  };
  const next = (): Token => toks[p++] ?? fail("unexpected end of file");
  const expect = (v: string): void => {
    const tok = next();
    if (tok.t !== "punct" || tok.v !== v) fail(`expected '${v}', got '${String(tok.v)}'`);
  };
  const isPunct = (v: string): boolean => {
    const tok = peek();
    return tok?.t === "punct" && tok.v === v;
  };
  const ident = (): string => {
    const tok = next();
    if (tok.t !== "ident") fail(`expected an identifier, got '${String(tok.v)}'`);
    return tok.v as string;
  };
  const value = (): number | string => {
    const tok = next();
    if (tok.t === "number" || tok.t === "ident") return tok.v;
    return fail(`expected a number or constant, got '${tok.v}'`);
  };

  const baseType = (): BaseType => {
    const word = ident();
    switch (word) {
      case "unsigned": {
        const tok = peek();
        if (tok?.t === "ident" && ["int", "hyper", "char", "short"].includes(tok.v)) {
          p++;
          const map: Record<string, Primitive> = { int: "uint", hyper: "uhyper", char: "uchar", short: "ushort" };
          return { kind: "prim", prim: map[tok.v]! };
        }
        return { kind: "prim", prim: "uint" };
      }
      case "int":
      case "hyper":
      case "bool":
      case "float":
      case "double":
      case "char":
      case "short":
        return { kind: "prim", prim: word };
      case "opaque":
        return { kind: "opaque" };
      case "string":
        return { kind: "string" };
      case "struct":
      case "enum":
      case "union":
        return { kind: "ref", name: ident() };
      default:
        return { kind: "ref", name: word };
    }
  };

  /** A declaration, or null for `void`. */
  const declaration = (): Declaration | null => {
    const tok = peek();
    if (tok?.t === "ident" && tok.v === "void") {
      p++;
      return null;
    }
    const base = baseType();
    if (isPunct("*")) {
      p++;
      return { name: ident(), base, mode: "optional" };
    }
    const name = ident();
    if (isPunct("[")) {
      p++;
      const bound = value();
      expect("]");
      if (base.kind === "string") fail("string cannot be a fixed-length array");
      return { name, base, mode: "fixed", bound };
    }
    if (isPunct("<")) {
      p++;
      const bound = isPunct(">") ? null : value();
      expect(">");
      return { name, base, mode: "var", bound };
    }
    if (base.kind === "opaque" || base.kind === "string") fail(`${name}: opaque and string need a size`);
    return { name, base, mode: "plain" };
  };

  const nonVoid = (): Declaration => declaration() ?? fail("void is not allowed here");

  const defs: Definition[] = [];
  while (p < toks.length) {
    const kw = ident();
    switch (kw) {
      case "const": {
        const name = ident();
        expect("=");
        defs.push({ kind: "const", name, value: value() });
        expect(";");
        break;
      }
      case "typedef": {
        const decl = nonVoid();
        defs.push({ kind: "typedef", name: decl.name, decl });
        expect(";");
        break;
      }
      case "enum": {
        const name = ident();
        expect("{");
        const members: EnumMember[] = [];
        while (!isPunct("}")) {
          const tok = peek();
          const doc = tok?.t === "ident" ? tok.doc : null;
          const memberName = ident();
          expect("=");
          members.push({ name: memberName, value: value(), doc });
          if (isPunct(",")) p++;
        }
        expect("}");
        expect(";");
        defs.push({ kind: "enum", name, members });
        break;
      }
      case "struct": {
        const name = ident();
        expect("{");
        const fields: Declaration[] = [];
        while (!isPunct("}")) {
          fields.push(nonVoid());
          expect(";");
        }
        expect("}");
        expect(";");
        defs.push({ kind: "struct", name, fields });
        break;
      }
      case "union": {
        const name = ident();
        const sw = ident();
        if (sw !== "switch") fail("expected 'switch'");
        expect("(");
        const discriminant = nonVoid();
        expect(")");
        expect("{");
        const cases: UnionCase[] = [];
        let defaultArm: Declaration | null | undefined;
        while (!isPunct("}")) {
          const word = ident();
          if (word === "case") {
            const values: (number | string)[] = [value()];
            expect(":");
            // Fall-through: `case 1: case 2: int x;`
            while (peek()?.t === "ident" && (peek() as { v: string }).v === "case") {
              p++;
              values.push(value());
              expect(":");
            }
            const arm = declaration();
            expect(";");
            cases.push({ values, arm });
          } else if (word === "default") {
            expect(":");
            defaultArm = declaration();
            expect(";");
          } else {
            fail(`expected 'case' or 'default', got '${word}'`);
          }
        }
        expect("}");
        expect(";");
        defs.push({ kind: "union", name, discriminant, cases, defaultArm });
        break;
      }
      default:
        fail(`unexpected '${kw}' at top level`);
    }
  }
  return defs;
}

/** Parses the `@key: value` lines of a doc comment. */
export function parseAnnotations(doc: string | null): Map<string, string> {
  const out = new Map<string, string>();
  if (!doc) return out;
  for (const m of doc.matchAll(/@([a-z_-]+)\s*:\s*([^\s*]+)/g)) out.set(m[1]!, m[2]!);
  return out;
}
