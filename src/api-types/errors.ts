/**
 * The API's error codes and the HTTP status each answers with (part of the API contract:
 * clients branch on `error.code`), and the error the server's layers throw with one of them.
 */

export const ERROR_STATUS = {
  bad_request: 400,
  validation_error: 422,
  image_not_found: 422,
  capacity_exceeded: 422,
  quota_exceeded: 403,
  share_not_allowed: 422,
  unauthorized: 401,
  forbidden: 403,
  forbidden_origin: 403,
  forbidden_host: 403,
  payload_too_large: 413,
  length_required: 411,
  nothing_uploaded: 409,
  boot_failed: 422,
  not_found: 404,
  dump_not_found: 404,
  name_taken: 409,
  snapshot_exists: 409,
  invalid_state: 409,
  conflict: 409,
  hypervisor_unavailable: 503,
  host_unavailable: 503,
  unsupported: 501,
  insufficient_storage: 507,
  internal_error: 500,
} as const;

export type ErrorCodeName = keyof typeof ERROR_STATUS;

/** Every error answer: `{"error": {"code", "message", "field"?}}`. */
export interface ApiErrorBody {
  error: { code: string; message: string; field?: string; [detail: string]: unknown };
}

/**
 * A refusal with a stable code and a message that says what to do about it. `internal`: the
 * message is about something unexpected (a failed system call, a bug) and may name what
 * clients must not see (host paths); the API answers with a generic message and logs this one.
 */
export class ServiceError extends Error {
  override readonly name = "ServiceError";
  readonly status: number;
  readonly internal: boolean;
  constructor(
    readonly code: ErrorCodeName,
    message: string,
    readonly details?: Record<string, unknown>,
    options?: { cause?: unknown; internal?: boolean },
  ) {
    super(message, options);
    this.status = ERROR_STATUS[code];
    this.internal = options?.internal ?? false;
  }
}
