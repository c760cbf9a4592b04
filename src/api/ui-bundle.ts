/**
 * Builds the web page's script (src/ui/main.ts and @xterm/xterm) with `bun build`. Imported
 * as a macro (`with { type: "macro" }`), so it runs when the server's code is bundled or
 * loaded, and the executable carries the result as a string: nothing is built or fetched at
 * run time. (A macro may not call Bun.build itself, so it runs the bun CLI.)
 */
import { join } from "node:path";

export function uiScript(): string {
  const entry = join(import.meta.dir, "../ui/main.ts");
  const r = Bun.spawnSync([process.execPath, "build", entry, "--target=browser", "--format=iife", "--minify"], { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`bun build of the web page failed: ${r.stderr.toString()}`);
  return r.stdout.toString();
}
