/**
 * A QMP (QEMU Machine Protocol) client over a unix socket.
 *
 * Wire format: one JSON object per line in each direction. QEMU sends a greeting, we
 * negotiate with `qmp_capabilities`, then send `{"execute", "arguments", "id"}` and QEMU
 * answers `{"return", "id"}` or `{"error": {"class", "desc"}, "id"}`, interleaved with
 * `{"event", "data", "timestamp"}` messages.
 *
 * Malformed input policy (the peer is treated as untrusted):
 *  - QMP is line-framed, so one bad line never desynchronises the lines after it. Lines that
 *    are not valid UTF-8, not JSON, nested deeper than 1,024, not a JSON object, or objects
 *    of no known shape (including events with a bad name/data/timestamp) are counted in
 *    `stats.malformedLines` and ignored; the client keeps working.
 *  - A reply that carries the id of a pending command but has the wrong shape (no
 *    `return`/`error`, both, or an `error` without string `class`/`desc`) fails that one
 *    command with QmpProtocolError.
 *  - Replies with no id, a non-string id or an id we never sent are counted in
 *    `stats.unmatchedReplies`; replies to commands that already timed out or were aborted in
 *    `stats.lateReplies`; a second greeting in `stats.unexpectedMessages`. All are ignored.
 *  - Fatal: a line longer than `maxLineBytes`, or a first line that is not a QMP greeting.
 *    The client closes; every pending command rejects with QmpProtocolError, later calls
 *    with QmpClosedError (reason "protocol"), and onClose listeners get the QmpProtocolError.
 */
import { PendingCalls } from "../util/pending-calls.ts";
import type { Socket } from "bun";
import { AsyncQueue } from "../util/async-queue.ts";
import { QmpAbortedError, QmpClosedError, QmpConnectError, QmpError, QmpProtocolError, QmpTimeoutError } from "./errors.ts";
import { LineSplitter, LineTooLongError } from "./lines.ts";

export interface QmpEvent {
  event: string;
  /** The event's `data`, or `{}` when QEMU sent none (e.g. STOP, RESUME). */
  data: Record<string, unknown>;
  timestamp: { seconds: number; microseconds: number };
}

export interface QmpVersion {
  major: number;
  minor: number;
  micro: number;
  /** Distribution build string, e.g. "Debian 1:7.2+dfsg-7+deb12u18+b3" (may be ""). */
  package: string;
}

export interface QmpConnectOptions {
  /** Deadline for the socket connection. Default 5 s. */
  connectTimeoutMs?: number;
  /** Deadline for QEMU's greeting (QEMU serves one client at a time: a second one waits). Default 10 s. */
  greetingTimeoutMs?: number;
  /** Default per-command deadline; 0 = none. Default 30 s. */
  commandTimeoutMs?: number;
  /** Largest line accepted from QEMU; a longer one closes the client. Default 16 MiB. */
  maxLineBytes?: number;
  /** Events buffered per events() iterator before the oldest are dropped. Default 1,000. */
  eventQueueCapacity?: number;
}

export interface QmpExecuteOptions {
  /** Deadline for the reply; defaults to the client's commandTimeoutMs. 0 = none. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface QmpStats {
  malformedLines: number;
  unmatchedReplies: number;
  lateReplies: number;
  unexpectedMessages: number;
  /** Events dropped because an events() consumer fell behind. */
  droppedEvents: number;
}

type ResolvedOptions = Required<QmpConnectOptions>;

const DEFAULTS: ResolvedOptions = {
  connectTimeoutMs: 5_000,
  greetingTimeoutMs: 10_000,
  commandTimeoutMs: 30_000,
  maxLineBytes: 16 * 1024 * 1024,
  eventQueueCapacity: 1_000,
};

/**
 * Deepest array/object nesting accepted (QEMU's own JSON parser stops at 1024). Checked
 * before JSON.parse, which takes ~2 µs per level: a line of 8 million "[" would otherwise
 * block the event loop for seconds.
 */
