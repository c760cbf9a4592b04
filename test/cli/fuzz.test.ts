/**
 * The CLI's flags under hostile input (issue #17): every command of the table with random
 * and hostile flags, values and arguments, run in-process (runCli, 600 cases, fast-check,
 * fixed seed) and a few as real child processes. Property: the exit code is a defined one
 * (never 1, the code of an unexpected error, while the server is up), a usage problem
 * (unknown flag, a value that does not parse) is 2, a failure says why on stderr as
 * `rcloud: …`, and nothing prints a stack trace. The server is a real `rcloud serve` on the
 * rig's test driver; VMs the run makes are deleted by its stop.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { hostileString } from "../../bench/hostile.ts";
import { COMMANDS } from "../../src/cli/commands.ts";
import { GLOBAL_FLAGS } from "../../src/cli/context.ts";
import { runCli } from "../../src/cli/index.ts";
import type { FlagSpec } from "../../src/cli/args.ts";
import { runCliProcess } from "../helpers/cli.ts";
import { spawnTestDriverServer, type ServerProcess } from "../helpers/serve-process.ts";

let server: ServerProcess;
const tokensFile = join(mkdtempSync(join(tmpdir(), "rcloud-cli-fuzz-")), "tokens.json");

beforeAll(async () => {
  server = await spawnTestDriverServer(`rctest-clifuzz-${process.pid}`);
});

afterAll(async () => {
  await server?.stop();
});

/** Commands that take over the terminal, run ssh or follow forever are not fuzzed here. */
const SKIP = new Set(["vm console", "vm ssh"]);
/** Flags that wait or follow (a run would wait for a guest that never answers on the test driver). */
const SKIP_FLAGS = new Set(["wait", "follow", "attach", "help"]); // --help wins over anything: exit 0
const STACK_FRAME = /\n\s+at .+[:(]\d+/;

interface Case {
  argv: string[];
  /** The argv has a flag the command does not know or a stray `-x`: a usage error for sure. */
  unknownFlag: boolean;
}

function flagArgs(spec: FlagSpec): fc.Arbitrary<string[]> {
  const value = fc.oneof({ weight: 2, arbitrary: hostileString() }, { weight: 1, arbitrary: fc.constant("1") }, fc.constantFrom("1", "0", "-1", "2G", "10m", "bridge=br0", "virtio", "1,type=nvme", "json", "default"));
  if (!spec.value) return fc.oneof(fc.constant<string[]>([`--${spec.name}`]), value.map((v) => [`--${spec.name}=${v}`]));
  const name = `--${spec.name}`;
  return fc.oneof(
    value.map((v) => [name, v]),
    value.map((v) => [`${name}=${v}`]),
    fc.constant<string[]>([name]), // the value missing
    ...(spec.short ? [value.map((v) => [`-${spec.short}`, v])] : []),
  );
}

const caseArbitrary: fc.Arbitrary<Case> = fc.constantFrom(...COMMANDS.filter((c) => !SKIP.has(c.path))).chain((cmd) => {
  const specs = [...cmd.flags, ...GLOBAL_FLAGS].filter((f) => !SKIP_FLAGS.has(f.name) && f.name !== "endpoint" && f.name !== "token");
  const nameLike = fc.constantFrom("rcloud-fuzz-a", "debian13", "vm-00000000", "default");
  const hostile = fc.record({
    // Mostly as many arguments as the command takes.
    positionals: fc
      .integer({ min: cmd.minArgs, max: Math.min(cmd.maxArgs, 3) + 1 })
      .chain((n) => fc.array(fc.oneof(hostileString(), nameLike), { minLength: n, maxLength: n })),
    flags: fc.array(fc.constantFrom(...specs).chain(flagArgs), { maxLength: 3 }),
    unknown: fc.option(fc.constantFrom("--no-such-flag", "--image-", "-Z", "---", "--=x", "--\u0000", "-"), { freq: 4 }),
  });
  // Tame lines (names that look right, no value flags) get to the server and its answers.
  const tame = fc.record({
    positionals: fc.array(nameLike, { minLength: cmd.minArgs, maxLength: cmd.minArgs }),
    flags: fc.constant<string[][]>([]),
    unknown: fc.constant(null),
  });
  return fc.oneof({ weight: 3, arbitrary: hostile }, { weight: 1, arbitrary: tame }).map(({ positionals, flags, unknown }) => {
    const argv = [...cmd.path.split(" "), ...positionals, ...flags.flat()];
    // "-" alone is a positional by convention; the others are not flags of any command.
    const known = unknown === null || unknown === "-";
    if (unknown !== null) argv.splice(cmd.path.split(" ").length, 0, unknown);
    return { argv, unknownFlag: !known };
  });
});

function io(out: string[], err: string[]) {
  return {
    stdout: (s: string) => void out.push(s),
    stderr: (s: string) => void err.push(s),
    env: { RCLOUD_ENDPOINT: server.baseUrl, RCLOUD_TOKEN: server.token, RCLOUD_TOKENS_FILE: tokensFile, HOME: tmpdir() },
    stdoutIsTTY: false,
    stdinIsTTY: false,
  };
}

describe("CLI flag fuzz", () => {
  test(
    "600 hostile command lines in-process: defined exit codes, usage errors are 2, a message, no stack trace",
    async () => {
      const bad: string[] = [];
      const codes: Record<number, number> = {};
      for (const c of fc.sample(caseArbitrary, { seed: 17, numRuns: 600 })) {
        const out: string[] = [];
        const err: string[] = [];
        const code = await runCli(c.argv, io(out, err));
        codes[code] = (codes[code] ?? 0) + 1;
        const stderr = err.join("");
        const why = [
          ![0, 2, 3, 4, 5].includes(code) && `exit ${code}`,
          c.unknownFlag && code !== 2 && `unknown flag but exit ${code}`,
          code !== 0 && !/^rcloud: \S/.test(stderr) && "no 'rcloud: <message>' on stderr",
          STACK_FRAME.test(stderr + out.join("")) && "stack trace",
        ].filter(Boolean);
        if (why.length > 0) bad.push(`${why.join(", ")}: ${JSON.stringify(c.argv).slice(0, 300)} → ${stderr.slice(0, 300)}`);
      }
      console.log(`CLI fuzz exit codes: ${JSON.stringify(codes)}`);
      expect(bad).toEqual([]);
      // The round reached both sides: usage errors and commands the server answered.
      expect(codes[2]).toBeGreaterThan(50);
      expect((codes[0] ?? 0) + (codes[3] ?? 0) + (codes[5] ?? 0)).toBeGreaterThan(20);
    },
    300_000,
  );

  test("hostile flags to the real CLI process: exit 2, one 'rcloud:' line, no stack trace", async () => {
    const lines = [
      ["vm", "create", "x", "--image", "debian13", "--memory", "\u202e1G"], // (an argv cannot hold NUL)
      ["vm", "create", "x", "--image", "debian13", "--data-disk", "../../etc/passwd,type=<x/>"],
      ["vm", "create", "x", "--image", "debian13", "--network", "bridge=$(reboot)", "--network"],
      ["vm", "stop", "x", "--timeout", "1e309"],
      ["vm", "list", "--host", "A".repeat(100_000)],
      ["vm", "list", "--no-such-flag"],
      // Regressions: a URL too long for the server was HTTP 431 → exit 1 with the whole URL.
      ["image", "show", "A".repeat(100_000)],
      ["events", `--type=${"A".repeat(100_000)}`],
      ["events", "--since"],
      ["image", "copy", "debian13", "--to", "../x"],
      ["token", "create", "--role", "root"],
      ["rm", "-rf", "/"],
    ];
    for (const argv of lines) {
      const r = await runCliProcess(argv, { RCLOUD_ENDPOINT: server.baseUrl, RCLOUD_TOKEN: server.token, RCLOUD_TOKENS_FILE: tokensFile });
      expect({ argv: argv.map((a) => a.slice(0, 40)), code: r.code }).toEqual({ argv: argv.map((a) => a.slice(0, 40)), code: 2 });
      expect(r.stderr).toMatch(/^rcloud: \S/);
      expect(r.stderr).not.toMatch(STACK_FRAME);
      expect(r.stderr.length).toBeLessThan(1000);
      expect(r.stdout).toBe("");
    }
  }, 300_000);
});
