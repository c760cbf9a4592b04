/**
 * YAML reading shared by the config file and extra_vars.yaml: the default YAML 1.2 core schema
 * (which reads kdevops's `True`/`False` as booleans and leaves `yes`/`no` as strings), parse errors
 * as ConfigErrors with their line, and line numbers for keys so later errors can point at them.
 */
import { readFileSync } from "node:fs";
import { type Document, isAlias, isMap, isScalar, LineCounter, type Node, parseDocument } from "yaml";
import { ConfigError } from "./errors.ts";

export interface YamlMapping {
  /** Path of the file, for messages. */
  file: string;
  /** Entries in file order: key, value node (aliases resolved) and the 1-based line of the key. */
  entries: YamlEntry[];
  doc: Document;
  lines: LineCounter;
}

export interface YamlEntry {
  key: string;
  node: Node | null;
  line: number;
}

export function readTextFile(file: string, what: string, key = "", source: string | null = null): string {
  try {
    return readFileSync(file, "utf8");
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const reason =
      err.code === "ENOENT" ? `${what} not found` : err.code === "EISDIR" ? `${what} is a directory, not a file` : `cannot read ${what}: ${err.message}`;
    throw new ConfigError(key, key === "" ? reason : `${reason}: ${file}`, key === "" ? file : source);
  }
}

/** Parses `text` and requires a top-level mapping (an empty or all-comment document counts as an empty one). */
export function parseYamlMapping(text: string, file: string): YamlMapping {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false });
  const first = doc.errors[0];
  if (first !== undefined) {
    const pos = lines.linePos(first.pos[0]);
    const at = `line ${pos.line}, column ${pos.col}: `;
    throw new ConfigError("", `invalid YAML: ${at}${first.message.split("\n")[0]}`, file);
  }
  const contents = doc.contents;
  if (contents === null || (isScalar(contents) && contents.value === null)) return { file, entries: [], doc, lines };
  if (!isMap(contents)) throw new ConfigError("", "the top level must be a mapping of keys to values", file);
  return { file, entries: mapEntries(contents, doc, lines, file, ""), doc, lines };
}

/** Entries of a mapping node; keys must be plain scalars. `prefix` is the dotted path, for messages. */
export function mapEntries(map: Node, doc: Document, lines: LineCounter, file: string, prefix: string): YamlEntry[] {
  if (!isMap(map)) return [];
  const out: YamlEntry[] = [];
  for (const pair of map.items) {
    const k = pair.key;
    const line = k !== null && typeof k === "object" && "range" in k && Array.isArray(k.range) ? lines.linePos(k.range[0] as number).line : 0;
    if (!isScalar(k) || (typeof k.value !== "string" && typeof k.value !== "number" && typeof k.value !== "boolean")) {
      throw new ConfigError(prefix.replace(/\.$/, ""), `keys must be plain names`, `${file} line ${line}`);
    }
    let node = pair.value as Node | null;
    if (node !== null && isAlias(node)) node = (node.resolve(doc) as Node | undefined) ?? null;
    out.push({ key: String(k.value), node, line });
  }
  return out;
}

/** The JavaScript value of a node (null for a missing value). */
export function nodeValue(node: Node | null, doc: Document): unknown {
  if (node === null) return null;
  if (isScalar(node)) return node.value;
  return node.toJS(doc);
}
