/**
 * One RPC session on one transport: serial allocation, routing of replies, events, stream
 * packets and keepalive, per-call deadlines and cancellation. Knows nothing about auth or
 * reconnecting; LibvirtClient builds those on top.
 */
import { KEEPALIVE_PROGRAM, KEEPALIVE_PROTOCOL_VERSION, KeepaliveProcedure } from "../codecs/generated/keepalive.ts";
import { decodeVirNetMessageError } from "../codecs/generated/virnet.ts";
import { XdrDecodeError, XdrReader, type MessageDescriptor, type ProcedureDescriptor } from "../xdr/index.ts";
import { PendingCalls } from "../util/pending-calls.ts";
import { keepPolling } from "./busy-poll.ts";
import { callDeadlineMs, type DeadlinePolicy } from "./deadline-policy.ts";
import { CallAbortedError, CallTimeoutError, ConnectionClosedError, LibvirtError } from "./errors.ts";
import { encodeCall, encodePacket, MessageStatus, MessageType, PacketParser, type Packet } from "./packet.ts";
import { LibvirtStream } from "./stream.ts";
import { openTransport, type Transport } from "./transport.ts";
import type { LibvirtTarget } from "./uri.ts";

export interface CallOptions {
  /** Deadline for the reply; defaults to the connection's deadline policy (deadline-policy.ts). 0 = none. */
  timeoutMs?: number;
  signal?: AbortSignal;
  /**
   * Stream-opening calls only: bytes received and unread above which the whole connection
   * stops reading (LibvirtStream); for a connection of its own, such as an image download.
   */
  readHighWaterMark?: number;
}

export interface CallObserver {
  (procedure: string, durationMs: number, error: unknown): void;
}

export interface ConnectionOptions {
  connectTimeoutMs: number;
  /** Deadline of quick calls (ms; 0 = none). */
  callTimeoutMs: number;
  /** Deadline of worker-holding calls (ms); 0 = none while keepalive runs (deadline-policy.ts). */
  slowCallTimeoutMs: number;
  /** Send a PING after this long without traffic; 0 disables our own pings. */
  keepaliveIntervalMs: number;
  /** Declare the peer dead after interval × count without any packet from it. */
  keepaliveCount: number;
  /** Calls sent but not yet answered, at most (DEFAULT_MAX_IN_FLIGHT); 0 = no limit. */
  maxInFlight: number;
  /** Busy-poll window after each call and reply while calls are outstanding (µs; 0 = never). */
  busyPollUs: number;
  onCallComplete?: CallObserver;
  /** Security warnings from the transport (see warnings.ts). */
  onWarning?: (message: string) => void;
}

const UINT32 = 0x1_0000_0000;

/**
 * libvirtd works on at most max_client_requests (default 5) calls of a client; with five in
 * progress it stops reading that client until one is answered (its count includes the
 * buffer it reads into). Three more calls waiting in the socket mean a daemon worker that
 * finishes finds the next call already there instead of idling for our round trip: with 8
 * callers on one connection, ×1.07–1.27 the calls per second and less CPU per call on both
 * sides than stopping at five (docs/benchmarks.md); one more gains most of that, deeper
 * gains nothing. Beyond this, calls wait in our backlog, so a PONG (written straight to the
 * socket) never queues behind more than three calls. Those are quick ones as long as one of
 * the five slots is: LibvirtPool gives a worker-holding call only a session with fewer than
 * four calls while it can still open sessions (pool.ts).
 */
export const DEFAULT_MAX_IN_FLIGHT = 8;

/**
 * Busy polling (busyPollUs > 0) starts only while at least this many calls are on the wire.
 * A lone call's reply is a whole round trip away: polling for it costs that round trip in
 * CPU and bought no throughput (docs/benchmarks.md). With two or more in flight the next
 * reply is a fraction of a round trip away, and each reply that finds us polling spares
 * libvirtd a wake-up.
 */
const POLL_MIN_UNANSWERED = 2;

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- erased at the routing layer
type AnyProcedure = ProcedureDescriptor<any, unknown>;

