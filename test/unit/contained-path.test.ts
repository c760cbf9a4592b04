import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, realpathSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { containedPath, resolveLoosely } from "../../src/util/contained-path.ts";

// A real directory tree: <base>/dir is the allowed directory, <base>/outside is not.
const base = realpathSync(mkdtempSync(join(tmpdir(), "rcloud-contained-")));
const dir = join(base, "dir");
mkdirSync(join(dir, "sub"), { recursive: true });
mkdirSync(join(base, "outside"));
writeFileSync(join(dir, "vmlinuz"), "k");
writeFileSync(join(base, "outside", "secret"), "s");
symlinkSync("vmlinuz", join(dir, "alias"));
symlinkSync("../outside", join(dir, "out"));
symlinkSync(join(base, "outside", "missing"), join(dir, "dangling-out"));
symlinkSync("missing-here", join(dir, "dangling-in"));
symlinkSync("loop-b", join(dir, "loop-a"));
symlinkSync("loop-a", join(dir, "loop-b"));
symlinkSync("..", join(dir, "sub", "up"));
afterAll(() => rmSync(base, { recursive: true, force: true }));

describe("resolveLoosely", () => {
  test("follows links like realpath where the path exists", () => {
    for (const p of ["alias", "out/secret", "sub/up/vmlinuz", "sub/../vmlinuz"]) expect(resolveLoosely(join(dir, p))).toBe(realpathSync(join(dir, p)));
  });

  test("keeps following links past a missing component", () => {
    expect(resolveLoosely(join(dir, "out", "missing", "x"))).toBe(join(base, "outside", "missing", "x"));
    expect(resolveLoosely(join(dir, "dangling-out"))).toBe(join(base, "outside", "missing"));
    expect(resolveLoosely(`${dir}/sub/up/out/../x`)).toBe(join(base, "x"));
  });

  test("a link loop is null", () => {
    expect(resolveLoosely(join(dir, "loop-a"))).toBeNull();
  });
});

describe("containedPath", () => {
  test("inside: the real path, whether or not it exists", () => {
    expect(containedPath(dir, join(dir, "alias"))).toBe(join(dir, "vmlinuz"));
    expect(containedPath(dir, join(dir, "sub", "up", "vmlinuz"))).toBe(join(dir, "vmlinuz"));
    expect(containedPath(dir, join(dir, "dangling-in"))).toBe(join(dir, "missing-here"));
    expect(containedPath(dir, join(dir, "nope"))).toBe(join(dir, "nope"));
  });

  test("outside, existing or not: null", () => {
    for (const p of [
      join(base, "outside", "secret"),
      join(base, "outside", "missing"),
      join(dir, "out", "secret"),
      join(dir, "out", "missing"),
      join(dir, "dangling-out"),
      `${dir}/../outside/secret`,
      `${dir}/../outside/missing`,
      `${dir}/sub/up/../outside/secret`,
      `${dir}-sibling/x`,
      dir,
      join(dir, "loop-a"),
      "relative/path",
      `${dir}/a\0b`,
    ]) {
      expect(containedPath(dir, p)).toBeNull();
    }
  });

  test("a missing allowed directory contains nothing", () => {
    expect(containedPath(join(base, "no-such-dir"), join(base, "no-such-dir", "x"))).toBeNull();
  });
});
