/**
 * The ssh command line of a qemu+ssh:// URI, built the way libvirt 9.0's client builds it
 * (virNetSocketNewConnectSSH, virNetClientSSHHelperCommand): the system `ssh` runs a shell
 * snippet on the far side that starts `virt-ssh-helper <driver URI>` if the host has it and
 * falls back to `nc -U <socket>`; the RPC stream is ssh's stdin and stdout.
 *
 * Client-side URI parameters: keyfile (-i), known_hosts (UserKnownHostsFile), no_verify=1
 * (StrictHostKeyChecking=no), known_hosts_verify (normal|auto|ignore), socket (remote socket
 * path; implies the nc proxy), netcat (remote nc binary), proxy (auto|netcat|native),
 * command (the local ssh binary). rcloud never prompts: BatchMode=yes always.
 * Beyond libvirt: ConnectTimeout from the connect timeout, and a LocalCommand that marks the
 * moment the session is up.
 */
import { flagParam, UriError, type LibvirtTarget } from "./uri.ts";

export type SshProxy = "auto" | "netcat" | "native";

export interface SshCommand {
  /** argv for spawn (no shell on this side). */
  argv: string[];
  /** The command ssh asks the remote login shell to run. */
  remoteCommand: string;
  /** "root@host:port" for messages. */
  destination: string;
  /** Host key checking is off (no_verify=1 or known_hosts_verify=ignore). */
  hostKeyUnchecked: boolean;
}

/** What ssh prints on stderr once it is connected and authenticated (see sshCommand). */
export const SESSION_UP_MARKER = "rcloud-ssh-session-up";

/** Where libvirt's client points nc on the remote host when the URI names no socket. */
export const REMOTE_SYSTEM_SOCKET = "/var/run/libvirt/libvirt-sock";

