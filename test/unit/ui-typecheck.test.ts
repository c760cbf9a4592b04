/**
 * The web page's TypeScript (src/ui/, browser code) is checked with the DOM library by its
 * own tsconfig: the root one leaves it out so server code cannot use browser globals.
 */
import { expect, test } from "bun:test";
import { join, resolve } from "node:path";

const repo = resolve(import.meta.dir, "../..");

test("src/ui type-checks against the DOM library", () => {
  const tsc = join(repo, "node_modules/.bin/tsc");
  const r = Bun.spawnSync([tsc, "--noEmit", "-p", join(repo, "src/ui/tsconfig.json"), "--listFiles"], { stdout: "pipe", stderr: "pipe" });
  const out = r.stdout.toString();
  if (r.exitCode !== 0) throw new Error(`tsc -p src/ui/tsconfig.json failed:\n${out.split("\n").filter((l) => l.includes("error")).join("\n")}`);
  // It did look at the page's files.
  for (const f of ["src/ui/main.ts", "src/ui/console.ts", "src/api-types/json.ts"]) expect(out).toContain(join(repo, f));
}, 60_000);
