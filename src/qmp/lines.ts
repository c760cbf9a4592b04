/**
 * Splits a byte stream into newline-terminated lines with a bounded buffer.
 *
 * Lines are cut on the 0x0A byte before decoding. In UTF-8 that byte never occurs inside a
 * multi-byte sequence, so a character split across two chunks is always reassembled before
 * it is decoded. Decoding is strict: a line that is not valid UTF-8 is reported as `null`
 * rather than silently repaired.
 */
export class LineTooLongError extends Error {
  override readonly name = "LineTooLongError";
  constructor(readonly limit: number) {
    super(`line longer than ${limit} bytes`);
  }
}

const NEWLINE = 0x0a;

export class LineSplitter {
  /** Bytes of the current, unterminated line (copied: the caller may reuse its chunk). */
  private partial: Uint8Array[] = [];
  private partialLength = 0;
  private readonly decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

  constructor(
    /** Largest line accepted, in bytes, without its terminator. */
    private readonly maxLineBytes: number,
    /** Called per line, without "\n" or a trailing "\r"; `null` when it is not valid UTF-8. */
    private readonly onLine: (line: string | null) => void,
    /** Lets the consumer stop processing mid-chunk (e.g. after closing). */
    private readonly stopped: () => boolean = () => false,
  ) {}

  /** Feeds one chunk. Throws LineTooLongError once a line exceeds the limit. */
  push(chunk: Uint8Array): void {
    let start = 0;
    while (start < chunk.byteLength && !this.stopped()) {
      const nl = chunk.indexOf(NEWLINE, start);
      if (nl < 0) {
        const rest = chunk.byteLength - start;
        if (this.partialLength + rest > this.maxLineBytes) throw new LineTooLongError(this.maxLineBytes);
        this.partial.push(chunk.slice(start));
        this.partialLength += rest;
        return;
      }
      if (this.partialLength + (nl - start) > this.maxLineBytes) throw new LineTooLongError(this.maxLineBytes);
      let bytes: Uint8Array;
      if (this.partial.length === 0) {
        bytes = chunk.subarray(start, nl);
      } else {
        bytes = new Uint8Array(this.partialLength + (nl - start));
        let off = 0;
        for (const p of this.partial) {
          bytes.set(p, off);
          off += p.byteLength;
        }
        bytes.set(chunk.subarray(start, nl), off);
        this.partial = [];
        this.partialLength = 0;
      }
      start = nl + 1;
      this.onLine(this.decode(bytes));
    }
  }

  /** Bytes buffered for the current unterminated line. */
  get buffered(): number {
    return this.partialLength;
  }

  private decode(bytes: Uint8Array): string | null {
    let end = bytes.byteLength;
    if (end > 0 && bytes[end - 1] === 0x0d) end--; // QEMU terminates lines with "\r\n"
    try {
      return this.decoder.decode(bytes.subarray(0, end));
    } catch {
      return null;
    }
  }
}
