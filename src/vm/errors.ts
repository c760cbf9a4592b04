/**
 * Errors the VM service raises. Each has a stable `code` (part of the API contract) and
 * the HTTP status adapters should answer with; messages say what to do about it.
 */
import { DriverError } from "../drivers/types.ts";

export const ERROR_STATUS = {
  bad_request: 400,
  validation_error: 422,
  image_not_found: 422,
  capacity_exceeded: 422,
  quota_exceeded: 422,
  unauthorized: 401,
  forbidden: 403,
  forbidden_origin: 403,
  forbidden_host: 403,
  payload_too_large: 413,
  not_found: 404,
  name_taken: 409,
  invalid_state: 409,
  conflict: 409,
  hypervisor_unavailable: 503,
  unsupported: 501,
  internal_error: 500,
} as const;

export type ErrorCodeName = keyof typeof ERROR_STATUS;

export class ServiceError extends Error {
  override readonly name = "ServiceError";
  readonly status: number;
  constructor(
    readonly code: ErrorCodeName,
    message: string,
    readonly details?: Record<string, unknown>,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.status = ERROR_STATUS[code];
  }
}

/** Maps driver failures to service errors (never leaking internals beyond the message). */
export function fromDriver(e: unknown): ServiceError {
  if (e instanceof ServiceError) return e;
  if (e instanceof DriverError) {
    switch (e.code) {
      case "not_found":
        return new ServiceError("not_found", e.message, undefined, { cause: e });
      case "conflict":
        return new ServiceError("conflict", e.message, undefined, { cause: e });
      case "invalid_state":
        return new ServiceError("invalid_state", e.message, undefined, { cause: e });
      case "unavailable":
        return new ServiceError("hypervisor_unavailable", e.message, undefined, { cause: e });
      case "unsupported":
        return new ServiceError("unsupported", e.message, undefined, { cause: e });
      default:
        return new ServiceError("internal_error", e.message, undefined, { cause: e });
    }
  }
  return new ServiceError("internal_error", `unexpected error: ${(e as Error)?.message ?? String(e)}`, undefined, { cause: e });
}