export class RpcConnection {
  private nextSerial = 1;
  /** Set once serials have wrapped around: from then on a serial may still be in use. */
  private serialsWrapped = false;
  /** Calls awaiting their reply, by serial. */
  private readonly pending: PendingCalls<number, AnyProcedure> = new PendingCalls<number, AnyProcedure>({
    expired: (serial, call) => {
      // Sent and unanswered: the daemon may still carry it out; tell whoever cleans up when it is done.
      const finished = this.unanswered.has(serial) ? new Promise<void>((resolve) => this.abandoned.set(serial, resolve)) : undefined;
      this.settle(serial, new CallTimeoutError(call.detail.name, call.timeoutMs, finished));
    },
    aborted: (serial, call, reason) => this.settle(serial, new CallAbortedError(call.detail.name, { cause: reason })),
  });
  private readonly streams = new Map<number, LibvirtStream>();
  private readonly messageHandlers = new Map<number, (payload: XdrReader) => void>();
  private readonly parser: PacketParser;
  private transport: Transport | null = null;
  private closeError: ConnectionClosedError | null = null;
  private lastReceived = Date.now();
  /** Streams that stopped reading the socket (read backpressure); keepalive waits meanwhile. */
  private readPauses = 0;
  private keepaliveTimer: ReturnType<typeof setInterval> | null = null;
  private readonly closeListeners: ((e: ConnectionClosedError) => void)[] = [];
  /** Serials sent and not yet answered (abandoned calls included: the daemon still works on them). */
  private readonly unanswered = new Set<number>();
  /** Calls given up on by their deadline while the daemon still works on them → "it is done now". */
  private readonly abandoned = new Map<number, () => void>();
  /** Encoded calls waiting for a free slot, in order. */
  private readonly backlog: { serial: number; packet: Uint8Array }[] = [];
  /** Packets dropped because nothing was waiting for them (late replies, unknown events). */
  unroutedPackets = 0;

  private constructor(
    readonly target: LibvirtTarget,
    private readonly opts: ConnectionOptions,
  ) {
    this.parser = new PacketParser((p) => this.route(p));
    this.deadlinePolicy = { quickMs: opts.callTimeoutMs, slowMs: opts.slowCallTimeoutMs, keepalive: opts.keepaliveIntervalMs > 0 };
  }

  private readonly deadlinePolicy: DeadlinePolicy;

  static async open(target: LibvirtTarget, opts: ConnectionOptions): Promise<RpcConnection> {
    const conn = new RpcConnection(target, opts);
    conn.transport = await openTransport(
      target,
      {
        onData: (chunk) => conn.receive(chunk),
        onClose: (error) =>
          conn.shutdown(
            new ConnectionClosedError(
              error ? `connection to libvirtd (${conn.describe()}) failed: ${error.message}` : `libvirtd (${conn.describe()}) closed the connection`,
              error ? "error" : "eof",
              { cause: error ?? undefined },
            ),
          ),
      },
      opts.connectTimeoutMs,
      { onWarning: opts.onWarning },
    );
    conn.startKeepalive();
    return conn;
  }

  describe(): string {
    return this.transport?.description ?? this.target.uri;
  }

  get closed(): boolean {
    return this.closeError !== null;
  }

  get inFlight(): number {
    return this.pending.size;
  }

  onClose(listener: (e: ConnectionClosedError) => void): void {
    if (this.closeError) listener(this.closeError);
    else this.closeListeners.push(listener);
  }

  /** Registers the handler for one event message type (replaces an earlier one). */
  onMessage<M>(desc: MessageDescriptor<M>, handler: (msg: M) => void): void {
    this.messageHandlers.set(messageKey(desc.program, desc.proc), (r) => {
      const msg = desc.decode(r);
      r.finish(desc.name);
      handler(msg);
    });
  }

  call<A, R>(desc: ProcedureDescriptor<A, R>, args: A, opts: CallOptions = {}): Promise<R> {
    return this.start(desc as AnyProcedure, args, opts, null) as Promise<R>;
  }

  /**
   * Calls a procedure that opens a stream. The stream is registered before the call is
   * sent, because the daemon may send stream data before the reply (console output).
   */
  async openStream<A>(desc: ProcedureDescriptor<A, void>, args: A, opts: CallOptions = {}): Promise<LibvirtStream> {
    if (!desc.stream) throw new TypeError(`${desc.name} does not open a stream`);
    const holder: { stream: LibvirtStream | null } = { stream: null };
    await this.start(desc as AnyProcedure, args, opts, holder);
    return holder.stream!;
  }

  private start(
    desc: AnyProcedure,
    args: unknown,
    opts: CallOptions,
    streamHolder: { stream: LibvirtStream | null } | null,
  ): Promise<unknown> {
    if (this.closeError) return Promise.reject(this.closedFor(desc.name));
    if (opts.signal?.aborted) return Promise.reject(new CallAbortedError(desc.name, { cause: opts.signal.reason }));
    const serial = this.allocateSerial();
    let packet: Uint8Array;
    try {
      packet = encodeCall(desc, serial, args);
    } catch (e) {
      return Promise.reject(e); // bad arguments never reach the wire
    }
    const reply = this.pending.add(serial, desc, callDeadlineMs(desc.name, this.deadlinePolicy, opts.timeoutMs), opts.signal);
    try {
      if (streamHolder) {
        const channel = {
          send: (status: number, data?: Uint8Array) => this.sendStreamPacket(desc, serial, status, data),
          drained: (threshold: number) => this.transport?.drained(threshold) ?? Promise.resolve(),
          release: () => void this.streams.delete(serial),
          pauseReading: () => {
            // Not before the opening call's reply, which may come after the first data.
            if (this.pending.has(serial)) return false;
            if (this.readPauses++ === 0) this.transport?.pause?.();
            return true;
          },
          resumeReading: () => {
            if (--this.readPauses === 0) this.transport?.resume?.();
          },
        };
        const stream = new LibvirtStream(desc.name, channel, opts.readHighWaterMark ?? null);
        this.streams.set(serial, stream);
        streamHolder.stream = stream;
      }
      if (this.opts.maxInFlight > 0 && this.unanswered.size >= this.opts.maxInFlight) this.backlog.push({ serial, packet });
      else this.send(serial, packet);
    } catch (e) {
      this.settle(serial, e);
    }
    return reply;
  }

