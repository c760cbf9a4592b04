/**
 * Emits TypeScript types, encoders, decoders and procedure tables from parsed XDR.
 * Output is deterministic: the same .x input gives the same bytes (a test checks it).
 */
import { parseAnnotations, type BaseType, type Declaration, type Definition } from "./parse.ts";

export interface SourceFile {
  /** Module name, e.g. "remote" for protocol/remote.x → remote.ts. */
  module: string;
  path: string;
  defs: Definition[];
}

/** Bounds applied to `<>` declarations: the protocol's own string and message limits. */
const UNBOUNDED_STRING = 4194304;
const UNBOUNDED_ARRAY = 33554432;

const PRIM_TS: Record<string, string> = {
  int: "number",
  uint: "number",
  char: "number",
  uchar: "number",
  short: "number",
  ushort: "number",
  hyper: "bigint",
  uhyper: "bigint",
  bool: "boolean",
  float: "number",
  double: "number",
};
// rpcgen puts char and short on the wire as 4-byte ints.
const PRIM_READ: Record<string, string> = {
  int: "r.int()",
  uint: "r.uint()",
  char: "r.int()",
  uchar: "r.uint()",
  short: "r.int()",
  ushort: "r.uint()",
  hyper: "r.hyper()",
  uhyper: "r.uhyper()",
  bool: "r.bool()",
  float: "r.float()",
  double: "r.double()",
};
const PRIM_WRITE: Record<string, string> = {
  int: "w.int",
  uint: "w.uint",
  char: "w.int",
  uchar: "w.uint",
  short: "w.int",
  ushort: "w.uint",
  hyper: "w.hyper",
  uhyper: "w.uhyper",
  bool: "w.bool",
  float: "w.float",
  double: "w.double",
};
const PRIM_SIZE: Record<string, number> = {
  int: 4,
  uint: 4,
  char: 4,
  uchar: 4,
  short: 4,
  ushort: 4,
  hyper: 8,
  uhyper: 8,
  bool: 4,
  float: 4,
  double: 8,
};

export function pascal(name: string): string {
  return name
    .toLowerCase()
    .split("_")
    .filter(Boolean)
    .map((s) => s[0]!.toUpperCase() + s.slice(1))
    .join("");
}

export function camel(name: string): string {
  const p = pascal(name);
  return p[0]!.toLowerCase() + p.slice(1);
}

interface Symbol {
  module: string;
  def: Definition;
}

export class Emitter {
  private readonly symbols = new Map<string, Symbol>();
  private readonly constValues = new Map<string, number>();
  private readonly minSizeMemo = new Map<string, number>();

  constructor(files: SourceFile[]) {
    for (const f of files) {
      for (const d of f.defs) {
        if (this.symbols.has(d.name)) throw new Error(`${f.path}: ${d.name} declared twice`);
        this.symbols.set(d.name, { module: f.module, def: d });
        if (d.kind === "enum") for (const m of d.members) this.symbols.set(m.name, { module: f.module, def: d });
      }
    }
    for (const f of files) {
      for (const d of f.defs) {
        if (d.kind === "const") this.constValues.set(d.name, this.resolveValue(d.value));
      }
    }
    for (const f of files) {
      for (const d of f.defs) {
        if (d.kind === "enum") for (const m of d.members) this.constValues.set(m.name, this.resolveValue(m.value));
      }
    }
  }

  private resolveValue(v: number | string): number {
    if (typeof v === "number") return v;
    const known = this.constValues.get(v);
    if (known !== undefined) return known;
    const sym = this.symbols.get(v);
    if (sym?.def.kind === "const") return this.resolveValue(sym.def.value);
    if (sym?.def.kind === "enum") {
      const m = sym.def.members.find((x) => x.name === v);
      if (m) return this.resolveValue(m.value);
    }
    throw new Error(`unknown constant ${v}`);
  }

  private lookup(name: string): Symbol {
    const s = this.symbols.get(name);
    if (!s) throw new Error(`unknown type ${name}`);
    return s;
  }

  /** Smallest number of wire bytes a value can take; bounds array counts before allocation. */
  private minSize(decl: Declaration): number {
    switch (decl.mode) {
      case "optional":
      case "var":
        return 4;
      case "fixed": {
        const n = this.resolveValue(decl.bound);
        if (decl.base.kind === "opaque") return (n + 3) & ~3;
        return n * this.baseMinSize(decl.base);
      }
      case "plain":
        return this.baseMinSize(decl.base);
    }
  }

