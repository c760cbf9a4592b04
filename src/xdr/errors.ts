/**
 * Typed errors of the XDR layer. Decoders see bytes from the network, so every failure
 * is one of these (never a RangeError from a DataView or an allocation failure).
 */

export type XdrDecodeErrorCode =
  | "SHORT_BUFFER" // fewer bytes left than the type needs
  | "LENGTH_EXCEEDED" // a length or count above the declared bound
  | "BAD_BOOL" // a bool that is neither 0 nor 1
  | "BAD_ENUM" // an enum value the declaration does not list
  | "BAD_UNION" // a union discriminant with no arm and no default
  | "BAD_PADDING" // non-zero padding bytes
  | "TRAILING_BYTES" // a message longer than its declared payload
  | "BAD_PACKET"; // framing-level problem (length word, header)

export class XdrDecodeError extends Error {
  override readonly name = "XdrDecodeError";
  constructor(
    readonly code: XdrDecodeErrorCode,
    message: string,
    readonly offset: number,
  ) {
    super(`${message} (at byte ${offset})`);
  }
}

export type XdrEncodeErrorCode = "LENGTH_EXCEEDED" | "BAD_VALUE" | "BAD_UNION";

export class XdrEncodeError extends Error {
  override readonly name = "XdrEncodeError";
  constructor(
    readonly code: XdrEncodeErrorCode,
    message: string,
  ) {
    super(message);
  }
}