  private send(serial: number, packet: Uint8Array): void {
    this.unanswered.add(serial);
    this.transport!.write(packet);
    this.pollWhileBusy(this.unanswered.size);
  }

  /** Busy polling (busy-poll.ts) while `inFlight` calls are on the wire; off by default. */
  private pollWhileBusy(inFlight: number): void {
    if (this.opts.busyPollUs > 0 && inFlight >= POLL_MIN_UNANSWERED) keepPolling(this.opts.busyPollUs);
  }

  private readonly pumpBacklog = () => this.pump();

  /** A slot freed up: send queued calls that are still wanted. */
  private pump(): void {
    const max = this.opts.maxInFlight;
    while (this.backlog.length > 0 && (max <= 0 || this.unanswered.size < max)) {
      const next = this.backlog.shift()!;
      if (this.pending.has(next.serial)) this.send(next.serial, next.packet);
    }
  }

  private allocateSerial(): number {
    // Serials wrap at 2^32; after that, skip any still in use by a long-lived call or stream.
    for (;;) {
      const s = this.nextSerial;
      this.nextSerial = s + 1;
      if (this.nextSerial === UINT32) {
        this.nextSerial = 0;
        this.serialsWrapped = true;
      }
      if (!this.serialsWrapped || (!this.pending.has(s) && !this.streams.has(s) && !this.unanswered.has(s))) return s;
    }
  }

  /** Completes a pending call with a value or an error (first settle wins). */
  private settle(serial: number, error: unknown, value?: unknown): void {
    const call = this.pending.settle(serial, error, value);
    if (!call) return;
    if (error !== null) {
      // A failed stream-opening call leaves no stream behind.
      const stream = this.streams.get(serial);
      if (stream) {
        this.streams.delete(serial);
        stream.onFailure(error instanceof Error ? error : new Error(String(error)));
      }
    }
    this.opts.onCallComplete?.(call.detail.name, performance.now() - call.started, error);
  }

  private sendStreamPacket(desc: AnyProcedure, serial: number, status: number, data?: Uint8Array): void {
    if (this.closeError) return;
    this.transport!.write(
      encodePacket({ prog: desc.program, vers: desc.version, proc: desc.proc, type: MessageType.STREAM, serial, status }, null, data),
    );
  }

  private receive(chunk: Uint8Array): void {
    this.lastReceived = Date.now();
    try {
      this.parser.push(chunk);
    } catch (e) {
      // Framing is lost: nothing after this point can be trusted.
      this.shutdown(
        new ConnectionClosedError(`protocol error from libvirtd (${this.describe()}): ${(e as Error).message}`, "protocol", { cause: e }),
      );
      this.transport?.close();
    }
  }

  private route(p: Packet): void {
    const h = p.header;
    switch (h.type) {
      case MessageType.REPLY:
        return this.routeReply(p);
      case MessageType.MESSAGE:
        if (h.prog === KEEPALIVE_PROGRAM) {
          if (h.proc === KeepaliveProcedure.KEEPALIVE_PROC_PING) this.sendKeepalive(KeepaliveProcedure.KEEPALIVE_PROC_PONG);
          return;
        }
        return this.routeMessage(p);
      case MessageType.STREAM:
        return this.routeStream(p);
      default:
        // CALL, *_WITH_FDS and STREAM_HOLE are never sent to a client that didn't ask for them.
        this.unroutedPackets++;
    }
  }

