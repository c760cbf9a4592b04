/**
 * Byte transports under the RPC connection. unix and tcp are built in; TLS (tls.ts) and SSH
 * (ssh.ts) register themselves with `registerTransport` without touching the connection code.
 */
import type { Socket } from "bun";
import { DrainWaiters } from "./drain-waiters.ts";
import { ConnectError } from "./errors.ts";
import { warnIfUnprotectedTcp } from "./warnings.ts";
import type { LibvirtTarget, TransportKind } from "./uri.ts";

export interface TransportHandlers {
  onData(chunk: Uint8Array): void;
  /** Called once, when the transport is gone for any reason. */
  onClose(error: Error | null): void;
}

export interface Transport {
  /** Queues bytes for sending; never sends a partial packet out of order. */
  write(bytes: Uint8Array): void;
  /** Bytes accepted by write() but not yet handed to the kernel. */
  readonly buffered: number;
  /** Resolves once the queue has drained below `threshold` bytes. */
  drained(threshold?: number): Promise<void>;
  /** Stop reading from the peer until resume() (it then sees TCP backpressure); optional. */
  pause?(): void;
  resume?(): void;
  close(): void;
  readonly description: string;
}

/** Pending writes up to this size are gathered into one buffer for one syscall. */
const COALESCE_MAX = 256 * 1024;

export interface TransportOptions {
  /** Security warnings (plain TCP to another host, certificate checks turned off); the caller logs them. */
  onWarning?: (message: string) => void;
}

export type TransportFactory = (
  target: LibvirtTarget,
  handlers: TransportHandlers,
  connectTimeoutMs: number,
  options: TransportOptions,
) => Promise<Transport>;

const factories = new Map<TransportKind, TransportFactory>();

export function registerTransport(kind: TransportKind, factory: TransportFactory): void {
  factories.set(kind, factory);
}

export function openTransport(
  target: LibvirtTarget,
  handlers: TransportHandlers,
  connectTimeoutMs: number,
  options: TransportOptions = {},
): Promise<Transport> {
  const factory = factories.get(target.transport);
  if (!factory) {
    return Promise.reject(
      new ConnectError(
        `the '${target.transport}' transport is not supported; use qemu+unix:// (local), qemu+tls://, qemu+ssh:// or qemu+tcp:// (remote)`,
        target.uri,
      ),
    );
  }
  return factory(target, handlers, connectTimeoutMs, options);
}

/**
 * A Bun socket with a write queue. Bun's socket.write() may accept only part of a buffer;
 * the rest is kept and flushed from the drain handler. Writes issued in the same tick (the
 * calls of concurrent callers, a reply's follow-up calls) go out in one syscall, copied into
 * one buffer that is kept for the next flush instead of allocated per flush.
 */
export class BunSocketTransport implements Transport {
  private socket: Socket<undefined> | null = null;
  private queue: Uint8Array[] = [];
  private queued = 0;
  private flushScheduled = false;
  private closed = false;
  private readonly waiters = new DrainWaiters();
  /** Where small writes of one tick are gathered (grown on demand, up to COALESCE_MAX). */
  private gather = new Uint8Array(4096);
  private readonly flushNow = () => {
    this.flushScheduled = false;
    this.flush();
  };

  constructor(
    readonly description: string,
    private readonly handlers: TransportHandlers,
  ) {}

  attach(socket: Socket<undefined>): void {
    this.socket = socket;
  }

  get buffered(): number {
    return this.queued;
  }

