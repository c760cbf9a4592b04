/** docs/configuration.md is what scripts/gen-config-doc.ts generates from the code. */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { generate } from "../../scripts/gen-config-doc.ts";
import { LEAVES } from "../../src/config/schema.ts";

const REPO = resolve(import.meta.dir, "../..");

describe("docs/configuration.md", () => {
  test("matches the generator (run: bun run gen:config-doc)", () => {
    expect(readFileSync(join(REPO, "docs/configuration.md"), "utf8")).toBe(generate(REPO));
  });

  test("documents every key, each with a description from config/rcloud.yaml", () => {
    const doc = generate(REPO);
    for (const key of LEAVES.keys()) {
      const at = doc.indexOf(`#### \`${key}\`\n\n`);
      expect(at).toBeGreaterThan(0);
      // The line after the heading is prose, not the Default bullet.
      const next = doc.slice(at).split("\n")[2] ?? "";
      expect(next.startsWith("- Default")).toBe(false);
    }
  });
});
