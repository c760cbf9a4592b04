/**
 * The REST client the provider uses (/api/v1). Every failure becomes an ApiError whose
 * message says what to do: API errors keep the server's code/message/field, network
 * failures name the endpoint that was tried and how to change it.
 */
import { type ApiAnswer, apiRequest, apiUrl } from "../util/api-request.ts";
import type { ApiHost, ApiImage, ApiVm, CreateVmRequest, UpdateVmRequest } from "../api-types/json.ts";

export class ApiError extends Error {
  override readonly name = "ApiError";
  constructor(
    /** The API's error code, or `unreachable` / `bad_response` for transport problems. */
    readonly code: string,
    message: string,
    readonly status: number,
    readonly field: string | null,
  ) {
    super(message);
  }
}

/** How long POST /vms (the whole create: volumes, image copy, definition, start) may take. */
export const CREATE_TIMEOUT_MS = 30 * 60_000;

/** Per-request overrides. */
interface RequestOptions {
  /** Replaces the StopProvider signal: the request runs to its end (or this bound) whatever Ctrl-C does. */
  detached?: boolean;
  timeoutMs?: number;
}

export interface ClientOptions {
  endpoint: string;
  token: string | null;
  /** Per-request bound; the provider-wide timeout. */
  requestTimeoutMs: number;
  /** Aborted by StopProvider. */
  signal: AbortSignal;
  userAgent: string;
}

export class RcloudClient {
  readonly endpoint: string;
  constructor(private readonly opts: ClientOptions) {
    this.endpoint = opts.endpoint.replace(/\/+$/, "");
  }

  private async request<T>(method: string, path: string, body?: unknown, ro: RequestOptions = {}): Promise<T> {
    const url = apiUrl(this.endpoint, path);
    const timeoutMs = ro.timeoutMs ?? this.opts.requestTimeoutMs;
    const timeout = AbortSignal.timeout(timeoutMs);
    let res: ApiAnswer;
    try {
      res = await apiRequest({
        endpoint: this.endpoint,
        method,
        path,
        body,
        token: this.opts.token,
        userAgent: this.opts.userAgent,
        signal: ro.detached ? timeout : AbortSignal.any([this.opts.signal, timeout]),
      });
    } catch (e) {
      if (!ro.detached && this.opts.signal.aborted) throw new ApiError("cancelled", `${method} ${url} was cancelled (Terraform is stopping)`, 0, null);
      const err = e as Error;
      const why = err.name === "TimeoutError" ? `no answer within ${Math.round(timeoutMs / 1000)} s` : err.message;
      throw new ApiError(
        "unreachable",
        `Could not reach the rcloud API at ${this.endpoint} (${method} ${url}: ${why}). ` +
          `Check that rcloud is running there, or point the provider at the right server with ` +
          `endpoint = "http://HOST:PORT" in the provider "rcloud" block or the RCLOUD_ENDPOINT environment variable.`,
        0,
        null,
      );
    }
    const { text, json } = res;
    if (!res.ok) {
      const e = (json as { error?: { code?: unknown; message?: unknown; field?: unknown } } | null)?.error;
      if (e && typeof e.code === "string") {
        throw new ApiError(e.code, typeof e.message === "string" ? e.message : e.code, res.status, typeof e.field === "string" ? e.field : null);
      }
      const hint = res.status === 401 || res.status === 403 ? " Set token (or RCLOUD_TOKEN) in the provider configuration." : "";
      throw new ApiError("bad_response", `${method} ${url} answered HTTP ${res.status}: ${text.slice(0, 200)}.${hint}`, res.status, null);
    }
    if (json === null || json === undefined) throw new ApiError("bad_response", `${method} ${url} answered HTTP ${res.status} without a JSON body; is ${this.endpoint} an rcloud server?`, res.status, null);
    return json as T;
  }

  /** null if there is no such VM. */
  async getVm(ref: string): Promise<ApiVm | null> {
    try {
      return await this.request<ApiVm>("GET", `/vms/${encodeURIComponent(ref)}`);
    } catch (e) {
      if (e instanceof ApiError && e.code === "not_found" && e.status === 404) return null;
      throw e;
    }
  }

  async listVms(): Promise<ApiVm[]> {
    return (await this.request<{ vms: ApiVm[] }>("GET", "/vms")).vms;
  }

  /**
   * One request does the whole create, so it is not cancelled by StopProvider (a VM created
   * after Terraform stopped listening would be unknown to it) and gets its own long bound.
   */
  createVm(body: CreateVmRequest): Promise<ApiVm> {
    return this.request<ApiVm>("POST", "/vms", body, { detached: true, timeoutMs: Math.max(this.opts.requestTimeoutMs, CREATE_TIMEOUT_MS) });
  }

  /**
   * The VM named `name` (null if none), asked even after StopProvider: used when a create got
   * no answer, to find out whether the server made the VM anyway.
   */
  async findVmByName(name: string): Promise<ApiVm | null> {
    try {
      const vm = await this.request<ApiVm>("GET", `/vms/${encodeURIComponent(name)}`, undefined, { detached: true, timeoutMs: 60_000 });
      return vm.name === name ? vm : null;
    } catch (e) {
      if (e instanceof ApiError && e.code === "not_found" && e.status === 404) return null;
      throw e;
    }
  }

  /** false if it was already gone. */
  async deleteVm(ref: string): Promise<boolean> {
    try {
      await this.request("DELETE", `/vms/${encodeURIComponent(ref)}`);
      return true;
    } catch (e) {
      if (e instanceof ApiError && e.code === "not_found" && e.status === 404) return false;
      throw e;
    }
  }

  updateVm(ref: string, body: UpdateVmRequest): Promise<ApiVm> {
    return this.request<ApiVm>("PATCH", `/vms/${encodeURIComponent(ref)}`, body);
  }

  startVm(ref: string): Promise<ApiVm> {
    return this.request<ApiVm>("POST", `/vms/${encodeURIComponent(ref)}/start`);
  }

  stopVm(ref: string): Promise<ApiVm> {
    return this.request<ApiVm>("POST", `/vms/${encodeURIComponent(ref)}/stop`);
  }

  async listHosts(): Promise<ApiHost[]> {
    return (await this.request<{ hosts: ApiHost[] }>("GET", "/hosts")).hosts;
  }

  async listImages(): Promise<ApiImage[]> {
    return (await this.request<{ images: ApiImage[] }>("GET", "/images")).images;
  }

  /** By id, file name or alias; null if unknown. */
  async getImage(ref: string): Promise<ApiImage | null> {
    try {
      return await this.request<ApiImage>("GET", `/images/${encodeURIComponent(ref)}`);
    } catch (e) {
      if (e instanceof ApiError && e.code === "not_found" && e.status === 404) return null;
      throw e;
    }
  }
}
