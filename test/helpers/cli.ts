/** The rcloud CLI as a real child process (`bun src/main.ts ...`). */
import { mkdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";

export const REPO = resolve(import.meta.dir, "../..");

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs the CLI asynchronously (a server the test runs lives in this process's event loop).
 * `env` is laid over this process's environment; an undefined value removes the variable.
 */
export async function runCliProcess(args: string[], env: Record<string, string | undefined>): Promise<CliRun> {
  const childEnv: Record<string, string | undefined> = { ...process.env, ...env };
  const proc = Bun.spawn([process.execPath, join(REPO, "src/main.ts"), ...args], {
    cwd: REPO,
    env: childEnv as Record<string, string>,
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  return { code, stdout, stderr };
}

/**
 * Drives the bash completion function like bash would: `script` is `rcloud completion bash`'s
 * output, written to `home`; the `rcloud` it calls for names is a wrapper around this checkout.
 * The answer are the words offered for the last word of `line`.
 */
export function bashCompleter(script: string, home: string, endpoint: string): (line: string) => Promise<string[]> {
  const file = join(home, "rcloud.bash");
  writeFileSync(file, script);
  const bin = join(home, "bin");
  mkdirSync(bin, { recursive: true });
  writeFileSync(join(bin, "rcloud"), `#!/bin/sh\nexec "${process.execPath}" "${join(REPO, "src/main.ts")}" "$@"\n`, { mode: 0o755 });
  return async (line) => {
    const words = line.split(" ");
    const run = `source ${file}; COMP_WORDS=(${words.map((w) => `'${w}'`).join(" ")}); COMP_CWORD=${words.length - 1}; _rcloud; printf '%s\\n' "\${COMPREPLY[@]}"`;
    const p = Bun.spawn(["bash", "-c", run], { env: { ...process.env, PATH: `${bin}:${process.env.PATH}`, RCLOUD_ENDPOINT: endpoint, HOME: home }, stdout: "pipe" });
    const out = await new Response(p.stdout).text();
    await p.exited;
    return out.trim().split("\n").filter(Boolean);
  };
}
