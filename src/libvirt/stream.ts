/**
 * libvirt streams (console, channel, volume upload/download) as Web streams.
 *
 * Protocol (all packets type STREAM, with the serial of the opening call):
 *   data     CONTINUE + raw bytes, either way (at most 262 120 bytes per packet)
 *   EOF      server sends CONTINUE with an empty payload
 *   finish   client sends OK; server answers OK, or ERROR if finishing failed
 *   abort    client sends ERROR with an empty payload; server answers OK
 *   failure  server sends ERROR with a remote_error
 */
import { VIR_NET_MESSAGE_LEGACY_PAYLOAD_MAX } from "../codecs/generated/virnet.ts";
import { MessageStatus } from "./packet.ts";

/** What the stream needs from its connection. */
export interface StreamChannel {
  send(status: number, data?: Uint8Array): void;
  drained(threshold: number): Promise<void>;
  release(): void;
  /**
   * Stop / go on reading the connection's socket (read backpressure; the whole connection
   * waits). pauseReading answers false when it cannot pause yet.
   */
  pauseReading(): boolean;
  resumeReading(): void;
}

export type StreamState = "open" | "finishing" | "aborting" | "closed" | "failed";

/** Above this many queued bytes, writers wait for the socket to drain. */
const WRITE_HIGH_WATER = 1024 * 1024;

export class LibvirtStream {
  readonly readable: ReadableStream<Uint8Array>;
  readonly writable: WritableStream<Uint8Array>;
  private readController!: ReadableStreamDefaultController<Uint8Array>;
  private readClosed = false;
  /** The connection's socket is paused for this stream's reader (readHighWaterMark). */
  private paused = false;
  private state: StreamState = "open";
  private doneResolve!: () => void;
  private doneReject!: (e: unknown) => void;
  /** Settles when the stream is finished (resolves) or failed/aborted by the server (rejects). */
  readonly done: Promise<void>;

  /**
   * `readHighWaterMark`: bytes received and not yet read above which the connection stops
   * reading its socket until the reader catches up, so the daemon is held back by TCP instead
   * of the data piling up here. Only for a connection of its own: every call on it waits too.
   * Without it, data is queued as it comes (console output must never stall other calls).
   */
  constructor(
    readonly procedure: string,
    private readonly channel: StreamChannel,
    private readonly readHighWaterMark: number | null = null,
  ) {
    this.done = new Promise<void>((resolve, reject) => {
      this.doneResolve = resolve;
      this.doneReject = reject;
    });
    this.done.catch(() => {}); // observed through readable/writable or by awaiting done
    this.readable = new ReadableStream<Uint8Array>(
      {
        start: (c) => {
          this.readController = c;
        },
        pull: () => this.resumeReading(),
        cancel: async () => {
          this.readClosed = true;
          this.resumeReading(); // the daemon's answer to the abort must get through
          if (this.state === "open") await this.abort();
        },
      },
      { highWaterMark: readHighWaterMark ?? 1, size: (chunk) => (readHighWaterMark === null ? 1 : (chunk?.byteLength ?? 0)) },
    );
    this.writable = new WritableStream<Uint8Array>({
      write: async (chunk) => this.write(chunk),
      close: async () => this.finish(),
      abort: async () => this.abort(),
    });
  }

  get status(): StreamState {
    return this.state;
  }

  /** Sends data, split into protocol-sized packets; waits when the socket is backed up. */
  async write(chunk: Uint8Array): Promise<void> {
    if (this.state !== "open") throw new Error(`${this.procedure}: stream is ${this.state}`);
    const max = VIR_NET_MESSAGE_LEGACY_PAYLOAD_MAX;
    for (let off = 0; off < chunk.byteLength; off += max) {
      this.channel.send(MessageStatus.CONTINUE, chunk.subarray(off, Math.min(off + max, chunk.byteLength)));
    }
    await this.channel.drained(WRITE_HIGH_WATER);
    if ((this.state as StreamState) === "failed") await this.done;
  }

  /** Tells the server we are done sending and waits for its confirmation. */
  async finish(): Promise<void> {
    if (this.state === "open") {
      this.state = "finishing";
      this.channel.send(MessageStatus.OK);
    }
    return this.done;
  }

  /** Abandons the stream; the server confirms and drops its end. */
  async abort(): Promise<void> {
    this.resumeReading(); // the daemon's confirmation must get through
    if (this.state === "open" || this.state === "finishing") {
      this.state = "aborting";
      this.channel.send(MessageStatus.ERROR);
    }
    try {
      await this.done;
    } catch {
      // an aborted stream has no result to report
    }
  }

  // ---- called by the connection ----

  private resumeReading(): void {
    if (!this.paused) return;
    this.paused = false;
    this.channel.resumeReading();
  }

  /** @internal */
  onData(bytes: Uint8Array): void {
    if (this.readClosed) return;
    this.readController.enqueue(bytes);
    if (this.readHighWaterMark !== null && !this.paused && (this.readController.desiredSize ?? 0) <= 0) {
      this.paused = this.channel.pauseReading();
    }
  }

  /** @internal Server end of data. Like the C client, answer with finish. */
  onEof(): void {
    this.closeReadable();
    if (this.state === "open") {
      this.state = "finishing";
      this.channel.send(MessageStatus.OK);
    }
  }

  /** @internal Server confirmed finish or abort. */
  onServerOk(): void {
    this.closeReadable();
    this.settle(null);
  }

  /** @internal */
  onFailure(error: Error): void {
    if (this.state === "aborting") {
      // The server may report the abort itself as an error; the abort succeeded.
      this.closeReadable();
      this.settle(null);
      return;
    }
    if (!this.readClosed) {
      this.readClosed = true;
      this.readController.error(error);
    }
    this.settle(error);
  }

  private closeReadable(): void {
    this.resumeReading(); // no data follows: only the daemon's last word, which must be read
    if (this.readClosed) return;
    this.readClosed = true;
    this.readController.close();
  }

  private settle(error: Error | null): void {
    if (this.state === "closed" || this.state === "failed") return;
    this.resumeReading();
    this.channel.release();
    if (error) {
      this.state = "failed";
      this.doneReject(error);
    } else {
      this.state = "closed";
      this.doneResolve();
    }
  }
}
