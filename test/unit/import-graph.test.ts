/**
 * The layering rules of docs/architecture.md, checked on the real source tree: no import
 * cycle between folders of src/ (nor between files), and the CLI and the Terraform provider
 * reach the server only through the API (never src/vm/service.ts).
 */
import { describe, expect, test } from "bun:test";
import { readFileSync, readdirSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";

const root = resolve(import.meta.dir, "../..");
const src = join(root, "src");
const transpiler = new Bun.Transpiler({ loader: "ts" });

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sourceFiles(path);
    return /\.tsx?$/.test(name) && !name.endsWith(".d.ts") ? [path] : [];
  });
}

/** file (relative to src/) → the src/ files it imports (type-only imports included: they couple too). */
function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of sourceFiles(src)) {
    const code = readFileSync(file, "utf8");
    const deps = transpiler
      .scanImports(code)
      .map((i) => i.path)
      .filter((p) => p.startsWith("."))
      .map((p) => relative(src, resolve(dirname(file), p)))
      .filter((p) => /\.tsx?$/.test(p));
    graph.set(relative(src, file), deps);
  }
  // scanImports drops `import type`; add those from the text (type-only edges are still edges).
  for (const [file, deps] of graph) {
    const code = readFileSync(join(src, file), "utf8");
    for (const m of code.matchAll(/^\s*(?:import|export)\s+type\s[^;]*?from\s+["'](\.[^"']+)["']/gms)) {
      const p = relative(src, resolve(dirname(join(src, file)), m[1]!));
      if (!deps.includes(p)) deps.push(p);
    }
  }
  return graph;
}

/** The folder a file belongs to for layering: src/drivers/qemu/x.ts → drivers/qemu; src/main.ts → "" (the entry). */
function folderOf(file: string): string {
  return dirname(file) === "." ? "" : dirname(file);
}

/** Cycles in a directed graph (one per strongly connected component with more than one node or a self-loop). */
function cycles(edges: Map<string, Set<string>>): string[][] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  let next = 0;
  const visit = (v: string) => {
    index.set(v, next);
    low.set(v, next++);
    stack.push(v);
    onStack.add(v);
    for (const w of edges.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1 || edges.get(v)?.has(v)) found.push(scc.sort());
    }
  };
  for (const v of edges.keys()) if (!index.has(v)) visit(v);
  return found;
}

const graph = importGraph();

describe("import graph of src/", () => {
  test("the scanner sees the tree (a broken scan would pass every rule)", () => {
    expect(graph.size).toBeGreaterThan(50);
    expect(graph.get("main.ts")?.length).toBeGreaterThan(0);
  });

  test("no import cycle between folders", () => {
    const edges = new Map<string, Set<string>>();
    for (const [file, deps] of graph) {
      const from = folderOf(file);
      if (!edges.has(from)) edges.set(from, new Set());
      for (const d of deps) {
        const to = folderOf(d);
        // A folder may import its own sub-folders' files and vice versa only without a cycle;
        // same-folder imports are file-level business (next test).
        if (to !== from) edges.get(from)!.add(to);
      }
    }
    expect(cycles(edges)).toEqual([]);
  });

  test("no import cycle between files", () => {
    const edges = new Map<string, Set<string>>([...graph].map(([f, deps]) => [f, new Set(deps)]));
    expect(cycles(edges)).toEqual([]);
  });

  test("the CLI and the Terraform provider do not import the VM service", () => {
    const offenders = [...graph]
      .filter(([file]) => file.startsWith("cli/") || file.startsWith("terraform/"))
      .flatMap(([file, deps]) => deps.filter((d) => d.startsWith("vm/")).map((d) => `${file} → ${d}`));
    expect(offenders).toEqual([]);
  });
});
