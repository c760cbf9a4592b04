/**
 * Errors the VM service raises: ServiceErrors (src/api-types/errors.ts), with driver
 * failures mapped onto the API's codes.
 */
import { ServiceError } from "../api-types/errors.ts";
import { DriverError } from "../drivers/types.ts";


/**
 * Maps driver failures to service errors. Unexpected ones (not a DriverError, or one marked
 * internal) become `internal` internal_errors: the API logs their message and answers with a
 * generic one.
 */
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
      case "no_space":
        return new ServiceError("insufficient_storage", e.message, undefined, { cause: e });
      case "share_not_allowed":
        return new ServiceError("share_not_allowed", e.message, undefined, { cause: e });
      default:
        return new ServiceError("internal_error", e.message, undefined, { cause: e, internal: e.internal });
    }
  }
  return new ServiceError("internal_error", `unexpected error: ${(e as Error)?.message ?? String(e)}`, undefined, { cause: e, internal: true });
}
