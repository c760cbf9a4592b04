/** How libvirt's failures become the driver errors the VM service understands. */
import { ErrorCode, LibvirtError } from "../../libvirt/index.ts";
import { isNoSpace } from "../shared/no-space.ts";
import { DriverError } from "../types.ts";

/** Passes libvirt errors that mean "already done" (the codes given); throws anything else. */
export function alreadyDone(...codes: number[]): (e: unknown) => void {
  return (e) => {
    if (!(e instanceof LibvirtError && codes.includes(e.code))) throw e;
  };
}

/** Maps client-level failures to driver errors; `what` says what was being done. */
export function translate(e: unknown, what: string): never {
  if (e instanceof DriverError) throw e;
  if (isNoSpace(e)) throw new DriverError("no_space", `${what}: ${(e as Error).message}`, { cause: e });
  if (e instanceof LibvirtError) {
    if (e.code === ErrorCode.NO_DOMAIN) throw new DriverError("not_found", `${what}: no such VM`, { cause: e });
    if (e.code === ErrorCode.OPERATION_INVALID) throw new DriverError("invalid_state", `${what}: ${e.message}`, { cause: e });
    if (e.code === ErrorCode.DOM_EXIST) throw new DriverError("conflict", `${what}: ${e.message}`, { cause: e });
    throw new DriverError("failed", `${what}: ${e.message}`, { cause: e });
  }
  const name = (e as Error)?.name;
  if (name === "ConnectError" || name === "ConnectionClosedError" || name === "CallTimeoutError") {
    throw new DriverError("unavailable", `${what}: libvirt is unavailable: ${(e as Error).message}`, { cause: e });
  }
  // Anything else was not expected (a local file, a bug): for the log, not the client.
  throw new DriverError("failed", `${what}: ${(e as Error)?.message ?? String(e)}`, { cause: e, internal: true });
}