  private baseMinSize(base: BaseType): number {
    if (base.kind === "prim") return PRIM_SIZE[base.prim]!;
    if (base.kind !== "ref") return 4;
    const memo = this.minSizeMemo.get(base.name);
    if (memo !== undefined) return memo;
    const d = this.lookup(base.name).def;
    let size = 4;
    if (d.kind === "struct") size = d.fields.reduce((s, f) => s + this.minSize(f), 0);
    else if (d.kind === "typedef") size = this.minSize(d.decl);
    else if (d.kind === "union") {
      const arms = [...d.cases.map((c) => c.arm), ...(d.defaultArm === undefined ? [] : [d.defaultArm])];
      size = 4 + Math.min(...arms.map((a) => (a ? this.minSize(a) : 0)));
    }
    this.minSizeMemo.set(base.name, size);
    return size;
  }

  private boundOf(decl: Declaration): string {
    if (decl.mode !== "var" && decl.mode !== "fixed") throw new Error("no bound");
    if (decl.bound === null) return String(decl.base.kind === "string" ? UNBOUNDED_STRING : UNBOUNDED_ARRAY);
    if (typeof decl.bound === "number") return String(decl.bound);
    this.resolveValue(decl.bound); // must exist
    return decl.bound;
  }

  // ---- per-module emission state ----
  private module = "";
  private imports = new Map<string, Set<string>>();

  private use(name: string, ...exports: string[]): void {
    const s = this.lookup(name);
    if (s.module === this.module) return;
    let set = this.imports.get(s.module);
    if (!set) this.imports.set(s.module, (set = new Set()));
    for (const e of exports) set.add(e);
  }

  private useConst(name: string): void {
    if (this.symbols.has(name)) this.use(name, name);
  }

  private baseTs(base: BaseType): string {
    switch (base.kind) {
      case "prim":
        return PRIM_TS[base.prim]!;
      case "opaque":
        return "Uint8Array";
      case "string":
        return "string";
      case "ref": {
        const d = this.lookup(base.name).def;
        if (d.kind === "enum") return "number";
        this.use(base.name, `type ${pascal(base.name)}`);
        return pascal(base.name);
      }
    }
  }

  tsType(decl: Declaration): string {
    const b = this.baseTs(decl.base);
    switch (decl.mode) {
      case "plain":
        return b;
      case "optional":
        return `${b} | null`;
      case "fixed":
      case "var":
        if (decl.base.kind === "opaque" || decl.base.kind === "string") return b;
        return b.includes("|") ? `(${b})[]` : `${b}[]`;
    }
  }

  private readBase(base: BaseType): string {
    switch (base.kind) {
      case "prim":
        return PRIM_READ[base.prim]!;
      case "ref": {
        const d = this.lookup(base.name).def;
        if (d.kind === "enum") {
          this.use(base.name, `${camel(base.name)}Values`);
          return `r.enumValue(${camel(base.name)}Values, "${base.name}")`;
        }
        this.use(base.name, `decode${pascal(base.name)}`);
        return `decode${pascal(base.name)}(r)`;
      }
      default:
        throw new Error("opaque/string need a size");
    }
  }

  private writeBase(base: BaseType, v: string): string {
    switch (base.kind) {
      case "prim":
        return `${PRIM_WRITE[base.prim]!}(${v});`;
      case "ref": {
        const d = this.lookup(base.name).def;
        if (d.kind === "enum") return `w.int(${v});`;
        this.use(base.name, `encode${pascal(base.name)}`);
        return `encode${pascal(base.name)}(w, ${v});`;
      }
      default:
        throw new Error("opaque/string need a size");
    }
  }

