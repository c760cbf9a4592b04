/** SSH helpers for end-to-end tests: a throwaway key and a real ssh client. */
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export function makeSshKey(): { privateKey: string; publicKey: string } {
  const dir = mkdtempSync(join(tmpdir(), "rcloud-ssh-"));
  const privateKey = join(dir, "id_ed25519");
  const r = Bun.spawnSync(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "rcloud-test", "-f", privateKey]);
  if (r.exitCode !== 0) throw new Error(`ssh-keygen failed (install openssh-client): ${r.stderr.toString()}`);
  return { privateKey, publicKey: readFileSync(`${privateKey}.pub`, "utf8").trim() };
}

/** Runs one command over SSH on 127.0.0.1:port; returns stdout or throws with stderr. */
export async function sshRun(opts: { port: number; user: string; key: string; host?: string }, command: string, timeoutS = 10): Promise<string> {
  const p = Bun.spawn(
    [
      "ssh",
      "-i", opts.key,
      "-p", String(opts.port),
      "-o", "StrictHostKeyChecking=no",
      "-o", "UserKnownHostsFile=/dev/null",
      "-o", "BatchMode=yes",
      "-o", "IdentitiesOnly=yes",
      "-o", "LogLevel=ERROR",
      "-o", `ConnectTimeout=${timeoutS}`,
      `${opts.user}@${opts.host ?? "127.0.0.1"}`,
      command,
    ],
    { stdout: "pipe", stderr: "pipe", stdin: "ignore" },
  );
  const timer = setTimeout(() => p.kill(), (timeoutS + 5) * 1000);
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  clearTimeout(timer);
  if (code !== 0) throw new Error(`ssh exited ${code}: ${err.trim()}`);
  return out;
}

/** Retries until an SSH login runs the command, or the deadline passes. */
export async function waitForSsh(opts: { port: number; user: string; key: string }, command: string, timeoutMs = 180_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  while (Date.now() < deadline) {
    try {
      return await sshRun(opts, command, 5);
    } catch (e) {
      last = (e as Error).message;
      await Bun.sleep(1000);
    }
  }
  throw new Error(`no SSH login within ${timeoutMs} ms: ${last}`);
}
