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
import { XdrDecodeError, XdrReader, XdrWriter, type Encoder, type ProcedureDescriptor } from "../xdr/index.ts";

export const MessageType = { CALL: 0, REPLY: 1, MESSAGE: 2, STREAM: 3, CALL_WITH_FDS: 4, REPLY_WITH_FDS: 5, STREAM_HOLE: 6 } as const;
export const MessageStatus = { OK: 0, ERROR: 1, CONTINUE: 2 } as const;

/** Smallest packet: length word + header, empty payload. */
export const MIN_PACKET = VIR_NET_MESSAGE_LEN_MAX + VIR_NET_MESSAGE_HEADER_MAX;
/** Largest packet the daemon accepts or sends (length word included). */
export const MAX_PACKET = VIR_NET_MESSAGE_LEN_MAX + VIR_NET_MESSAGE_MAX;

export interface Packet {
  readonly header: VirNetMessageHeader;
  /** A view into the parser's buffer: valid only during the callback. Copy to keep. */
  readonly payload: Uint8Array;
  /** A reader over the payload, valid only during the callback (no view is made for it). */
  reader(): XdrReader;
}

/** A packet in the parser's buffer; the payload view is made only if someone asks for it. */
class BufferedPacket implements Packet {
  constructor(
    readonly header: VirNetMessageHeader,
    private readonly bytes: Uint8Array,
    private readonly start: number,
    private readonly end: number,
  ) {}

  get payload(): Uint8Array {
    return this.bytes.subarray(this.start, this.end);
  }

  reader(): XdrReader {
    return new XdrReader(this.bytes, this.start, this.end);
  }
}

/**
 * One writer for every packet (encoding is synchronous, so two never share it): a call costs one
 * allocation, its exact-size copy. A writer a large packet grew is replaced by the next one.
 */
const WRITER_SIZE = 64 * 1024;
let packetWriter = new XdrWriter(WRITER_SIZE);

/** Serializes one packet. `body` encodes the payload; raw bytes go in `raw` (stream data). */
export function encodePacket<T>(header: VirNetMessageHeader, body?: { encode: Encoder<T>; value: T } | null, raw?: Uint8Array): Uint8Array {
  if (raw && !body) return encodeDataPacket(header, raw);
  const w = startPacket(header.prog, header.vers, header.proc, header.type, header.serial, header.status);
  if (body) body.encode(w, body.value);
  if (raw) w.raw(raw);
  return finishPacket(w);
}

/** Stream data (up to 256 KiB a packet) is copied once, straight into a packet of its size. */
function encodeDataPacket(header: VirNetMessageHeader, raw: Uint8Array): Uint8Array {
  const length = MIN_PACKET + raw.byteLength;
  if (length > MAX_PACKET) throw new XdrDecodeError("BAD_PACKET", `packet of ${length} bytes exceeds the protocol limit of ${MAX_PACKET}`, 0);
  const w = startPacket(header.prog, header.vers, header.proc, header.type, header.serial, header.status);
  w.patchUint(0, length);
  const packet = new Uint8Array(length);
  packet.set(w.bytes(), 0);
  packet.set(raw, MIN_PACKET);
  return packet;
}

/** Serializes a CALL of `desc` (the connection's hot path: no header or body objects on the way). */
export function encodeCall<A>(desc: ProcedureDescriptor<A, unknown>, serial: number, args: A): Uint8Array {
  const w = startPacket(desc.program, desc.version, desc.proc, MessageType.CALL, serial, MessageStatus.OK);
  if (desc.encodeArgs) desc.encodeArgs(w, args);
  return finishPacket(w);
}

function startPacket(prog: number, vers: number, proc: number, type: number, serial: number, status: number): XdrWriter {
  if (packetWriter.capacity > 16 * WRITER_SIZE) packetWriter = new XdrWriter(WRITER_SIZE);
  const w = packetWriter;
  w.reset();
  w.uint(0); // length, patched by finishPacket
  w.uint(prog);
  w.uint(vers);
  w.int(proc);
  w.int(type);
  w.uint(serial);
  w.int(status);
  return w;
}

function finishPacket(w: XdrWriter): Uint8Array {
  if (w.length > MAX_PACKET) {
    throw new XdrDecodeError("BAD_PACKET", `packet of ${w.length} bytes exceeds the protocol limit of ${MAX_PACKET}`, 0);
  }
  w.patchUint(0, w.length);
  return w.copy();
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
      const at = pos;
      pos += len;
      this.onPacket(new BufferedPacket(header, bytes, at + MIN_PACKET, at + len));
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