/** Shell characters that make libvirt quote a word (virBufferEscapeShell). */
const SHELL_SPECIAL = /[\r\t\n !"#$&'()*;<>?[\\\]^`{|}~]/;

/** One level of POSIX-shell quoting, exactly as libvirt does it: only when needed, in single quotes. */
export function escapeShell(word: string): string {
  if (word === "") return "''";
  if (!SHELL_SPECIAL.test(word)) return word;
  return `'${word.replaceAll("'", "'\\''")}'`;
}

/**
 * Two levels: the remote login shell parses the command once, and the `sh -c '…'` it runs
 * parses the inner part again.
 */
export function escapeShellTwice(word: string): string {
  return escapeShell(escapeShell(word));
}

/** The remote shell snippet (virNetClientSSHHelperCommand of libvirt 9.0). */
export function remoteHelperCommand(opts: { proxy: SshProxy; netcat: string | null; socketPath: string; driverUri: string; readonly: boolean }): string {
  const nc = escapeShellTwice(opts.netcat ?? "nc");
  // libvirt pastes the socket path as it is; one that needs quoting gets what the other words get.
  const socket = escapeShell(opts.socketPath) === opts.socketPath ? opts.socketPath : `'${escapeShellTwice(opts.socketPath)}'`;
  const ncCommand =
    `if '${nc}' -q 2>&1 | grep "requires an argument" >/dev/null 2>&1; then ARG=-q0;else ARG=;fi;` + `'${nc}' $ARG -U ${socket}`;
  const helperCommand = `virt-ssh-helper${opts.readonly ? " -r " : " "}'${escapeShellTwice(opts.driverUri)}'`;
  switch (opts.proxy) {
    case "auto":
      return `sh -c 'which virt-ssh-helper 1>/dev/null 2>&1; if test $? = 0; then     ${helperCommand}; else    ${ncCommand}; fi'`;
    case "netcat":
      return `sh -c '${ncCommand}'`;
    case "native":
      return `sh -c '${helperCommand}'`;
  }
}

/** A file name inside an ssh option value: ssh expands %-tokens and splits on blanks. */
function sshOptionPath(target: LibvirtTarget, key: string, path: string): string {
  if (path.includes('"') || /[\r\n]/.test(path)) throw new UriError(`${key}= in '${target.uri}' must not contain quotes or line breaks`);
  const escaped = path.replaceAll("%", "%%");
  return /\s/.test(escaped) ? `"${escaped}"` : escaped;
}

function proxyParam(target: LibvirtTarget): SshProxy {
  const raw = target.params.get("proxy");
  const netcat = target.params.get("netcat");
  if (raw === undefined) {
    // libvirt: an explicit socket or nc binary means nc (virt-ssh-helper cannot take a socket path).
    return target.params.has("socket") || netcat !== undefined ? "netcat" : "auto";
  }
  if (raw !== "auto" && raw !== "netcat" && raw !== "native") {
    throw new UriError(`unknown proxy '${raw}' in '${target.uri}' (auto, netcat or native)`);
  }
  if (raw === "native" && netcat !== undefined) throw new UriError(`netcat= cannot be used with proxy=native in '${target.uri}'`);
  // A netcat path means the user wants the nc proxy, as in libvirt.
  return raw === "auto" && netcat !== undefined ? "netcat" : raw;
}

export function sshCommand(target: LibvirtTarget, opts: { connectTimeoutMs: number; readonly?: boolean }): SshCommand {
  if (!target.host) throw new UriError(`the ssh transport needs a host: '${target.uri}'`);
  if (target.host.startsWith("-")) throw new UriError(`bad host '${target.host}' in '${target.uri}'`);
  const p = target.params;
  const argv = [p.get("command") || "ssh"];
  if (target.portGiven) argv.push("-p", String(target.port));
  if (target.user) argv.push("-l", target.user);
  const keyfile = p.get("keyfile");
  if (keyfile) argv.push("-i", keyfile.replaceAll("%", "%%"));
  argv.push("-T", "-e", "none", "-o", "BatchMode=yes");

  const verifyMode = p.get("known_hosts_verify") ?? "normal";
  if (!["normal", "auto", "ignore"].includes(verifyMode)) {
    throw new UriError(`unknown known_hosts_verify '${verifyMode}' in '${target.uri}' (normal, auto or ignore)`);
  }
  const hostKeyUnchecked = flagParam(target, "no_verify") || verifyMode === "ignore";
  if (hostKeyUnchecked) argv.push("-o", "StrictHostKeyChecking=no");
  else if (verifyMode === "auto") argv.push("-o", "StrictHostKeyChecking=accept-new");
  const knownHosts = p.get("known_hosts");
  if (knownHosts) argv.push("-o", `UserKnownHostsFile=${sshOptionPath(target, "known_hosts", knownHosts)}`);
  argv.push("-o", `ConnectTimeout=${Math.max(1, Math.ceil(opts.connectTimeoutMs / 1000))}`);
  // Tells us on stderr when the session is up (LocalCommand runs after authentication), so the
  // connect timeout and errors cover ssh's own setup as TLS's cover the handshake. A shared
  // master connection would skip LocalCommand: every session gets its own.
  argv.push("-o", "PermitLocalCommand=yes", "-o", `LocalCommand=echo ${SESSION_UP_MARKER} >&2`);
  argv.push("-o", "ControlMaster=no", "-o", "ControlPath=none");

  const readonly = opts.readonly ?? false;
  const remoteCommand = remoteHelperCommand({
    proxy: proxyParam(target),
    netcat: p.get("netcat") ?? null,
    socketPath: p.get("socket") || (readonly ? `${REMOTE_SYSTEM_SOCKET}-ro` : REMOTE_SYSTEM_SOCKET),
    driverUri: target.name,
    readonly,
  });
  argv.push("--", target.host, remoteCommand);

  const host = target.host.includes(":") ? `[${target.host}]` : target.host;
  const destination = `${target.user ? `${target.user}@` : ""}${host}${target.portGiven ? `:${target.port}` : ""}`;
  return { argv, remoteCommand, destination, hostKeyUnchecked };
}
