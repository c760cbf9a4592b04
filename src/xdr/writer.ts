import { XdrEncodeError } from "./errors.ts";

const utf8 = new TextEncoder();
const INT32_MIN = -0x80000000;
const INT32_MAX = 0x7fffffff;
const UINT32_MAX = 0xffffffff;

/** Floats go through this scratch word (integers are written byte-wise: no DataView per writer). */
const scratch = new DataView(new ArrayBuffer(8));

/**
 * Growable XDR (RFC 4506) encoder. Values are range-checked so bad input never goes on the wire.
 * Integers are written byte by byte: a DataView would need the array's `.buffer`, which makes
 * the engine move a small array's storage out of the GC heap — per packet, on the call path.
 */
export class XdrWriter {
  private buf: Uint8Array;
  private pos = 0;

  constructor(initialSize = 256) {
    this.buf = new Uint8Array(initialSize);
  }

  get length(): number {
    return this.pos;
  }

  /** Bytes the buffer holds before it has to grow. */
  get capacity(): number {
    return this.buf.byteLength;
  }

  /** Starts over, keeping the buffer (a writer reused for many messages). */
  reset(): void {
    this.pos = 0;
  }

  /** A copy of the encoded bytes, exactly as long as the message. */
  copy(): Uint8Array {
    return this.buf.slice(0, this.pos);
  }

  private put32(at: number, v: number): void {
    const b = this.buf;
    b[at] = v >>> 24;
    b[at + 1] = v >>> 16;
    b[at + 2] = v >>> 8;
    b[at + 3] = v;
  }

  private ensure(n: number): void {
    if (this.pos + n <= this.buf.byteLength) return;
    let size = this.buf.byteLength * 2;
    while (size < this.pos + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
  }

  int(v: number): void {
    if (!Number.isInteger(v) || v < INT32_MIN || v > INT32_MAX) {
      throw new XdrEncodeError("BAD_VALUE", `int out of range: ${v}`);
    }
    this.ensure(4);
    this.put32(this.pos, v);
    this.pos += 4;
  }

  uint(v: number): void {
    if (!Number.isInteger(v) || v < 0 || v > UINT32_MAX) {
      throw new XdrEncodeError("BAD_VALUE", `unsigned int out of range: ${v}`);
    }
    this.ensure(4);
    this.put32(this.pos, v);
    this.pos += 4;
  }

  hyper(v: bigint): void {
    if (typeof v !== "bigint") throw new XdrEncodeError("BAD_VALUE", "hyper must be a bigint");
    this.put64(BigInt.asUintN(64, v));
  }

  uhyper(v: bigint): void {
    if (typeof v !== "bigint" || v < 0n) throw new XdrEncodeError("BAD_VALUE", "unsigned hyper must be a non-negative bigint");
    this.put64(BigInt.asUintN(64, v));
  }

  private put64(v: bigint): void {
    this.ensure(8);
    this.put32(this.pos, Number(v >> 32n));
    this.put32(this.pos + 4, Number(v & 0xffffffffn));
    this.pos += 8;
  }

  float(v: number): void {
    scratch.setFloat32(0, v);
    this.putScratch(4);
  }

  double(v: number): void {
    scratch.setFloat64(0, v);
    this.putScratch(8);
  }

  private putScratch(n: 4 | 8): void {
    this.ensure(n);
    for (let i = 0; i < n; i++) this.buf[this.pos + i] = scratch.getUint8(i);
    this.pos += n;
  }

  bool(v: boolean): void {
    this.int(v ? 1 : 0);
  }

  /** Length prefix of a variable-length array, checked against its bound. */
  count(n: number, max: number, what: string): void {
    if (n > max) throw new XdrEncodeError("LENGTH_EXCEEDED", `${what}: ${n} elements exceed bound ${max}`);
    this.uint(n);
  }

  private pad(len: number): void {
    const pad = (4 - (len & 3)) & 3;
    this.ensure(pad);
    for (let i = 0; i < pad; i++) this.buf[this.pos++] = 0;
  }

  opaqueFixed(v: Uint8Array, len: number): void {
    if (v.byteLength !== len) throw new XdrEncodeError("BAD_VALUE", `fixed opaque needs ${len} bytes, got ${v.byteLength}`);
    this.ensure(len);
    this.buf.set(v, this.pos);
    this.pos += len;
    this.pad(len);
  }

  opaqueVar(v: Uint8Array, max: number): void {
    this.count(v.byteLength, max, "opaque");
    this.opaqueFixed(v, v.byteLength);
  }

  string(v: string, max: number): void {
    if (typeof v !== "string") throw new XdrEncodeError("BAD_VALUE", "expected a string");
    if (v.length <= 64 && this.asciiString(v, max)) return;
    // Encode straight into the buffer: worst case 3 bytes per UTF-16 unit.
    this.ensure(4 + v.length * 3 + 3);
    const lenAt = this.pos;
    this.pos += 4;
    const { written } = utf8.encodeInto(v, this.buf.subarray(this.pos));
    if (written > max) throw new XdrEncodeError("LENGTH_EXCEEDED", `string of ${written} bytes exceeds bound ${max}`);
    this.put32(lenAt, written);
    this.pos += written;
    this.pad(written);
  }

  /** Short ASCII strings (names, URIs) without TextEncoder; false if `v` is not ASCII. */
  private asciiString(v: string, max: number): boolean {
    const n = v.length;
    this.ensure(4 + n + 3);
    const at = this.pos + 4;
    for (let i = 0; i < n; i++) {
      const c = v.charCodeAt(i);
      if (c >= 0x80) return false;
      this.buf[at + i] = c;
    }
    if (n > max) throw new XdrEncodeError("LENGTH_EXCEEDED", `string of ${n} bytes exceeds bound ${max}`);
    this.put32(this.pos, n);
    this.pos = at + n;
    this.pad(n);
    return true;
  }

  /** Appends bytes that are already XDR-encoded (or raw stream data). */
  raw(bytes: Uint8Array): void {
    this.ensure(bytes.byteLength);
    this.buf.set(bytes, this.pos);
    this.pos += bytes.byteLength;
  }

  /** Overwrites a big-endian u32 at an earlier offset (used for packet length words). */
  patchUint(at: number, v: number): void {
    this.put32(at, v);
  }

  /** The encoded bytes (a view; copy it if the writer is reused). */
  bytes(): Uint8Array {
    return this.buf.subarray(0, this.pos);
  }
}
