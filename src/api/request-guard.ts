/**
 * Who may talk to the API from a browser, and how much they may send.
 *
 * With auth off (the loopback default) any web page the user opens could otherwise POST to the
 * API (an empty-body POST needs no CORS preflight), open the console websocket, or reach it
 * through DNS rebinding. Browsers always send Origin on cross-origin fetches, form posts and
 * websocket upgrades, and always send the name they resolved as Host; curl, the CLI and the
 * Terraform provider send no Origin. So: a request with an Origin that is not the server's own
 * (or listed) is refused, and so is a Host name the server does not answer to.
 */
import { ServiceError } from "../api-types/errors.ts";

export interface GuardSettings {
  /** Host part of server.bind_address (brackets removed for IPv6). */
  bindHost: string;
  /** "http" or "https": the scheme of the server's own origin. */
  scheme: "http" | "https";
  /** server.public_names */
  publicNames: readonly string[];
  /** server.allowed_origins */
  allowedOrigins: readonly string[];
}

const WILDCARD_BINDS = new Set(["0.0.0.0", "::", "0:0:0:0:0:0:0:0", "[::]"]);

/** The host name of a Host header value: lower case, port, IPv6 brackets and a trailing dot removed. */
export function hostName(header: string): string {
  const h = header.trim().toLowerCase();
  const v6 = /^\[([^\]]*)\](?::\d*)?$/.exec(h);
  const name = v6 ? (v6[1] ?? "") : h.replace(/:\d*$/, "");
  return name.endsWith(".") ? name.slice(0, -1) : name;
}

function isIpLiteral(name: string): boolean {
  return /^\d{1,3}(?:\.\d{1,3}){3}$/.test(name) || (name.includes(":") && /^[0-9a-f:.]+$/.test(name));
}

export class RequestGuard {
  private readonly names: ReadonlySet<string>;
  private readonly origins: ReadonlySet<string>;
  private readonly wildcardBind: boolean;

  constructor(private readonly settings: GuardSettings) {
    const bind = hostName(settings.bindHost.includes(":") && !settings.bindHost.startsWith("[") ? `[${settings.bindHost}]` : settings.bindHost);
    this.wildcardBind = WILDCARD_BINDS.has(bind);
    this.names = new Set(["localhost", ...(this.wildcardBind ? [] : [bind]), ...settings.publicNames.map(hostName)]);
    this.origins = new Set(settings.allowedOrigins.map((o) => o.toLowerCase()));
  }

  /** Throws forbidden_host / forbidden_origin for a request a browser page must not make. */
  check(request: Request): void {
    const host = request.headers.get("host");
    if (host !== null && !this.hostAllowed(hostName(host))) {
      throw new ServiceError(
        "forbidden_host",
        `this server does not answer to the name ${JSON.stringify(host.slice(0, 100))}; use its address or localhost, or add the name to server.public_names`,
      );
    }
    const origin = request.headers.get("origin");
    if (origin !== null && !this.originAllowed(origin, host)) {
      throw new ServiceError(
        "forbidden_origin",
        `requests from pages of ${JSON.stringify(origin.slice(0, 100))} are refused; only the server's own pages (or server.allowed_origins) may call the API from a browser`,
      );
    }
  }

  private hostAllowed(name: string): boolean {
    // An IP literal cannot be the product of DNS rebinding; with a wildcard bind any of the
    // machine's addresses is "the bind address".
    return this.names.has(name) || (this.wildcardBind && isIpLiteral(name));
  }

  private originAllowed(origin: string, host: string | null): boolean {
    const o = origin.trim().toLowerCase();
    if (this.origins.has(o)) return true;
    if (host === null) return false;
    // Same origin: the page came from this very scheme://host[:port] (the Host passed above).
    try {
      return new URL(`${this.settings.scheme}://${host}`).origin === o;
    } catch {
      return false;
    }
  }
}

/**
 * A request body of at most `limit` bytes, read as it streams: a chunked body (no
 * Content-Length) is cut off as soon as it passes the limit instead of being buffered whole.
 */
export async function readBodyLimited(request: Request, limit: number): Promise<Uint8Array> {
  if (request.body === null) return new Uint8Array(0);
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = request.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel().catch(() => {});
      throw tooLarge(limit);
    }
    chunks.push(value);
  }
  const out = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

/** Refuses by Content-Length, before anything is read. */
export function checkContentLength(request: Request, limit: number): void {
  const declared = request.headers.get("content-length");
  if (declared !== null && Number(declared) > limit) throw tooLarge(limit);
}

function tooLarge(limit: number): ServiceError {
  return new ServiceError("payload_too_large", `the request body is larger than ${limit} bytes (server.max_body_bytes)`);
}

/** Deepest nesting of arrays and objects a JSON body may have; no API body needs more than a few levels. */
export const MAX_JSON_DEPTH = 32;

/**
 * Throws bad_request when `text` nests arrays or objects deeper than `max` (counted outside
 * strings, before parsing): validating a 40 kB body nested 5,000 levels deep held the event
 * loop for seconds, long enough for libvirt keepalives to lapse.
 */
export function checkJsonDepth(text: string, max = MAX_JSON_DEPTH): void {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > max) throw new ServiceError("bad_request", `the request body nests arrays or objects deeper than ${max} levels`);
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
}
