/**
 * Every package the code imports is declared in package.json: a package that only arrives as
 * some other package's dependency can change or vanish with that package's next release, and
 * `npm ci --omit=dev` (the deployment) installs only `dependencies`, so what src/ imports must
 * be there. Specifiers come from Bun's own import scanner, not a regex.
 */
import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { extname, join, relative, resolve } from "node:path";

const root = resolve(import.meta.dir, "../..");
const SCANNED_DIRS = ["src", "scripts", "bench", "test"];
const LOADERS: Record<string, "ts" | "tsx" | "js" | "jsx"> = { ".ts": "ts", ".mts": "ts", ".cts": "ts", ".tsx": "tsx", ".js": "js", ".mjs": "js", ".cjs": "js", ".jsx": "jsx" };

/** The npm package a bare specifier names ("@scope/name/sub" → "@scope/name"), or null when it names none. */
export function packageOf(specifier: string): string | null {
  if (specifier.startsWith(".") || specifier.startsWith("/")) return null;
  if (specifier === "bun" || specifier.startsWith("bun:") || specifier.startsWith("node:")) return null;
  const parts = specifier.split("/");
  return specifier.startsWith("@") ? parts.slice(0, 2).join("/") : (parts[0] ?? null);
}

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...sourceFiles(path));
    else if (entry.isFile() && LOADERS[extname(entry.name)]) out.push(path);
  }
  return out;
}

/** Package names each file imports (static imports, re-exports, dynamic import(), require()). */
function importedPackages(): { file: string; pkg: string }[] {
  const found: { file: string; pkg: string }[] = [];
  const transpilers = new Map<string, Bun.Transpiler>();
  for (const dir of SCANNED_DIRS) {
    for (const path of sourceFiles(join(root, dir))) {
      const loader = LOADERS[extname(path)] ?? "ts";
      let transpiler = transpilers.get(loader);
      if (!transpiler) transpilers.set(loader, (transpiler = new Bun.Transpiler({ loader })));
      for (const { path: specifier } of transpiler.scanImports(readFileSync(path, "utf8"))) {
        const pkg = packageOf(specifier);
        if (pkg !== null) found.push({ file: relative(root, path), pkg });
      }
    }
  }
  return found;
}

describe("declared dependencies", () => {
  const manifest = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { dependencies?: Record<string, string>; devDependencies?: Record<string, string> };
  const runtime = new Set(Object.keys(manifest.dependencies ?? {}));
  const dev = new Set(Object.keys(manifest.devDependencies ?? {}));
  const imports = importedPackages();

  test("the scanner sees the imports (scoped, deep, dynamic)", () => {
    const pkgs = new Set(imports.map((i) => i.pkg));
    // Known imports of the code base: a scanner that finds nothing would pass everything.
    for (const p of ["elysia", "@grpc/grpc-js", "yaml", "fast-xml-parser"]) expect(pkgs.has(p)).toBe(true);
    expect(packageOf("@scope/name/deep/path")).toBe("@scope/name");
    expect(packageOf("yaml/util")).toBe("yaml");
    expect(packageOf("node:fs")).toBeNull();
    expect(packageOf("bun:test")).toBeNull();
    expect(packageOf("bun")).toBeNull();
    expect(packageOf("./x.ts")).toBeNull();
    const scanned = new Bun.Transpiler({ loader: "ts" }).scanImports('const m = await import("dyn-pkg"); const r = require("req-pkg/sub"); export * from "@re/export";').map((i) => packageOf(i.path));
    expect(scanned.sort()).toEqual(["@re/export", "dyn-pkg", "req-pkg"]);
  });

  test("every package imported anywhere is in dependencies or devDependencies", () => {
    const missing = imports.filter((i) => !runtime.has(i.pkg) && !dev.has(i.pkg)).map((i) => `${i.file} imports ${i.pkg}, which package.json does not declare`);
    expect(missing).toEqual([]);
  });

  test("src/ imports only packages in dependencies (devDependencies are not installed in deployment)", () => {
    const misplaced = imports
      .filter((i) => i.file.startsWith("src/") && !runtime.has(i.pkg))
      .map((i) => `${i.file} imports ${i.pkg}, which is not in package.json's dependencies${dev.has(i.pkg) ? " (only devDependencies)" : ""}`);
    expect(misplaced).toEqual([]);
  });
});
