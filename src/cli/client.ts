/**
 * The CLI's REST client for /api/v1. API errors become CliErrors carrying the server's
 * error.message and the exit code for the status; transport failures name the endpoint.
 * The bearer token goes into the Authorization header only; it never appears in messages.
 */
import { type ApiAnswer, apiRequest, apiUrl } from "../util/api-request.ts";
import { VERSION } from "../util/version.ts";
import { CliError, EXIT, exitCodeForStatus } from "./errors.ts";

export const DEFAULT_ENDPOINT = "http://localhost:8765";

/** Adds http:// when no scheme is given and drops trailing slashes (and a trailing /api/v1). */
export function normalizeEndpoint(raw: string): string {
  let e = raw.trim();
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(e)) e = `http://${e}`;
  e = e.replace(/\/+$/, "").replace(/\/api\/v1$/, "");
  try {
    const u = new URL(e);
    if (u.protocol !== "http:" && u.protocol !== "https:") throw new Error();
  } catch {
    throw new CliError(`invalid endpoint '${raw}': expected http://HOST:PORT`, EXIT.usage);
  }
  return e;
}

export class ApiClient {
  constructor(
    readonly endpoint: string,
    private readonly token: string | null,
    private readonly requestTimeoutMs = 120_000,
  ) {}

  async request<T>(method: string, path: string, body?: unknown, timeoutMs = this.requestTimeoutMs): Promise<T> {
    const url = apiUrl(this.endpoint, path);
    let res: ApiAnswer;
    try {
      res = await apiRequest({ endpoint: this.endpoint, method, path, body, token: this.token, userAgent: `rcloud-cli/${VERSION}`, signal: AbortSignal.timeout(timeoutMs) });
    } catch (e) {
      const err = e as Error;
      const code = (err as { code?: unknown }).code;
      const why =
        err.name === "TimeoutError"
          ? `no answer within ${Math.round(timeoutMs / 1000)} s`
          : code === "ECONNREFUSED" || code === "ConnectionRefused"
            ? "connection refused"
            : err.message;
      throw new CliError(
        `cannot reach the rcloud server at ${this.endpoint} (${method} ${url}: ${why}); ` +
          `is it running? Point the CLI elsewhere with --endpoint URL or RCLOUD_ENDPOINT`,
        EXIT.unavailable,
      );
    }
    const { text, json } = res;
    if (!res.ok) {
      const apiMsg = (json as { error?: { message?: unknown } } | null | undefined)?.error?.message;
      const message =
        typeof apiMsg === "string" && apiMsg !== ""
          ? apiMsg
          : res.status === 401 || res.status === 403
            ? `the server refused the request (HTTP ${res.status}); check --token / RCLOUD_TOKEN`
            : `${method} ${url} failed with HTTP ${res.status}${text ? `: ${text.slice(0, 200)}` : ""}`;
      throw new CliError(message, exitCodeForStatus(res.status));
    }
    if (json === undefined) {
      throw new CliError(`unexpected answer from ${url} (HTTP ${res.status}, not JSON); is ${this.endpoint} an rcloud server?`, EXIT.error);
    }
    return json as T;
  }

  /** The token, for transports that set their own headers (the console websocket). */
  get bearer(): string | null {
    return this.token;
  }

  vmPath(ref: string, suffix = ""): string {
    return `/vms/${encodeURIComponent(ref)}${suffix}`;
  }
}