const MAX_NESTING = 1_024;

/** Ids of abandoned commands remembered to tell late replies from unknown ones. */
const MAX_ABANDONED = 4_096;

interface Subscriber {
  filter: Set<string> | null;
  queue: AsyncQueue<QmpEvent>;
}

const encoder = new TextEncoder();

export class QmpClient {
  private socket: Socket<undefined> | null = null;
  private writeQueue: Uint8Array[] = [];
  private flushScheduled = false;
  private readonly splitter: LineSplitter;

  private greeted = false;
  private greetingWaiter: { resolve(): void; reject(e: Error): void } | null = null;
  private _version: QmpVersion = { major: 0, minor: 0, micro: 0, package: "" };
  private _capabilities: string[] = [];

  private nextId = 1;
  /** Commands awaiting their reply, by id; one that timed out or was aborted is abandoned (a reply may still come). */
  private readonly pending: PendingCalls<string, string> = new PendingCalls<string, string>({
    expired: (id, call) => this.settle(id, new QmpTimeoutError(call.detail, call.timeoutMs), undefined, true),
    aborted: (id, call, reason) => this.settle(id, new QmpAbortedError(call.detail, { cause: reason }), undefined, true),
  });
  private readonly abandoned = new Set<string>();
  private readonly subscribers = new Set<Subscriber>();

  private isClosed = false;
  private reason: Error | null = null;
  private readonly closeListeners: ((err: Error | null) => void)[] = [];

  private counters = { malformedLines: 0, unmatchedReplies: 0, lateReplies: 0, unexpectedMessages: 0, droppedEvents: 0 };

  private constructor(
    /** The socket path this client talks to. */
    readonly path: string,
    private readonly opts: ResolvedOptions,
  ) {
    this.splitter = new LineSplitter(
      opts.maxLineBytes,
      (line) => this.handleLine(line),
      () => this.isClosed,
    );
  }

  /**
   * Connects to a QMP unix socket, reads the greeting and leaves capabilities-negotiation
   * mode. Rejects with QmpConnectError (no socket), QmpTimeoutError (connect, greeting or
   * qmp_capabilities too slow), QmpProtocolError (not a QMP peer) or QmpClosedError.
   */
  static async connect(path: string, opts: QmpConnectOptions = {}): Promise<QmpClient> {
    const resolved: ResolvedOptions = { ...DEFAULTS };
    for (const k of Object.keys(DEFAULTS) as (keyof ResolvedOptions)[]) {
      const v = opts[k];
      if (v === undefined) continue;
      if (typeof v !== "number" || !Number.isFinite(v) || v < 0) throw new TypeError(`QmpClient.connect: ${k} must be a non-negative number`);
      resolved[k] = v;
    }
    const client = new QmpClient(path, resolved);
    try {
      const greeting = new Promise<void>((resolve, reject) => (client.greetingWaiter = { resolve, reject }));
      greeting.catch(() => {}); // may fail before it is awaited
      await client.open();
      await withDeadline(greeting, resolved.greetingTimeoutMs, () => new QmpTimeoutError(`greeting on ${path} (is another client connected?)`, resolved.greetingTimeoutMs));
      await client.execute("qmp_capabilities", {});
    } catch (e) {
      client.close();
      throw e;
    }
    return client;
  }

  /** QEMU's version from the greeting. */
  get version(): QmpVersion {
    return this._version;
  }

