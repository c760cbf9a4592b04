/**
 * Errors the QMP client raises. Callers branch on the class; `QmpError.errorClass` carries
 * QEMU's own error class (GenericError, CommandNotFound, DeviceNotFound, ...).
 */

/** QEMU answered a command with `{"error": {"class", "desc"}}`. */
export class QmpError extends Error {
  override readonly name = "QmpError";
  constructor(
    /** QEMU's error class, e.g. "CommandNotFound" or "GenericError". */
    readonly errorClass: string,
    /** QEMU's human-readable description. */
    readonly desc: string,
    /** The command that failed. */
    readonly command: string,
  ) {
    super(`${command}: ${desc} (${errorClass})`);
  }
}

/**
 * The peer broke the protocol: an oversize line, a greeting that is not a greeting, or a
 * reply to one of our commands that has the wrong shape. Fatal kinds (oversize line, bad
 * greeting) close the client; a malformed reply only fails the command it answers.
 */
export class QmpProtocolError extends Error {
  override readonly name = "QmpProtocolError";
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** A deadline passed: connecting, waiting for the greeting, a command's reply, or an event. */
export class QmpTimeoutError extends Error {
  override readonly name = "QmpTimeoutError";
  constructor(
    /** What timed out: a command name, or "connect", "greeting", "event <NAME>". */
    readonly operation: string,
    readonly timeoutMs: number,
  ) {
    super(`${operation}: no answer within ${timeoutMs} ms`);
  }
}

/**
 * The QMP socket is gone (QEMU exited or was killed, the socket failed, or close() was
 * called). The fate of a command that was in flight is unknown.
 */
export class QmpClosedError extends Error {
  override readonly name = "QmpClosedError";
  constructor(
    message: string,
    /** closed: close() was called; eof/error: the socket ended or failed; protocol: closed after a QmpProtocolError. */
    readonly reason: "closed" | "eof" | "error" | "protocol",
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** The socket could not be opened at all (no such socket, connection refused). */
export class QmpConnectError extends Error {
  override readonly name = "QmpConnectError";
  constructor(
    message: string,
    readonly path: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** The caller's AbortSignal fired before the reply came (QEMU may still run the command). */
export class QmpAbortedError extends Error {
  override readonly name = "QmpAbortedError";
  constructor(
    readonly command: string,
    options?: { cause?: unknown },
  ) {
    super(`${command} was aborted`, options);
  }
}