  private routeReply(p: Packet): void {
    const h = p.header;
    if (this.unanswered.delete(h.serial) && this.backlog.length > 0) queueMicrotask(this.pumpBacklog);
    if (this.abandoned.size > 0) this.lateReply(h.serial);
    this.pollWhileBusy(this.unanswered.size + 1); // this reply's call was in flight too
    const call = this.pending.get(h.serial);
    if (!call) {
      this.unroutedPackets++; // late reply to a call that timed out or was aborted
      return;
    }
    const desc = call.detail;
    if (h.prog !== desc.program || h.proc !== desc.proc) {
      this.settle(h.serial, new XdrDecodeError("BAD_PACKET", `reply for ${h.prog}/${h.proc} does not match call ${desc.name}`, 0));
      return;
    }
    try {
      const r = p.reader();
      if (h.status === MessageStatus.ERROR) {
        const err = decodeVirNetMessageError(r);
        this.settle(h.serial, new LibvirtError(err, desc.name));
        return;
      }
      const value = desc.decodeRet ? desc.decodeRet(r) : undefined;
      r.finish(desc.name);
      this.settle(h.serial, null, value);
    } catch (e) {
      this.settle(h.serial, e);
    }
  }

  private lateReply(serial: number): void {
    const done = this.abandoned.get(serial);
    if (!done) return;
    this.abandoned.delete(serial);
    done();
  }

  private routeMessage(p: Packet): void {
    const handler = this.messageHandlers.get(messageKey(p.header.prog, p.header.proc));
    if (!handler) {
      this.unroutedPackets++;
      return;
    }
    try {
      handler(p.reader());
    } catch {
      // A malformed event or a throwing handler must not take the connection down.
      this.unroutedPackets++;
    }
  }

  private routeStream(p: Packet): void {
    const h = p.header;
    const stream = this.streams.get(h.serial);
    if (!stream) {
      this.unroutedPackets++;
      return;
    }
    switch (h.status) {
      case MessageStatus.CONTINUE:
        if (p.payload.byteLength === 0) stream.onEof();
        else stream.onData(p.payload.slice());
        return;
      case MessageStatus.OK:
        stream.onServerOk();
        return;
      case MessageStatus.ERROR: {
        let error: Error;
        try {
          error = new LibvirtError(decodeVirNetMessageError(p.reader()), stream.procedure);
        } catch (e) {
          error = e as Error;
        }
        this.streams.delete(h.serial);
        stream.onFailure(error);
        return;
      }
    }
  }

  private sendKeepalive(proc: number): void {
    if (this.closeError) return;
    this.transport?.write(
      encodePacket({ prog: KEEPALIVE_PROGRAM, vers: KEEPALIVE_PROTOCOL_VERSION, proc, type: MessageType.MESSAGE, serial: 0, status: MessageStatus.OK }),
    );
  }

  private startKeepalive(): void {
    const interval = this.opts.keepaliveIntervalMs;
    if (interval <= 0) return;
    this.keepaliveTimer = setInterval(() => {
      // Not reading by choice (a stream's reader is behind): silence is ours, not the daemon's.
      if (this.readPauses > 0) this.lastReceived = Date.now();
      const idle = Date.now() - this.lastReceived;
      if (idle >= interval * this.opts.keepaliveCount) {
        this.shutdown(
          new ConnectionClosedError(
            `libvirtd (${this.describe()}) did not answer keepalive for ${idle} ms; connection considered dead`,
            "keepalive",
          ),
        );
        this.transport?.close();
      } else if (idle >= interval) {
        this.sendKeepalive(KeepaliveProcedure.KEEPALIVE_PROC_PING);
      }
    }, Math.max(50, Math.floor(interval / 2)));
    // Keepalive alone must not keep a process alive.
    (this.keepaliveTimer as { unref?: () => void }).unref?.();
  }

  private closedFor(procedure: string): ConnectionClosedError {
    const base = this.closeError!;
    return new ConnectionClosedError(`${procedure}: ${base.message}`, base.reason, { cause: base });
  }

  /** Fails everything in flight at once and reports the close. Idempotent. */
  private shutdown(error: ConnectionClosedError): void {
    if (this.closeError) return;
    this.closeError = error;
    if (this.keepaliveTimer) clearInterval(this.keepaliveTimer);
    this.pending.stop();
    this.backlog.length = 0;
    this.unanswered.clear();
    for (const done of this.abandoned.values()) done();
    this.abandoned.clear();
    for (const serial of [...this.pending.keys()]) {
      const call = this.pending.get(serial)!;
      this.settle(serial, this.closedFor(call.detail.name));
    }
    for (const [serial, stream] of [...this.streams]) {
      this.streams.delete(serial);
      stream.onFailure(this.closedFor(stream.procedure));
    }
    for (const l of this.closeListeners.splice(0)) l(error);
  }

  /** Closes the transport; pending calls fail with ConnectionClosedError("closed"). */
  close(): void {
    this.shutdown(new ConnectionClosedError(`connection to libvirtd (${this.describe()}) was closed by the client`, "closed"));
    this.transport?.close();
  }
}

function messageKey(program: number, proc: number): number {
  // Programs are 32-bit; procedures fit in 16 bits in every libvirt program.
  return program * 65536 + proc;
}
