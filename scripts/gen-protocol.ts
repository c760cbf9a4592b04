/**
 * Generates src/codecs/generated/*.ts from the XDR declarations in protocol/.
 *
 *   bun run gen:protocol            write the checked-in files
 *   bun scripts/gen-protocol.ts --out DIR   write elsewhere (the reproducibility test uses this)
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { Emitter, type SourceFile } from "./xdrgen/emit.ts";
import { parseXdr } from "./xdrgen/parse.ts";

/** Order matters: later files may use types declared by earlier ones. */
export const PROTOCOL_MODULES = ["virnet", "keepalive", "remote", "qemu"] as const;

export function generate(root: string): Map<string, string> {
  const files: SourceFile[] = PROTOCOL_MODULES.map((module) => {
    const path = `protocol/${module}.x`;
    return { module, path, defs: parseXdr(readFileSync(join(root, path), "utf8"), path) };
  });
  const emitter = new Emitter(files);
  return new Map(files.map((f) => [`${f.module}.ts`, emitter.emit(f)]));
}

if (import.meta.main) {
  const root = resolve(import.meta.dir, "..");
  const outArg = process.argv.indexOf("--out");
  const outDir = outArg > 0 ? resolve(process.argv[outArg + 1] ?? "") : join(root, "src/codecs/generated");
  mkdirSync(outDir, { recursive: true });
  for (const [name, text] of generate(root)) {
    writeFileSync(join(outDir, name), text);
    console.log(`wrote ${join(outDir, name)} (${text.length} bytes)`);
  }
}
