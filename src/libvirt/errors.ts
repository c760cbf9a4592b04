/**
 * Errors the libvirt client raises. Upper layers branch on `LibvirtError.code`
 * (libvirt's virErrorNumber) or on the class of connection-level failures.
 */
import type { VirNetMessageError } from "../codecs/generated/virnet.ts";

/** virErrorNumber values a VM manager branches on (full list: libvirt-enums). */
export const ErrorCode = {
  INTERNAL_ERROR: 1,
  NO_SUPPORT: 3,
  NO_CONNECT: 5,
  INVALID_ARG: 8,
  OPERATION_FAILED: 9,
  XML_ERROR: 27,
  XML_DETAIL: 35,
  DOM_EXIST: 28,
  OPERATION_DENIED: 29,
  SYSTEM_ERROR: 38,
  RPC: 39,
  NO_DOMAIN: 42,
  NO_NETWORK: 43,
  AUTH_FAILED: 45,
  NO_STORAGE_POOL: 49,
  NO_STORAGE_VOL: 50,
  OPERATION_INVALID: 55,
  CONFIG_UNSUPPORTED: 67,
  NO_DOMAIN_SNAPSHOT: 72,
  OPERATION_TIMEOUT: 68,
  ARGUMENT_UNSUPPORTED: 74,
  OPERATION_ABORTED: 78,
  NO_DOMAIN_METADATA: 80,
  AGENT_UNRESPONSIVE: 86,
  ACCESS_DENIED: 88,
  STORAGE_VOL_EXIST: 90,
} as const;

/** virErrorDomain values. */
export const ErrorDomain = {
  NONE: 0,
  XML: 5,
  RPC: 7,
  QEMU: 10,
  TEST: 12,
  STORAGE: 18,
  NETWORK: 19,
  DOMAIN: 20,
} as const;

const codeNames = new Map<number, string>(Object.entries(ErrorCode).map(([k, v]) => [v, k]));

/** An error reported by libvirtd (a `remote_error` payload). */
export class LibvirtError extends Error {
  override readonly name = "LibvirtError";
  readonly code: number;
  readonly domain: number;
  readonly level: number;
  readonly str1: string | null;
  readonly str2: string | null;
  readonly str3: string | null;
  readonly int1: number;
  readonly int2: number;
  /** The procedure that failed, e.g. REMOTE_PROC_DOMAIN_LOOKUP_BY_NAME. */
  readonly procedure: string;

  constructor(err: VirNetMessageError, procedure: string) {
    super(err.message ?? `libvirt error ${err.code}`);
    this.code = err.code;
    this.domain = err.domain;
    this.level = err.level;
    this.str1 = err.str1;
    this.str2 = err.str2;
    this.str3 = err.str3;
    this.int1 = err.int1;
    this.int2 = err.int2;
    this.procedure = procedure;
  }

  /** Symbolic name of the code, e.g. "NO_DOMAIN", or "ERROR_<n>". */
  get codeName(): string {
    return codeNames.get(this.code) ?? `ERROR_${this.code}`;
  }

  /** True when the daemon does not know the procedure (an older libvirt). */
  get isUnsupportedProcedure(): boolean {
    return this.code === ErrorCode.RPC && /unknown procedure/.test(this.message);
  }

  /** True when the object (domain, network, pool, volume, metadata) does not exist. */
  get isNotFound(): boolean {
    const c = this.code;
    return (
      c === ErrorCode.NO_DOMAIN ||
      c === ErrorCode.NO_NETWORK ||
      c === ErrorCode.NO_STORAGE_POOL ||
      c === ErrorCode.NO_STORAGE_VOL ||
      c === ErrorCode.NO_DOMAIN_METADATA
    );
  }
}

/** The connection is gone (closed, reset, keepalive timeout); the call's fate is unknown. */
export class ConnectionClosedError extends Error {
  override readonly name = "ConnectionClosedError";
  constructor(
    message: string,
    readonly reason: "closed" | "eof" | "error" | "keepalive" | "protocol",
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** The daemon could not be reached at all. */
export class ConnectError extends Error {
  override readonly name = "ConnectError";
  constructor(
    message: string,
    readonly uri: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** A call did not get its reply within its deadline (the daemon may still complete it). */
export class CallTimeoutError extends Error {
  override readonly name = "CallTimeoutError";
  constructor(
    readonly procedure: string,
    readonly timeoutMs: number,
    /**
     * Settles when the daemon is done with the call after all: its late reply arrived, or the
     * connection closed. Until then the call may still take effect (a domain defined or
     * started after we gave up), so whoever undoes it should look again afterwards.
     */
    readonly finished: Promise<void> = Promise.resolve(),
  ) {
    super(`${procedure} got no reply within ${timeoutMs} ms`);
  }
}

/** The caller's AbortSignal fired before the reply came. */
export class CallAbortedError extends Error {
  override readonly name = "CallAbortedError";
  constructor(
    readonly procedure: string,
    options?: { cause?: unknown },
  ) {
    super(`${procedure} was aborted`, options);
  }
}
