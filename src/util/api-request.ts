/**
 * One JSON exchange with rcloud's REST API, shared by its HTTP clients (the CLI and the
 * Terraform provider). Each client turns the outcome into its own errors and wording; this
 * module only sends the request and reads the answer.
 */
export interface ApiRequest {
  endpoint: string;
  method: string;
  /** Under /api/v1, e.g. `/vms`. */
  path: string;
  body?: unknown;
  /** A file sent as the raw body instead (kernel uploads); its size goes as Content-Length. */
  file?: Blob;
  token: string | null;
  userAgent: string;
  signal: AbortSignal;
}

export interface ApiAnswer {
  url: string;
  status: number;
  ok: boolean;
  text: string;
  /** The parsed body: null when empty, undefined when it is not JSON. */
  json: unknown;
}

/** The URL of an API path, as requests use it and error messages name it. */
export function apiUrl(endpoint: string, path: string): string {
  return `${endpoint}/api/v1${path}`;
}

/** Sends the request; rejects only when no answer came (the fetch error, for the caller to word). */
export async function apiRequest(req: ApiRequest): Promise<ApiAnswer> {
  const url = apiUrl(req.endpoint, req.path);
  const headers: Record<string, string> = { accept: "application/json", "user-agent": req.userAgent };
  if (req.file !== undefined) headers["content-type"] = "application/octet-stream";
  else if (req.body !== undefined) headers["content-type"] = "application/json";
  if (req.token) headers.authorization = `Bearer ${req.token}`;
  const res = await fetch(url, {
    method: req.method,
    headers,
    body: req.file ?? (req.body === undefined ? undefined : JSON.stringify(req.body)),
    signal: req.signal,
  });
  const text = await res.text();
  let json: unknown;
  try {
    json = text === "" ? null : JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { url, status: res.status, ok: res.ok, text, json };
}
