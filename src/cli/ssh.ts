/** SSH keys on this machine and the argv of `rcloud vm ssh`. */
import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import type { ApiVm } from "../api-types/json.ts";
import { CliError, EXIT } from "./errors.ts";

export function homeDir(env: Record<string, string | undefined>): string {
  return env.HOME || homedir();
}

/** ~/.ssh/id_ed25519.pub, else ~/.ssh/id_rsa.pub, else null. */
export function defaultPublicKey(env: Record<string, string | undefined>): string | null {
  for (const f of ["id_ed25519.pub", "id_rsa.pub"]) {
    const p = join(homeDir(env), ".ssh", f);
    if (existsSync(p)) return p;
  }
  return null;
}

/**
 * The public key lines in `file`. Given a private key whose `.pub` sits next to it,
 * reads that instead.
 */
export function readPublicKeys(file: string): string[] {
  let path = file;
  let text: string;
  try {
    text = readFileSync(path, "utf8");
    if (/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(text)) {
      path = `${file}.pub`;
      text = readFileSync(path, "utf8");
    }
  } catch (e) {
    throw new CliError(`cannot read SSH public key ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, EXIT.usage);
  }
  const keys = text
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#"));
  if (keys.length === 0) throw new CliError(`no SSH public key in ${path}`, EXIT.usage);
  return keys;
}

/** The private half of a key path (drops .pub); null when that file does not exist. */
export function privateKeyFor(file: string | null): string | null {
  if (!file) return null;
  const p = file.endsWith(".pub") ? file.slice(0, -4) : file;
  return existsSync(p) ? p : null;
}

/** argv (without the binary) for ssh into `vm`; `extra` goes after the destination. */
export function sshArgs(vm: ApiVm, identity: string | null, extra: string[]): string[] {
  if (vm.state !== "running") throw new CliError(`VM ${vm.name} is ${vm.state}; start it with 'rcloud vm start ${vm.name}'`, EXIT.conflict);
  if (vm.network.mode === "none") throw new CliError(`VM ${vm.name} has no network (mode none); use 'rcloud vm console ${vm.name}'`, EXIT.conflict);
  const host = vm.ip_address;
  if (!host) throw new CliError(`VM ${vm.name} has no IP address yet; try again shortly or use 'rcloud vm create --wait'`, EXIT.conflict);
  const args = ["-o", "StrictHostKeyChecking=accept-new"];
  if (vm.ssh_port !== null) args.push("-p", String(vm.ssh_port));
  if (identity) args.push("-i", identity);
  args.push(`${vm.ssh_user}@${host}`, ...extra);
  return args;
}