  /** Capabilities QEMU offered in the greeting (we enable none of them). */
  get capabilities(): readonly string[] {
    return this._capabilities;
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /** Why the client closed: null while open or after close(); else QmpClosedError / QmpProtocolError. */
  get closeReason(): Error | null {
    return this.reason;
  }

  /** Commands sent and not yet answered. */
  get inFlight(): number {
    return this.pending.size;
  }

  get stats(): QmpStats {
    let dropped = this.counters.droppedEvents;
    for (const s of this.subscribers) dropped += s.queue.dropped;
    return { ...this.counters, droppedEvents: dropped };
  }

  /**
   * Runs a QMP command and resolves with its `return` value. Rejects with QmpError when QEMU
   * reports an error, QmpTimeoutError / QmpAbortedError (the late reply is then dropped; QEMU
   * may still carry the command out), QmpClosedError when the socket goes away, or
   * QmpProtocolError when the reply is malformed.
   */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, opts: QmpExecuteOptions = {}): Promise<T> {
    if (this.isClosed) return Promise.reject(this.closedFor(command));
    if (typeof command !== "string" || command === "") return Promise.reject(new TypeError("QMP command name must be a non-empty string"));
    const signal = opts.signal;
    if (signal?.aborted) return Promise.reject(new QmpAbortedError(command, { cause: signal.reason }));
    const id = String(this.nextId++);
    let line: string;
    try {
      const msg: Record<string, unknown> = { execute: command };
      if (args !== undefined) msg["arguments"] = args;
      msg["id"] = id;
      line = JSON.stringify(msg) + "\n";
    } catch (e) {
      return Promise.reject(new TypeError(`${command}: arguments are not JSON-serialisable: ${(e as Error).message}`, { cause: e }));
    }
    const reply = this.pending.add(id, command, opts.timeoutMs ?? this.opts.commandTimeoutMs, signal);
    this.write(line);
    return reply as Promise<T>;
  }

  /**
   * Subscribes to events (all of them, or only the names in `filter`). Each iterator has its
   * own bounded queue: a slow consumer loses its oldest events, never stalls replies.
   * `return()` unsubscribes. When the client closes the iterator ends (done) after the
   * events already buffered; see `closeReason` for why.
   */
  events(filter?: string[]): AsyncIterableIterator<QmpEvent> {
    const sub: Subscriber = {
      filter: filter ? new Set(filter) : null,
      queue: new AsyncQueue<QmpEvent>(Math.max(1, this.opts.eventQueueCapacity), () => {
        if (this.subscribers.delete(sub)) this.counters.droppedEvents += sub.queue.dropped;
      }),
    };
    if (this.isClosed) sub.queue.end();
    else this.subscribers.add(sub);
    return sub.queue;
  }

  /** Called once when the client closes: null after close(), else the reason. Immediately if already closed. */
  onClose(cb: (err: Error | null) => void): void {
    if (this.isClosed) callListener(cb, this.reason);
    else this.closeListeners.push(cb);
  }

  /** Closes the socket; pending commands reject with QmpClosedError (reason "closed"). Idempotent. */
  close(): void {
    this.shutdown(null);
  }

  // ---- transport ---------------------------------------------------------------------

