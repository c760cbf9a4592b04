/**
 * `rcloud serve` logs a promise rejection nobody handles (src/util/log.ts
 * logUnhandledRejections, installed by src/main.ts for serve only) instead of dying: checked
 * in a child bun process, since the handler is process-wide.
 */
import { expect, test } from "bun:test";
import { resolve } from "node:path";

const logTs = resolve(import.meta.dir, "../../src/util/log.ts");

function run(install: boolean) {
  const script = `
    import { createLogger, logUnhandledRejections } from ${JSON.stringify(logTs)};
    if (${install}) logUnhandledRejections(createLogger({ level: "info", format: "json" }));
    Promise.reject(new Error("boom in the background"));
    setTimeout(() => console.log("still serving"), 50);
  `;
  const r = Bun.spawnSync([process.execPath, "-e", script], { stdout: "pipe", stderr: "pipe" });
  return { code: r.exitCode, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

test("an unhandled rejection is one structured error line, and the process goes on", () => {
  const r = run(true);
  expect(r.code).toBe(0);
  expect(r.stdout).toContain("still serving");
  const lines = r.stderr.trim().split("\n").map((l) => JSON.parse(l));
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatchObject({ level: "error", error: "boom in the background" });
  expect(lines[0].msg).toContain("unhandled promise rejection");
  expect(lines[0].stack).toContain("boom in the background");
});

test("without it (every command but serve), an unhandled rejection still ends the process", () => {
  const r = run(false);
  expect(r.code).not.toBe(0);
  expect(r.stdout).not.toContain("still serving");
});
