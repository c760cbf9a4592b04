import { XdrDecodeError } from "./errors.ts";

const utf8 = new TextDecoder("utf-8");

/**
 * Bounded XDR (RFC 4506) decoder over one message payload.
 *
 * Every length read from the wire is checked against the declared bound *and* against the
 * bytes actually left before anything is allocated, so a hostile length word costs nothing.
 */
export class XdrReader {
  private viewCache: DataView | null = null;
  private pos: number;
  private readonly end: number;

  constructor(
    readonly bytes: Uint8Array,
    start = 0,
    end = bytes.byteLength,
  ) {
    this.pos = start;
    this.end = end;
  }

  /** Only floats need a DataView; integers are read byte-wise, which is cheaper per reply. */
  private get view(): DataView {
    return (this.viewCache ??= new DataView(this.bytes.buffer, this.bytes.byteOffset, this.bytes.byteLength));
  }

  private u32(at: number): number {
    const b = this.bytes;
    return ((b[at]! << 24) | (b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!) >>> 0;
  }

  get offset(): number {
    return this.pos;
  }

  get remaining(): number {
    return this.end - this.pos;
  }

  private need(n: number, what: string): void {
    if (this.end - this.pos < n) {
      throw new XdrDecodeError("SHORT_BUFFER", `need ${n} bytes for ${what}, have ${this.end - this.pos}`, this.pos);
    }
  }

  int(): number {
    this.need(4, "int");
    const v = this.u32(this.pos) | 0;
    this.pos += 4;
    return v;
  }

  uint(): number {
    this.need(4, "unsigned int");
    const v = this.u32(this.pos);
    this.pos += 4;
    return v;
  }

  hyper(): bigint {
    return BigInt.asIntN(64, this.uhyper());
  }

  uhyper(): bigint {
    this.need(8, "hyper");
    const hi = this.u32(this.pos);
    const lo = this.u32(this.pos + 4);
    this.pos += 8;
    return hi === 0 ? BigInt(lo) : (BigInt(hi) << 32n) | BigInt(lo);
  }

  float(): number {
    this.need(4, "float");
    const v = this.view.getFloat32(this.pos);
    this.pos += 4;
    return v;
  }

  double(): number {
    this.need(8, "double");
    const v = this.view.getFloat64(this.pos);
    this.pos += 8;
    return v;
  }

  bool(): boolean {
    const at = this.pos;
    const v = this.int();
    if (v === 0) return false;
    if (v === 1) return true;
    throw new XdrDecodeError("BAD_BOOL", `bool must be 0 or 1, got ${v}`, at);
  }

  /** An enum value, checked against the declared members. */
  enumValue(valid: ReadonlySet<number>, typeName: string): number {
    const at = this.pos;
    const v = this.int();
    if (!valid.has(v)) throw new XdrDecodeError("BAD_ENUM", `${v} is not a value of ${typeName}`, at);
    return v;
  }

  /** Reads a variable-length count and checks it against `max` and the bytes left. */
  count(max: number, minElementSize: number, what: string): number {
    const at = this.pos;
    const n = this.uint();
    if (n > max) throw new XdrDecodeError("LENGTH_EXCEEDED", `${what}: count ${n} exceeds bound ${max}`, at);
    if (minElementSize > 0 && n * minElementSize > this.end - this.pos) {
      throw new XdrDecodeError("SHORT_BUFFER", `${what}: ${n} elements cannot fit in ${this.end - this.pos} bytes`, at);
    }
    return n;
  }

  private skipPadding(len: number): void {
    const pad = (4 - (len & 3)) & 3;
    if (pad === 0) return;
    this.need(pad, "padding");
    for (let i = 0; i < pad; i++) {
      if (this.bytes[this.pos + i] !== 0) {
        throw new XdrDecodeError("BAD_PADDING", "padding bytes must be zero", this.pos + i);
      }
    }
    this.pos += pad;
  }

  /** Fixed-length opaque data (e.g. a 16-byte UUID). Returns a copy. */
  opaqueFixed(len: number): Uint8Array {
    this.need(len, "fixed opaque");
    const out = this.bytes.slice(this.pos, this.pos + len);
    this.pos += len;
    this.skipPadding(len);
    return out;
  }

  /** Variable-length opaque data, bounded by `max`. Returns a copy. */
  opaqueVar(max: number): Uint8Array {
    const len = this.count(max, 1, "opaque");
    return this.opaqueFixed(len);
  }

  /** A string of at most `max` bytes (UTF-8; invalid sequences become U+FFFD). */
  string(max: number): string {
    const len = this.count(max, 1, "string");
    this.need(len, "string");
    const start = this.pos;
    this.pos += len;
    const s = asciiFastPath(this.bytes, start, len) ?? utf8.decode(this.bytes.subarray(start, start + len));
    this.skipPadding(len);
    return s;
  }

  /** Fails unless the whole payload was consumed. */
  finish(what: string): void {
    if (this.pos !== this.end) {
      throw new XdrDecodeError("TRAILING_BYTES", `${what}: ${this.end - this.pos} unexpected trailing bytes`, this.pos);
    }
  }
}

/** Short ASCII strings (names, UUID text, hostnames) are most strings; skip TextDecoder for them. */
function asciiFastPath(bytes: Uint8Array, start: number, len: number): string | undefined {
  if (len > 64) return undefined;
  let s = "";
  for (let i = start; i < start + len; i++) {
    const c = bytes[i]!;
    if (c >= 0x80) return undefined;
    s += String.fromCharCode(c);
  }
  return s;
}