  private open(): Promise<void> {
    const timeoutMs = this.opts.connectTimeoutMs;
    const path = this.path;
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      const fail = (e: Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(e);
      };
      const timer = setTimeout(() => fail(new QmpTimeoutError(`connect to ${path}`, timeoutMs)), timeoutMs);
      const gone = (socket: Socket<undefined>, error: Error | null) => {
        if (socket === this.socket) this.socketGone(error);
      };
      Bun.connect<undefined>({
        unix: path,
        socket: {
          open: (socket) => {
            if (settled || this.isClosed) {
              socket.end(); // timed out or closed meanwhile
              return;
            }
            settled = true;
            clearTimeout(timer);
            this.socket = socket;
            this.flush();
            resolve();
          },
          data: (socket, data) => {
            if (socket === this.socket) this.receive(data);
          },
          drain: (socket) => {
            if (socket === this.socket) this.flush();
          },
          close: (socket, error) => gone(socket, error ?? null),
          end: (socket) => gone(socket, null),
          error: (socket, error) => gone(socket, error),
          connectError: (_socket, error) => fail(new QmpConnectError(`cannot connect to QMP socket ${path}: ${error.message}`, path, { cause: error })),
        },
      }).catch((error: Error) => fail(new QmpConnectError(`cannot connect to QMP socket ${path}: ${error.message}`, path, { cause: error })));
    });
  }

  private write(line: string): void {
    this.writeQueue.push(encoder.encode(line));
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    queueMicrotask(() => {
      this.flushScheduled = false;
      this.flush();
    });
  }

  /** Writes queued lines; Bun may accept part of a buffer, the rest goes on `drain`. */
  private flush(): void {
    const socket = this.socket;
    if (!socket || this.isClosed) return;
    while (this.writeQueue.length > 0) {
      let chunk = this.writeQueue[0]!;
      if (this.writeQueue.length > 1) {
        let total = 0;
        for (const q of this.writeQueue) total += q.byteLength;
        chunk = new Uint8Array(total);
        let off = 0;
        for (const q of this.writeQueue) {
          chunk.set(q, off);
          off += q.byteLength;
        }
        this.writeQueue = [chunk];
      }
      const n = socket.write(chunk);
      if (n < 0) return; // closing; the close handler follows
      if (n < chunk.byteLength) {
        this.writeQueue[0] = chunk.subarray(n);
        return;
      }
      this.writeQueue.shift();
    }
  }

  private socketGone(error: Error | null): void {
    const where = `QMP socket ${this.path}`;
    this.shutdown(
      error
        ? new QmpClosedError(`${where} failed: ${error.message}`, "error", { cause: error })
        : new QmpClosedError(`QEMU closed the ${where}`, "eof"),
    );
  }

  // ---- reading -----------------------------------------------------------------------

  private receive(chunk: Uint8Array): void {
    try {
      this.splitter.push(chunk);
    } catch (e) {
      const msg = e instanceof LineTooLongError ? `QEMU sent a line longer than ${e.limit} bytes` : `cannot read from QEMU: ${(e as Error).message}`;
      this.shutdown(new QmpProtocolError(`${msg} on ${this.path}; closing`, { cause: e }));
    }
  }

  private handleLine(line: string | null): void {
    try {
      this.dispatch(line);
    } catch {
      // Never reached by design; a bug here must not take the client down.
      this.counters.malformedLines++;
    }
  }

  private dispatch(line: string | null): void {
    if (line !== null && line.trim() === "") return; // blank line: nothing to do
    let msg: unknown = undefined;
    let parsed = false;
    if (line !== null && !nestingExceeds(line, MAX_NESTING)) {
      try {
        msg = JSON.parse(line);
        parsed = true;
      } catch {
        // counted below
      }
    }
    if (!this.greeted) {
      this.handleGreeting(parsed ? msg : undefined, line);
      return;
    }
    if (!parsed || !isObject(msg)) {
      this.counters.malformedLines++;
      return;
    }
    if (Object.hasOwn(msg, "event")) this.handleEvent(msg);
    else if (Object.hasOwn(msg, "return") || Object.hasOwn(msg, "error") || Object.hasOwn(msg, "id")) this.handleReply(msg);
    else if (Object.hasOwn(msg, "QMP")) this.counters.unexpectedMessages++;
    else this.counters.malformedLines++;
  }

  private handleGreeting(msg: unknown, line: string | null): void {
    const g = isObject(msg) && isObject(msg["QMP"]) ? msg["QMP"] : null;
    const version = g && isObject(g["version"]) ? g["version"] : null;
    const qemu = version && isObject(version["qemu"]) ? version["qemu"] : null;
    const caps = g?.["capabilities"];
    const pkg = version?.["package"] ?? "";
    if (
      !qemu ||
      !isVersionNumber(qemu["major"]) ||
      !isVersionNumber(qemu["minor"]) ||
      !isVersionNumber(qemu["micro"]) ||
      typeof pkg !== "string" ||
      !Array.isArray(caps) ||
      !caps.every((c) => typeof c === "string")
    ) {
      const excerpt = line === null ? "<invalid UTF-8>" : JSON.stringify(line.length > 120 ? line.slice(0, 120) + "…" : line);
      this.shutdown(new QmpProtocolError(`${this.path} is not a QMP socket: expected a QMP greeting, got ${excerpt}`));
      return;
    }
    this._version = { major: qemu["major"] as number, minor: qemu["minor"] as number, micro: qemu["micro"] as number, package: pkg };
    this._capabilities = [...(caps as string[])];
    this.greeted = true;
    const w = this.greetingWaiter;
    this.greetingWaiter = null;
    w?.resolve();
  }

  private handleReply(msg: Record<string, unknown>): void {
    const id = msg["id"];
    const hasReturn = Object.hasOwn(msg, "return");
    const hasError = Object.hasOwn(msg, "error");
    const call = typeof id === "string" ? this.pending.get(id) : undefined;
    if (!hasReturn && !hasError) {
      // {"id": ...} alone: only worth more than a count when it names a pending command.
      this.counters.malformedLines++;
      if (call) this.settle(id as string, new QmpProtocolError(`${call.detail}: reply has neither "return" nor "error"`));
      return;
    }
    if (typeof id !== "string") {
      this.counters.unmatchedReplies++;
      return;
    }
    if (!call) {
      if (this.abandoned.delete(id)) this.counters.lateReplies++;
      else this.counters.unmatchedReplies++;
      return;
    }
    if (hasReturn && hasError) {
      this.counters.malformedLines++;
      this.settle(id, new QmpProtocolError(`${call.detail}: reply has both "return" and "error"`));
      return;
    }
    if (hasError) {
      const e = msg["error"];
      if (isObject(e) && typeof e["class"] === "string" && typeof e["desc"] === "string") {
        this.settle(id, new QmpError(e["class"], e["desc"], call.detail));
      } else {
        this.counters.malformedLines++;
        this.settle(id, new QmpProtocolError(`${call.detail}: malformed error reply (no string "class"/"desc")`));
      }
      return;
    }
    this.settle(id, null, msg["return"]);
  }

  private handleEvent(msg: Record<string, unknown>): void {
    const name = msg["event"];
    const data = msg["data"] ?? {};
    const ts = msg["timestamp"];
    if (
      typeof name !== "string" ||
      name === "" ||
      !isObject(data) ||
      !isObject(ts) ||
      typeof ts["seconds"] !== "number" ||
      !Number.isFinite(ts["seconds"]) ||
      typeof ts["microseconds"] !== "number" ||
      !Number.isFinite(ts["microseconds"])
    ) {
      this.counters.malformedLines++;
      return;
    }
    const ev: QmpEvent = { event: name, data, timestamp: { seconds: ts["seconds"], microseconds: ts["microseconds"] } };
    for (const sub of this.subscribers) {
      if (!sub.filter || sub.filter.has(name)) sub.queue.push(ev);
    }
  }

  // ---- deadlines and completion -------------------------------------------------------

  /** Completes a pending command (first settle wins). `abandon`: a reply may still come. */
  private settle(id: string, error: Error | null, value?: unknown, abandon = false): void {
    if (this.pending.settle(id, error, value) === null || !abandon) return;
    this.abandoned.add(id);
    if (this.abandoned.size > MAX_ABANDONED) this.abandoned.delete(this.abandoned.values().next().value!);
  }

  private closedFor(command: string): QmpClosedError {
    const r = this.reason;
    if (r instanceof QmpClosedError) return new QmpClosedError(`${command}: ${r.message}`, r.reason, { cause: r });
    if (r) return new QmpClosedError(`${command}: the QMP client closed after an error: ${r.message}`, "protocol", { cause: r });
    return new QmpClosedError(`${command}: the QMP client for ${this.path} is closed`, "closed");
  }

  /** Fails everything in flight at once, ends event iterators and reports the close. Idempotent. */
  private shutdown(reason: Error | null): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.reason = reason;
    this.pending.stop();
    this.writeQueue = [];
    this.abandoned.clear();
    const socket = this.socket;
    this.socket = null;
    try {
      socket?.end();
    } catch {
      // already gone
    }
    const w = this.greetingWaiter;
    this.greetingWaiter = null;
    w?.reject(reason ?? new QmpClosedError(`the QMP client for ${this.path} was closed during the handshake`, "closed"));
    for (const id of this.pending.keys()) {
      const command = this.pending.get(id)!.detail;
      const err = reason instanceof QmpProtocolError ? new QmpProtocolError(`${command}: ${reason.message}`, { cause: reason }) : this.closedFor(command);
      this.settle(id, err);
    }
    for (const sub of this.subscribers) {
      this.counters.droppedEvents += sub.queue.dropped;
      sub.queue.end();
    }
    this.subscribers.clear();
    for (const l of this.closeListeners.splice(0)) callListener(l, reason);
  }
}