  write(bytes: Uint8Array): void {
    if (this.closed) return;
    this.queue.push(bytes);
    this.queued += bytes.byteLength;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      queueMicrotask(this.flushNow);
    }
  }

  flush(): void {
    const socket = this.socket;
    if (!socket || this.closed) return;
    while (this.queue.length > 0) {
      if (this.queue.length > 1 && this.queued <= COALESCE_MAX) {
        // Several small writes: one syscall for all of them, from the reused buffer.
        const total = this.queued;
        if (this.gather.byteLength < total) this.gather = new Uint8Array(Math.min(COALESCE_MAX, Math.max(total, this.gather.byteLength * 2)));
        let off = 0;
        for (const q of this.queue) {
          this.gather.set(q, off);
          off += q.byteLength;
        }
        const n = socket.write(this.gather, 0, total);
        if (n < 0) return; // socket closing; close handler follows
        this.queued -= n;
        this.queue.length = 0;
        if (n < total) {
          // What the kernel did not take waits for drain, copied out of the reused buffer.
          this.queue.push(this.gather.slice(n, total));
          break;
        }
        continue;
      }
      const chunk = this.queue[0]!;
      const n = socket.write(chunk);
      if (n < 0) return;
      this.queued -= n;
      if (n < chunk.byteLength) {
        this.queue[0] = chunk.subarray(n);
        break; // kernel buffer full: wait for drain
      }
      this.queue.shift();
    }
    this.notifyWaiters();
  }

  private notifyWaiters(): void {
    this.waiters.notify(this.queued);
  }

  drained(threshold = 0): Promise<void> {
    if (this.queued <= threshold || this.closed) return Promise.resolve();
    return this.waiters.wait(threshold);
  }

  pause(): void {
    this.socket?.pause();
  }

  resume(): void {
    this.socket?.resume();
  }

  close(): void {
    if (this.closed) return;
    this.socket?.end();
    this.finish(null);
  }

  /** Socket is gone: report once, release waiters. */
  finish(error: Error | null): void {
    if (this.closed) return;
    this.closed = true;
    this.queue = [];
    this.queued = 0;
    this.waiters.release();
    this.handlers.onClose(error);
  }
}

function bunSocketFactory(target: LibvirtTarget, handlers: TransportHandlers, connectTimeoutMs: number, options: TransportOptions): Promise<Transport> {
  if (target.transport === "tcp") warnIfUnprotectedTcp(target, options.onWarning);
  const where = target.transport === "unix" ? `unix socket ${target.socketPath}` : `${target.host}:${target.port}`;
  const t = new BunSocketTransport(where, handlers);
  return new Promise<Transport>((resolve, reject) => {
    let settled = false;
    const timer = setTimeout(() => {
      if (settled) return;
      settled = true;
      reject(new ConnectError(`timed out after ${connectTimeoutMs} ms connecting to libvirtd at ${where}`, target.uri));
    }, connectTimeoutMs);
    const socketHandler = {
      // Plain Uint8Arrays: slicing one needs no Buffer subclass lookups.
      binaryType: "uint8array" as const,
      open(socket: Socket<undefined>) {
        if (settled) {
          socket.end(); // timed out meanwhile
          return;
        }
        settled = true;
        clearTimeout(timer);
        t.attach(socket);
        resolve(t);
      },
      data(_socket: Socket<undefined>, data: Buffer) {
        handlers.onData(data);
      },
      drain() {
        t.flush();
      },
      close() {
        t.finish(null);
      },
      end() {
        t.finish(null);
      },
      error(_socket: Socket<undefined>, error: Error) {
        t.finish(error);
      },
      connectError(_socket: Socket<undefined>, error: Error) {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(new ConnectError(`cannot connect to libvirtd at ${where}: ${error.message}`, target.uri, { cause: error }));
      },
    };
    const opts =
      target.transport === "unix"
        ? Bun.connect({ unix: target.socketPath!, socket: socketHandler })
        : Bun.connect({ hostname: target.host!, port: target.port!, socket: socketHandler });
    opts.catch((error: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(new ConnectError(`cannot connect to libvirtd at ${where}: ${error.message}`, target.uri, { cause: error }));
    });
  });
}

registerTransport("unix", bunSocketFactory);
registerTransport("tcp", bunSocketFactory);
