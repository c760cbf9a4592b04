/**
 * Several sessions to one libvirtd used as one. libvirtd works on at most
 * max_client_requests (5) calls per connection, so a slow call (a domain start takes
 * seconds on a busy host) holds up everything queued behind it on that connection. Each
 * call goes to the session with the fewest calls outstanding (counted here, synchronously,
 * so a burst spreads evenly); when every session is full the pool opens another, up to
 * `maxSessions`, the way N virsh processes would each have their own. Calls that hold a
 * daemon worker for long (domain starts, volume creation) also pass a window that lets
 * libvirtd's worker pool grow under a burst (slow-calls.ts).
 */
import { LibvirtClient, type LibvirtClientOptions } from "./client.ts";
import { CallAbortedError } from "./errors.ts";
import type { CallOptions } from "./connection.ts";
import type { LibvirtStream } from "./stream.ts";
import type { ProcedureDescriptor } from "../xdr/index.ts";
import { SlowCallGate, WORKER_HOLDING_PROCEDURES } from "./slow-calls.ts";
import { oncePerMessage } from "./warnings.ts";

export interface PoolOptions extends LibvirtClientOptions {
  /** Sessions opened at start (default 2). */
  minSessions?: number;
  /** Upper bound when every session is busy (default 16). */
  maxSessions?: number;
  /** Calls per session before another session is opened (libvirtd's default: 5). */
  callsPerSession?: number;
  /**
   * Calls that hold a libvirtd worker for long (domain starts, volume creation) go through a
   * window that grows by one call every this many ms while it is full, so the daemon's
   * worker pool grows with it (see slow-calls.ts). Default 10 ms; 0 = no window.
   */
  slowCallSpacingMs?: number;
  /** The most such calls in flight: libvirtd's max_workers (default 20). */
  maxSlowCalls?: number;
}

export class LibvirtPool {
  private readonly load: number[];
  private opening = 0;
  private readonly slowCalls: SlowCallGate;

  private constructor(
    private readonly uri: string,
    readonly sessions: LibvirtClient[],
    private readonly opts: PoolOptions,
  ) {
    this.load = sessions.map(() => 0);
    this.slowCalls = new SlowCallGate({ gapMs: opts.slowCallSpacingMs ?? 10, maxWorkers: opts.maxSlowCalls ?? 20 });
    for (const s of sessions) this.watch(s);
  }

  /** A lost session may mean a restarted daemon, whose worker pool starts small again. */
  private watch(s: LibvirtClient): void {
    s.on("disconnect", () => this.slowCalls.reset());
  }

  static async connect(uri: string, givenOpts: PoolOptions = {}): Promise<LibvirtPool> {
    // One warning per pool, not one per session.
    const opts = { ...givenOpts, onWarning: oncePerMessage(givenOpts.onWarning) };
    const sessions: LibvirtClient[] = [];
    try {
      for (let i = 0; i < Math.max(1, opts.minSessions ?? 2); i++) sessions.push(await LibvirtClient.connect(uri, opts));
    } catch (e) {
      await Promise.all(sessions.map((s) => s.close()));
      throw e;
    }
    return new LibvirtPool(uri, sessions, opts);
  }

  /** The first session: events and anything that wants one stable connection. */
  get primary(): LibvirtClient {
    return this.sessions[0]!;
  }

  private pick(): number {
    let best = 0;
    for (let i = 1; i < this.sessions.length; i++) {
      if (this.sessions[i]!.state === "open" && this.load[i]! < this.load[best]!) best = i;
    }
    return best;
  }

  /**
   * Calls a session takes before another is opened. A worker-holding call counts the session
   * full one call earlier: libvirtd stops reading a client with max_client_requests calls in
   * progress, and a session whose calls all run for a minute would then never have its
   * keepalive PONGs read, so the daemon would drop it after interval × (count + 1).
   */
  private capacity(slow: boolean): number {
    const perSession = this.opts.callsPerSession ?? 5;
    return slow ? Math.max(1, perSession - 1) : perSession;
  }

  /** A session with room, opening one if all are full and the cap allows. */
  private async acquire(slow = false): Promise<number> {
    const i = this.pick();
    const full = this.load[i]! >= this.capacity(slow);
    if (full && this.sessions.length + this.opening < (this.opts.maxSessions ?? 16)) {
      this.opening++;
      try {
        const s = await LibvirtClient.connect(this.uri, this.opts);
        this.watch(s);
        this.sessions.push(s);
        this.load.push(0);
        return this.sessions.length - 1;
      } catch {
        return this.pick(); // could not open one: queue on an existing session
      } finally {
        this.opening--;
      }
    }
    return i;
  }

  async call<A, R>(desc: ProcedureDescriptor<A, R>, args: A, opts?: CallOptions): Promise<R> {
    const holdsWorker = WORKER_HOLDING_PROCEDURES.has(desc.name);
    const slow = this.slowCalls.enabled && holdsWorker;
    if (slow) {
      try {
        await this.slowCalls.enter(opts?.signal);
      } catch (e) {
        throw new CallAbortedError(desc.name, { cause: e });
      }
    }
    try {
      // Fast path: pick synchronously when a session has room (no extra await per call).
      let i = this.pick();
      if (this.load[i]! >= this.capacity(holdsWorker)) i = await this.acquire(holdsWorker);
      this.load[i]!++;
      try {
        return await this.sessions[i]!.call(desc, args, opts);
      } finally {
        this.load[i]!--;
      }
    } finally {
      if (slow) this.slowCalls.leave();
    }
  }

  /** Slow calls in flight, the window and calls waiting for it (see slow-calls.ts). */
  get slowCallState(): SlowCallGate["state"] {
    return this.slowCalls.state;
  }

  async openStream<A>(desc: ProcedureDescriptor<A, void>, args: A, opts?: CallOptions): Promise<LibvirtStream> {
    return this.sessions[await this.acquire()]!.openStream(desc, args, opts);
  }

  /** Sessions re-opened after a lost connection, over all sessions. */
  get reconnects(): number {
    return this.sessions.reduce((n, s) => n + Math.max(0, s.sessions - 1), 0);
  }

  info(opts?: CallOptions): ReturnType<LibvirtClient["info"]> {
    return this.primary.info(opts);
  }

  async close(): Promise<void> {
    await Promise.all(this.sessions.map((s) => s.close()));
  }
}