/**
 * Resolves with the next event called `name` (that satisfies `match`, if given). Subscribes
 * synchronously, so start it before the command that triggers the event:
 *
 *     const resumed = waitForEvent(client, "RESUME", 5_000);
 *     await client.execute("cont");
 *     await resumed;
 *
 * Rejects with QmpTimeoutError, QmpAbortedError, or QmpClosedError if the client closes first.
 */
export function waitForEvent(
  client: QmpClient,
  name: string,
  timeoutMs: number,
  opts: { signal?: AbortSignal; match?: (ev: QmpEvent) => boolean } = {},
): Promise<QmpEvent> {
  const signal = opts.signal;
  if (signal?.aborted) return Promise.reject(new QmpAbortedError(`event ${name}`, { cause: signal.reason }));
  const it = client.events([name]);
  return new Promise<QmpEvent>((resolve, reject) => {
    let done = false;
    const onAbort = () => finish(new QmpAbortedError(`event ${name}`, { cause: signal?.reason }));
    const finish = (err: unknown, ev?: QmpEvent) => {
      if (done) return;
      done = true;
      if (timer) clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      void it.return?.();
      if (err) reject(err);
      else resolve(ev!);
    };
    const timer = timeoutMs > 0 ? setTimeout(() => finish(new QmpTimeoutError(`event ${name}`, timeoutMs)), timeoutMs) : null;
    signal?.addEventListener("abort", onAbort, { once: true });
    void (async () => {
      try {
        for (;;) {
          const r = await it.next();
          if (r.done) {
            const cause = client.closeReason;
            const why = cause ? `: ${cause.message}` : "";
            finish(new QmpClosedError(`the QMP client closed before event ${name}${why}`, closeKind(cause), { cause }));
            return;
          }
          if (!opts.match || opts.match(r.value)) {
            finish(null, r.value);
            return;
          }
        }
      } catch (e) {
        finish(e);
      }
    })();
  });
}

function closeKind(reason: Error | null): QmpClosedError["reason"] {
  if (reason instanceof QmpClosedError) return reason.reason;
  return reason ? "protocol" : "closed";
}

/** True when `s`, read as JSON, nests arrays/objects deeper than `max` (strings skipped). */
function nestingExceeds(s: string, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) {
      inString = true;
    } else if (c === 0x5b || c === 0x7b) {
      if (++depth > max) return true;
    } else if (c === 0x5d || c === 0x7d) {
      depth--;
    }
  }
  return false;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isVersionNumber(v: unknown): boolean {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

function callListener(cb: (err: Error | null) => void, reason: Error | null): void {
  try {
    cb(reason);
  } catch {
    // A throwing listener must not stop the others or the shutdown.
  }
}

async function withDeadline<T>(p: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  if (ms <= 0) return p;
  let timer: ReturnType<typeof setTimeout> | null = null;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(onTimeout()), ms)))]);
  } finally {
    if (timer) clearTimeout(timer);
  }
}