  /** Lines that decode `decl` and assign it to `target`. */
  decodeLines(decl: Declaration, target: string, indent: string): string[] {
    const { base } = decl;
    switch (decl.mode) {
      case "plain":
        return [`${indent}${target} = ${this.readBase(base)};`];
      case "optional":
        return [`${indent}${target} = r.bool() ? ${this.readBase(base)} : null;`];
      case "fixed": {
        const bound = this.boundOf(decl);
        this.useConst(bound);
        if (base.kind === "opaque") return [`${indent}${target} = r.opaqueFixed(${bound});`];
        return [
          `${indent}{`,
          `${indent}  const a: ${this.baseTs(base)}[] = [];`,
          `${indent}  for (let i = 0; i < ${bound}; i++) a.push(${this.readBase(base)});`,
          `${indent}  ${target} = a;`,
          `${indent}}`,
        ];
      }
      case "var": {
        const bound = this.boundOf(decl);
        this.useConst(bound);
        if (base.kind === "opaque") return [`${indent}${target} = r.opaqueVar(${bound});`];
        if (base.kind === "string") return [`${indent}${target} = r.string(${bound});`];
        return [
          `${indent}{`,
          `${indent}  const n = r.count(${bound}, ${this.baseMinSize(base)}, "${decl.name}");`,
          `${indent}  const a: ${this.baseTs(base)}[] = new Array(n);`,
          `${indent}  for (let i = 0; i < n; i++) a[i] = ${this.readBase(base)};`,
          `${indent}  ${target} = a;`,
          `${indent}}`,
        ];
      }
    }
  }

  /** Lines that encode the value expression `v` as `decl`. */
  encodeLines(decl: Declaration, v: string, indent: string): string[] {
    const { base } = decl;
    switch (decl.mode) {
      case "plain":
        return [`${indent}${this.writeBase(base, v)}`];
      case "optional":
        return [
          `${indent}if (${v} === null || ${v} === undefined) w.bool(false);`,
          `${indent}else {`,
          `${indent}  w.bool(true);`,
          `${indent}  ${this.writeBase(base, v)}`,
          `${indent}}`,
        ];
      case "fixed": {
        const bound = this.boundOf(decl);
        this.useConst(bound);
        if (base.kind === "opaque") return [`${indent}w.opaqueFixed(${v}, ${bound});`];
        return [
          `${indent}if (${v}.length !== ${bound}) throw new XdrEncodeError("BAD_VALUE", "${decl.name}: needs exactly " + ${bound} + " elements");`,
          `${indent}for (const e of ${v}) ${this.writeBase(base, "e")}`,
        ];
      }
      case "var": {
        const bound = this.boundOf(decl);
        this.useConst(bound);
        if (base.kind === "opaque") return [`${indent}w.opaqueVar(${v}, ${bound});`];
        if (base.kind === "string") return [`${indent}w.string(${v}, ${bound});`];
        return [`${indent}w.count(${v}.length, ${bound}, "${decl.name}");`, `${indent}for (const e of ${v}) ${this.writeBase(base, "e")}`];
      }
    }
  }

