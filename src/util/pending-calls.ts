/**
 * Calls awaiting a reply, by key (an RPC serial, a QMP command id), each with an optional
 * deadline (one timer for all of them, DeadlineSweeper) and AbortSignal. The first settle
 * wins and unhooks the signal. Shared by the libvirt connection and the QMP client, which
 * decide what a timed-out or aborted call fails with.
 */
import { DeadlineSweeper } from "./deadlines.ts";

export interface PendingCall<D> {
  /** What the owner keeps about the call (a procedure descriptor, a command name). */
  readonly detail: D;
  /** performance.now() when it was sent. */
  readonly started: number;
  readonly timeoutMs: number;
}

interface Entry<D> extends PendingCall<D> {
  /** performance.now() deadline, or Infinity. */
  readonly deadline: number;
  resolve(v: unknown): void;
  reject(e: unknown): void;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | null;
}

export interface PendingCallHandlers<K, D> {
  /** The call's deadline passed: settle it (with the owner's timeout error). */
  expired(key: K, call: PendingCall<D>): void;
  /** The call's AbortSignal fired: settle it (with the owner's abort error). */
  aborted(key: K, call: PendingCall<D>, reason: unknown): void;
}

export class PendingCalls<K, D> {
  private readonly calls = new Map<K, Entry<D>>();
  private readonly deadlines: DeadlineSweeper<K>;

  constructor(private readonly handlers: PendingCallHandlers<K, D>) {
    this.deadlines = new DeadlineSweeper<K>(
      () => this.calls,
      (key) => {
        const call = this.calls.get(key);
        if (call) this.handlers.expired(key, call);
      },
    );
  }

  /** Registers a call under `key` (timeoutMs 0 = no deadline); the promise settles through settle(). */
  add(key: K, detail: D, timeoutMs: number, signal?: AbortSignal): Promise<unknown> {
    const { promise, resolve, reject } = Promise.withResolvers<unknown>();
    const started = performance.now();
    const deadline = timeoutMs > 0 ? started + timeoutMs : Infinity;
    const call: Entry<D> = { detail, started, timeoutMs, deadline, resolve, reject, signal, onAbort: null };
    if (signal) {
      call.onAbort = () => this.handlers.aborted(key, call, signal.reason);
      signal.addEventListener("abort", call.onAbort, { once: true });
    }
    this.calls.set(key, call);
    if (deadline < Infinity) this.deadlines.arm(deadline);
    return promise;
  }

  /** Completes a call with an error, or (error null) with `value`; returns it, or null when it was settled already. */
  settle(key: K, error: unknown, value?: unknown): PendingCall<D> | null {
    const call = this.calls.get(key);
    if (!call) return null;
    this.calls.delete(key);
    if (call.onAbort) call.signal?.removeEventListener("abort", call.onAbort);
    if (error !== null) call.reject(error);
    else call.resolve(value);
    return call;
  }

  get(key: K): PendingCall<D> | undefined {
    return this.calls.get(key);
  }

  has(key: K): boolean {
    return this.calls.has(key);
  }

  get size(): number {
    return this.calls.size;
  }

  keys(): K[] {
    return [...this.calls.keys()];
  }

  /** Stops the deadline timer (the owner is closing). */
  stop(): void {
    this.deadlines.stop();
  }
}
