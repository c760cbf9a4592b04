/**
 * libvirt connection URIs: `driver[+transport]://[user@][host][:port]/path[?params]`.
 * Follows the C client's rules for which transport to use, where to connect and which
 * name to send in CONNECT_OPEN (it drops transport, user, host and port, and the query
 * parameters that are meant for the client itself).
 */

export type TransportKind = "unix" | "tcp" | "tls" | "ssh" | "libssh" | "libssh2" | "ext";

export interface LibvirtTarget {
  uri: string;
  driver: string;
  transport: TransportKind;
  user: string | null;
  host: string | null;
  port: number | null;
  /** Whether the URI named the port (ssh passes -p only then, so ~/.ssh/config still applies). */
  portGiven: boolean;
  /** Unix socket path (unix transport only). */
  socketPath: string | null;
  /** The name sent in CONNECT_OPEN. */
  name: string;
  /** Query parameters as given (including client-side ones). */
  params: Map<string, string>;
}

export class UriError extends Error {
  override readonly name = "UriError";
}

/** Query parameters consumed by the client and never forwarded to the daemon. */
const CLIENT_PARAMS = new Set([
  "name",
  "command",
  "socket",
  "auth",
  "sshauth",
  "netcat",
  "keyfile",
  "pkipath",
  "known_hosts",
  "known_hosts_verify",
  "tls_priority",
  "mode",
  "proxy",
  "no_sanity",
  "no_verify",
  "no_tty",
  "authfile",
]);

const DEFAULT_PORTS: Partial<Record<TransportKind, number>> = { tcp: 16509, tls: 16514, ssh: 22, libssh: 22, libssh2: 22 };
export const SYSTEM_SOCKET = "/var/run/libvirt/libvirt-sock";

export function parseLibvirtUri(uri: string, env: Record<string, string | undefined> = process.env): LibvirtTarget {
  const m = /^([a-zA-Z][a-zA-Z0-9-]*)(?:\+([a-z0-9]+))?:\/\/([^/?#]*)(\/[^?#]*)?(?:\?([^#]*))?(?:#(.*))?$/.exec(uri);
  if (!m) throw new UriError(`not a libvirt URI: '${uri}' (expected driver[+transport]://[host]/path, e.g. qemu:///system)`);
  const [, driver = "", transportRaw, authority = "", path = "", query = "", fragment] = m;

  const params = new Map<string, string>();
  const forwarded: string[] = [];
  if (query) {
    for (const part of query.split("&")) {
      if (!part) continue;
      const eq = part.indexOf("=");
      const key = decodeURIComponent(eq < 0 ? part : part.slice(0, eq));
      const value = eq < 0 ? "" : decodeURIComponent(part.slice(eq + 1).replace(/\+/g, " "));
      params.set(key, value);
      if (!CLIENT_PARAMS.has(key)) forwarded.push(part);
    }
  }

  let user: string | null = null;
  let hostPort = authority;
  const at = authority.lastIndexOf("@");
  if (at >= 0) {
    user = decodeURIComponent(authority.slice(0, at));
    hostPort = authority.slice(at + 1);
  }
  let host: string | null = null;
  let port: number | null = null;
  if (hostPort) {
    const hp = /^(\[[^\]]+\]|[^:]*)(?::(\d*))?$/.exec(hostPort);
    if (!hp) throw new UriError(`bad host in '${uri}'`);
    host = hp[1]!.replace(/^\[|\]$/g, "") || null;
    if (hp[2]) {
      port = Number(hp[2]);
      if (!Number.isInteger(port) || port < 1 || port > 65535) throw new UriError(`bad port in '${uri}'`);
    }
  }

  let transport: TransportKind;
  if (transportRaw) {
    if (!["unix", "tcp", "tls", "ssh", "libssh", "libssh2", "ext"].includes(transportRaw)) {
      throw new UriError(`unknown transport '${transportRaw}' in '${uri}'`);
    }
    transport = transportRaw as TransportKind;
  } else {
    // Like the C client: a host without an explicit transport means TLS.
    transport = host ? "tls" : "unix";
  }
  if (transport === "unix" && host) throw new UriError(`the unix transport takes no host: '${uri}'`);
  if ((transport === "tcp" || transport === "tls" || transport.startsWith("ssh") || transport.startsWith("libssh")) && !host) {
    throw new UriError(`the ${transport} transport needs a host: '${uri}'`);
  }
  const portGiven = port !== null;
  if (host && port === null) port = DEFAULT_PORTS[transport] ?? null;

  let socketPath: string | null = null;
  if (transport === "unix") {
    socketPath = params.get("socket") ?? null;
    if (!socketPath) {
      const session = path === "/session" && driver !== "test";
      const runtime = env.XDG_RUNTIME_DIR;
      socketPath = session && runtime ? `${runtime}/libvirt/libvirt-sock` : SYSTEM_SOCKET;
    }
  }

  let name: string;
  const explicit = params.get("name");
  if (explicit !== undefined) name = explicit;
  else if (driver === "remote") name = ""; // the daemon picks its default driver
  else {
    name = `${driver}://${path}`;
    if (forwarded.length) name += `?${forwarded.join("&")}`;
    if (fragment !== undefined) name += `#${fragment}`;
  }

  return { uri, driver, transport, user, host, port, portGiven, socketPath, name, params };
}

/**
 * A client-side switch such as `no_verify=1`, read as the C client does: an integer, any
 * non-zero value means on; absent means off.
 */
export function flagParam(target: LibvirtTarget, key: string): boolean {
  const raw = target.params.get(key);
  if (raw === undefined) return false;
  if (!/^[+-]?\d+$/.test(raw.trim())) throw new UriError(`'${key}=${raw}' in '${target.uri}' is not a number (use ${key}=1 or ${key}=0)`);
  return Number(raw) !== 0;
}