  private emitDef(d: Definition, out: string[]): void {
    switch (d.kind) {
      case "const":
        out.push(`export const ${d.name} = ${this.resolveValue(d.value)};`, "");
        return;
      case "enum": {
        out.push(`export const ${pascal(d.name)} = {`);
        for (const m of d.members) out.push(`  ${m.name}: ${this.resolveValue(m.value)},`);
        out.push("} as const;");
        const values = [...new Set(d.members.map((m) => this.resolveValue(m.value)))].sort((a, b) => a - b);
        out.push(`export const ${camel(d.name)}Values: ReadonlySet<number> = new Set([${values.join(", ")}]);`, "");
        return;
      }
      case "typedef": {
        const T = pascal(d.name);
        out.push(`export type ${T} = ${this.tsType(d.decl)};`);
        out.push(`export function decode${T}(r: XdrReader): ${T} {`);
        out.push(`  let v: ${T};`);
        out.push(...this.decodeLines(d.decl, "v", "  "));
        out.push("  return v;", "}");
        out.push(`export function encode${T}(w: XdrWriter, v: ${T}): void {`);
        out.push(...this.encodeLines(d.decl, "v", "  "));
        out.push("}", "");
        return;
      }
      case "struct": {
        const T = pascal(d.name);
        out.push(`export interface ${T} {`);
        for (const f of d.fields) out.push(`  ${f.name}: ${this.tsType(f)};`);
        out.push("}");
        out.push(`export function decode${T}(r: XdrReader): ${T} {`);
        if (d.fields.length === 0) out.push("  return {};");
        else {
          for (const f of d.fields) {
            out.push(`  let ${f.name}: ${this.tsType(f)};`);
            out.push(...this.decodeLines(f, f.name, "  "));
          }
          out.push(`  return { ${d.fields.map((f) => f.name).join(", ")} };`);
        }
        out.push("}");
        out.push(`export function encode${T}(w: XdrWriter, v: ${T}): void {`);
        for (const f of d.fields) out.push(...this.encodeLines(f, `v.${f.name}`, "  "));
        out.push("}", "");
        return;
      }
      case "union": {
        const T = pascal(d.name);
        const dn = d.discriminant.name;
        const arms: string[] = [];
        for (const c of d.cases) {
          const tag = c.values.map((x) => this.resolveValue(x)).join(" | ");
          arms.push(c.arm ? `{ ${dn}: ${tag}; ${c.arm.name}: ${this.tsType(c.arm)} }` : `{ ${dn}: ${tag} }`);
        }
        if (d.defaultArm !== undefined) {
          arms.push(d.defaultArm ? `{ ${dn}: number; ${d.defaultArm.name}: ${this.tsType(d.defaultArm)} }` : `{ ${dn}: number }`);
        }
        out.push(`export type ${T} =`);
        arms.forEach((a, i) => out.push(`  | ${a}${i === arms.length - 1 ? ";" : ""}`));
        out.push(`export function decode${T}(r: XdrReader): ${T} {`);
        out.push(`  const at = r.offset;`);
        out.push(`  let ${dn}: ${this.tsType(d.discriminant)};`);
        out.push(...this.decodeLines(d.discriminant, dn, "  "));
        out.push(`  switch (${dn}) {`);
        for (const c of d.cases) {
          for (const x of c.values) out.push(`    case ${this.resolveValue(x)}:`);
          if (c.arm) {
            out.push(`    {`);
            out.push(`      let ${c.arm.name}: ${this.tsType(c.arm)};`);
            out.push(...this.decodeLines(c.arm, c.arm.name, "      "));
            out.push(`      return { ${dn}, ${c.arm.name} } as ${T};`);
            out.push(`    }`);
          } else out.push(`      return { ${dn} } as ${T};`);
        }
        out.push(`    default:`);
        if (d.defaultArm === undefined) {
          out.push(`      throw new XdrDecodeError("BAD_UNION", "${d.name}: no arm for discriminant " + ${dn}, at);`);
        } else if (d.defaultArm) {
          out.push(`    {`);
          out.push(`      let ${d.defaultArm.name}: ${this.tsType(d.defaultArm)};`);
          out.push(...this.decodeLines(d.defaultArm, d.defaultArm.name, "      "));
          out.push(`      return { ${dn}, ${d.defaultArm.name} } as ${T};`);
          out.push(`    }`);
        } else out.push(`      return { ${dn} } as ${T};`);
        out.push("  }", "}");
        out.push(`export function encode${T}(w: XdrWriter, v: ${T}): void {`);
        out.push(...this.encodeLines(d.discriminant, `v.${dn}`, "  "));
        out.push(`  switch (v.${dn}) {`);
        for (const c of d.cases) {
          for (const x of c.values) out.push(`    case ${this.resolveValue(x)}:`);
          if (c.arm) {
            out.push(`    {`);
            out.push(`      const a = v as { ${c.arm.name}: ${this.tsType(c.arm)} };`);
            out.push(...this.encodeLines(c.arm, `a.${c.arm.name}`, "      "));
            out.push(`      return;`);
            out.push(`    }`);
          } else out.push(`      return;`);
        }
        out.push(`    default:`);
        if (d.defaultArm === undefined) {
          out.push(`      throw new XdrEncodeError("BAD_UNION", "${d.name}: no arm for discriminant " + (v as { ${dn}: unknown }).${dn});`);
        } else if (d.defaultArm) {
          out.push(`    {`);
          out.push(`      const a = v as { ${d.defaultArm.name}: ${this.tsType(d.defaultArm)} };`);
          out.push(...this.encodeLines(d.defaultArm, `a.${d.defaultArm.name}`, "      "));
          out.push(`      return;`);
          out.push(`    }`);
        } else out.push(`      return;`);
        out.push("  }", "}", "");
        return;
      }
    }
  }

