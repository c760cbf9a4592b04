/**
 * The CLI's REST client for /api/v1. API errors become CliErrors carrying the server's
 * error.message and the exit code for the status; transport failures name the endpoint.
 * The bearer token goes into the Authorization header only; it never appears in messages.
 */
import { type ApiAnswer, apiRequest, apiUrl } from "../util/api-request.ts";
import { VERSION } from "../util/version.ts";
import { CliError, EXIT, exitCodeForStatus, TOO_LARGE } from "./errors.ts";

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
    return this.send<T>(method, path, { body }, timeoutMs);
  }

  /** PUTs a file as the raw request body (kernel uploads), streamed from disk. */
  async upload<T>(path: string, file: Blob, timeoutMs = this.requestTimeoutMs): Promise<T> {
    return this.send<T>("PUT", path, { file }, timeoutMs);
  }

  private async send<T>(method: string, path: string, content: { body?: unknown; file?: Blob }, timeoutMs: number): Promise<T> {
    const url = apiUrl(this.endpoint, path);
    let res: ApiAnswer;
    try {
      res = await apiRequest({ endpoint: this.endpoint, method, path, ...content, token: this.token, userAgent: `rcloud-cli/${VERSION}`, signal: AbortSignal.timeout(timeoutMs) });
    } catch (e) {
      throw this.unreachable(method, url, e as Error, timeoutMs);
    }
    const { text, json } = res;
    if (!res.ok) throw this.refused(method, url, res.status, text, json);
    if (json === undefined) {
      throw new CliError(`unexpected answer from ${url} (HTTP ${res.status}, not JSON); is ${this.endpoint} an rcloud server?`, EXIT.error);
    }
    return json as T;
  }

  /**
   * A long-lived GET (the event stream): the response body once the server answered 2xx.
   * `signal` ends it.
   */
  async stream(path: string, signal: AbortSignal): Promise<ReadableStream<Uint8Array>> {
    const url = apiUrl(this.endpoint, path);
    const headers: Record<string, string> = { accept: "application/x-ndjson", "user-agent": `rcloud-cli/${VERSION}` };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    let res: Response;
    try {
      res = await fetch(url, { headers, signal });
    } catch (e) {
      throw this.unreachable("GET", url, e as Error, null);
    }
    if (!res.ok || res.body === null) {
      const text = await res.text().catch(() => "");
      let json: unknown;
      try {
        json = JSON.parse(text);
      } catch {
        json = undefined;
      }
      throw this.refused("GET", url, res.status, text, json);
    }
    return res.body;
  }

  private unreachable(method: string, url: string, err: Error, timeoutMs: number | null): CliError {
    const code = (err as { code?: unknown }).code;
    const why =
      err.name === "TimeoutError" && timeoutMs !== null
        ? `no answer within ${Math.round(timeoutMs / 1000)} s`
        : code === "ECONNREFUSED" || code === "ConnectionRefused"
          ? "connection refused"
          : err.message;
    return new CliError(
      `cannot reach the rcloud server at ${this.endpoint} (${method} ${url}: ${why}); ` +
        `is it running? Point the CLI elsewhere with --endpoint URL or RCLOUD_ENDPOINT`,
      EXIT.unavailable,
    );
  }

  /** The API's refusal in its own words (error.message), with the exit code for the status. */
  private refused(method: string, url: string, status: number, text: string, json: unknown): CliError {
    const apiMsg = (json as { error?: { message?: unknown } } | null | undefined)?.error?.message;
    const message =
      typeof apiMsg === "string" && apiMsg !== ""
        ? apiMsg
        : status === 401 || status === 403
          ? `the server refused the request (HTTP ${status}); check --token / RCLOUD_TOKEN`
          : TOO_LARGE.has(status)
            ? `the server refused a request this large (HTTP ${status}): an argument or flag value is far longer than any valid one`
            : `${method} ${url.length > 200 ? `${url.slice(0, 200)}…` : url} failed with HTTP ${status}${text ? `: ${text.slice(0, 200)}` : ""}`;
    return new CliError(message, exitCodeForStatus(status));
  }

  /** The token, for transports that set their own headers (the console websocket). */
  get bearer(): string | null {
    return this.token;
  }

  vmPath(ref: string, suffix = ""): string {
    return `/vms/${encodeURIComponent(ref)}${suffix}`;
  }
}
