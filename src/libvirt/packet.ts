/**
 * libvirt RPC packet framing: a serializer and an incremental parser, kept apart from the
 * connection (as node-postgres keeps pg-protocol apart from its client) so both can be
 * tested and fuzzed on their own.
 *
 * Wire: u32 length (counting itself) | 24-byte header | payload.
 */
import {
  VIR_NET_MESSAGE_HEADER_MAX,
  VIR_NET_MESSAGE_LEN_MAX,
  VIR_NET_MESSAGE_MAX,
  virNetMessageStatusValues,
  virNetMessageTypeValues,
  type VirNetMessageHeader,
} from "../codecs/generated/virnet.ts";
import { XdrDecodeError, XdrWriter, type Encoder } from "../xdr/index.ts";

export const MessageType = { CALL: 0, REPLY: 1, MESSAGE: 2, STREAM: 3, CALL_WITH_FDS: 4, REPLY_WITH_FDS: 5, STREAM_HOLE: 6 } as const;
export const MessageStatus = { OK: 0, ERROR: 1, CONTINUE: 2 } as const;

/** Smallest packet: length word + header, empty payload. */
export const MIN_PACKET = VIR_NET_MESSAGE_LEN_MAX + VIR_NET_MESSAGE_HEADER_MAX;
/** Largest packet the daemon accepts or sends (length word included). */
export const MAX_PACKET = VIR_NET_MESSAGE_LEN_MAX + VIR_NET_MESSAGE_MAX;

export interface Packet {
  header: VirNetMessageHeader;
  /** A view into the parser's buffer: valid only during the callback. Copy to keep. */
  payload: Uint8Array;
}

/** Serializes one packet. `body` encodes the payload; raw bytes go in `raw` (stream data). */
export function encodePacket<T>(header: VirNetMessageHeader, body?: { encode: Encoder<T>; value: T } | null, raw?: Uint8Array): Uint8Array {
  const w = new XdrWriter(MIN_PACKET + (raw?.byteLength ?? 64));
  w.uint(0); // length, patched below
  w.uint(header.prog);
  w.uint(header.vers);
  w.int(header.proc);
  w.int(header.type);
  w.uint(header.serial);
  w.int(header.status);
  if (body) body.encode(w, body.value);
  if (raw) w.raw(raw);
  if (w.length > MAX_PACKET) {
    throw new XdrDecodeError("BAD_PACKET", `packet of ${w.length} bytes exceeds the protocol limit of ${MAX_PACKET}`, 0);
  }
  w.patchUint(0, w.length);
  return w.bytes();
}

/**
 * Incremental packet reader. Feed it socket chunks in any sizes; it calls `onPacket` once per
 * complete packet. Lengths are validated before buffering, so memory stays bounded by one
 * maximal packet. A framing error throws XdrDecodeError and leaves the parser unusable
 * (the connection must be dropped: there is no way to resynchronise a byte stream).
 */
export class PacketParser {
  private buf = new Uint8Array(0);
  private start = 0;
  private end = 0;
  private broken: XdrDecodeError | null = null;

  constructor(private readonly onPacket: (p: Packet) => void) {}

  /** Bytes held waiting for the rest of a packet. */
  get buffered(): number {
    return this.end - this.start;
  }

  push(chunk: Uint8Array): void {
    if (this.broken) throw this.broken;
    try {
      if (this.end === this.start) {
        // Nothing pending: parse straight from the chunk, keep only the unfinished tail.
        const used = this.drain(chunk, 0, chunk.byteLength);
        if (used < chunk.byteLength) this.keep(chunk.subarray(used));
        return;
      }
      this.append(chunk);
      this.start += this.drain(this.buf, this.start, this.end) - this.start;
      if (this.start === this.end) this.start = this.end = 0;
    } catch (e) {
      if (e instanceof XdrDecodeError) this.broken = e;
      throw e;
    }
  }

  /** Parses complete packets in bytes[from, to); returns the offset of the first unparsed byte. */
  private drain(bytes: Uint8Array, from: number, to: number): number {
    // Byte-wise big-endian reads: cheaper than a DataView per socket chunk.
    const u32 = (at: number) => ((bytes[at]! << 24) | (bytes[at + 1]! << 16) | (bytes[at + 2]! << 8) | bytes[at + 3]!) >>> 0;
    let pos = from;
    while (to - pos >= VIR_NET_MESSAGE_LEN_MAX) {
      const len = u32(pos);
      if (len < MIN_PACKET || len > MAX_PACKET) {
        throw new XdrDecodeError("BAD_PACKET", `packet length ${len} outside [${MIN_PACKET}, ${MAX_PACKET}]`, pos);
      }
      if (to - pos < len) break;
      const type = u32(pos + 16) | 0;
      const status = u32(pos + 24) | 0;
      if (!virNetMessageTypeValues.has(type)) throw new XdrDecodeError("BAD_PACKET", `unknown message type ${type}`, pos + 16);
      if (!virNetMessageStatusValues.has(status)) throw new XdrDecodeError("BAD_PACKET", `unknown message status ${status}`, pos + 24);
      const header: VirNetMessageHeader = {
        prog: u32(pos + 4),
        vers: u32(pos + 8),
        proc: u32(pos + 12) | 0,
        type,
        serial: u32(pos + 20),
        status,
      };
      const payload = bytes.subarray(pos + MIN_PACKET, pos + len);
      pos += len;
      this.onPacket({ header, payload });
    }
    return pos;
  }

  private keep(tail: Uint8Array): void {
    this.start = 0;
    this.end = 0;
    this.append(tail);
  }

  private append(chunk: Uint8Array): void {
    const pending = this.end - this.start;
    // Before growing, check the pending packet's declared length so garbage can't make us buffer forever.
    const need = pending + chunk.byteLength;
    if (need > this.buf.byteLength - this.start) {
      if (need > this.buf.byteLength) {
        const cap = Math.min(Math.max(need, this.buf.byteLength * 2, 64 * 1024), MAX_PACKET + chunk.byteLength);
        if (need > cap) throw new XdrDecodeError("BAD_PACKET", "buffered data exceeds one maximal packet", 0);
        const next = new Uint8Array(cap);
        next.set(this.buf.subarray(this.start, this.end));
        this.buf = next;
      } else {
        this.buf.copyWithin(0, this.start, this.end);
      }
      this.start = 0;
      this.end = pending;
    }
    this.buf.set(chunk, this.end);
    this.end += chunk.byteLength;
    // Validate the length word as soon as we have it.
    if (this.end - this.start >= VIR_NET_MESSAGE_LEN_MAX) {
      const b = this.buf;
      const at = this.start;
      const len = ((b[at]! << 24) | (b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!) >>> 0;
      if (len < MIN_PACKET || len > MAX_PACKET) {
        throw new XdrDecodeError("BAD_PACKET", `packet length ${len} outside [${MIN_PACKET}, ${MAX_PACKET}]`, this.start);
      }
    }
  }
}