  /** Procedure and message tables for every enum named `*_procedure`. */
  private emitProcedures(d: Definition & { kind: "enum" }, out: string[]): void {
    const procPrefix = d.members[0]?.name.replace(/PROC_.*$/, "PROC_");
    if (!procPrefix || !procPrefix.endsWith("PROC_")) throw new Error(`${d.name}: members must be named <PREFIX>PROC_<NAME>`);
    const progPrefix = procPrefix.slice(0, -"PROC_".length); // e.g. REMOTE_
    const structPrefix = progPrefix.toLowerCase(); // e.g. remote_
    const program = `${progPrefix}PROGRAM`;
    const version = `${progPrefix}PROTOCOL_VERSION`;
    this.useConst(program);
    this.useConst(version);
    const procs: string[] = [];
    const msgs: string[] = [];
    for (const m of d.members) {
      if (!m.name.startsWith(procPrefix)) throw new Error(`${m.name}: expected prefix ${procPrefix}`);
      const base = m.name.slice(procPrefix.length).toLowerCase();
      const key = camel(base);
      const num = this.resolveValue(m.value);
      const notes = parseAnnotations(m.doc);
      const has = (s: string): boolean => this.symbols.get(structPrefix + base + s)?.def.kind === "struct";
      const ref = (s: string): string => {
        const n = structPrefix + base + s;
        this.use(n, `type ${pascal(n)}`);
        return pascal(n);
      };
      if (has("_msg")) {
        const M = ref("_msg");
        this.use(structPrefix + base + "_msg", `decode${M}`);
        msgs.push(
          `  ${key}: defineMessage<${M}>({ name: "${m.name}", program: ${program}, version: ${version}, proc: ${num}, decode: decode${M} }),`,
        );
        continue;
      }
      const A = has("_args") ? ref("_args") : "void";
      const R = has("_ret") ? ref("_ret") : "void";
      if (A !== "void") this.use(structPrefix + base + "_args", `encode${A}`);
      if (R !== "void") this.use(structPrefix + base + "_ret", `decode${R}`);
      const stream = notes.get("stream");
      if (stream !== undefined && !["read", "write", "both"].includes(stream)) throw new Error(`${m.name}: bad @stream ${stream}`);
      procs.push(
        `  ${key}: defineProcedure<${A}, ${R}>({ name: "${m.name}", program: ${program}, version: ${version}, proc: ${num}, ` +
          `encodeArgs: ${A === "void" ? "null" : `encode${A}`}, decodeRet: ${R === "void" ? "null" : `decode${R}`}, ` +
          `stream: ${stream ? `"${stream}"` : "null"}, priority: ${notes.get("priority") === "high"} }),`,
      );
    }
    const tableName = camel(progPrefix.toLowerCase() + "procedures");
    out.push(`/** Every procedure of ${d.name}, callable through the RPC client. */`);
    out.push(`export const ${tableName} = {`, ...procs, "} as const;", "");
    if (msgs.length > 0) {
      out.push(`/** Messages (events) of ${d.name}, delivered with type MESSAGE. */`);
      out.push(`export const ${camel(progPrefix.toLowerCase() + "messages")} = {`, ...msgs, "} as const;", "");
    }
  }

  emit(file: SourceFile): string {
    this.module = file.module;
    this.imports = new Map();
    const body: string[] = [];
    let hasProcedures = false;
    let hasMessages = false;
    for (const d of file.defs) {
      this.emitDef(d, body);
      if (d.kind === "enum" && d.name.endsWith("_procedure")) {
        const before = body.length;
        this.emitProcedures(d, body);
        hasProcedures = true;
        hasMessages ||= body.slice(before).some((l) => l.includes("defineMessage<"));
      }
    }
    const text = body.join("\n");
    const xdr = ["XdrReader", "XdrWriter"];
    const runtime: string[] = [];
    if (text.includes("XdrDecodeError")) runtime.push("XdrDecodeError");
    if (text.includes("XdrEncodeError")) runtime.push("XdrEncodeError");
    const head = [
      `// Code generated by scripts/gen-protocol.ts from ${file.path}. DO NOT EDIT.`,
      "// Regenerate with: bun run gen:protocol",
      "/* eslint-disable */",
      "",
      `import type { ${xdr.join(", ")} } from "../../xdr/index.ts";`,
    ];
    if (runtime.length) head.push(`import { ${runtime.join(", ")} } from "../../xdr/errors.ts";`);
    if (hasProcedures) {
      head.push(`import { ${hasMessages ? "defineMessage, defineProcedure" : "defineProcedure"} } from "../define.ts";`);
    }
    for (const [mod, names] of [...this.imports.entries()].sort(([a], [b]) => a.localeCompare(b))) {
      const sorted = [...names].sort((a, b) => a.replace(/^type /, "").localeCompare(b.replace(/^type /, "")));
      head.push(`import { ${sorted.join(", ")} } from "./${mod}.ts";`);
    }
    // Unused readers/writers are fine for TS (type-only import).
    return [...head, "", text.trimEnd(), ""].join("\n");
  }
}
