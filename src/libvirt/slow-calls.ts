/**
 * Admission of calls that keep a libvirtd worker thread busy for long, so that the daemon's
 * worker pool grows under a burst instead of queueing it.
 *
 * libvirtd's worker pool starts with min_workers (5) threads and may grow to max_workers
 * (20). In libvirt 9.0 it adds a thread only when a call arrives while the number of idle
 * workers equals the number of queued calls (virThreadPoolSendJob subtracts two unsigned
 * counters, so "more queued than idle" never counts). A burst sent at once therefore stays on
 * the 6-9 threads the pool reached before calls started queueing, for as long as any call is
 * queued: 50 domain starts then finish one by one (42-52 s here), while the same starts from
 * 50 virsh processes, whose calls arrive spread out, run on 20 workers (~29 s).
 *
 * So a pool keeps its own count of slow calls in flight and a window: the number of workers
 * it believes the daemon has (min_workers at first). Within the window a call goes at once (a
 * worker is free). When the window is full and more calls wait, one more is let through every
 * `gapMs`: it arrives with every worker busy and nothing queued, which makes the daemon add a
 * thread, and the window grows by one, up to `maxWorkers`. If the daemon did not grow after
 * all (another client's calls were queued), our extra call waits there for the next free
 * worker, and the one after it arrives at an empty queue again: the window heals itself.
 * Quick calls are never held back and never queue behind ours.
 */

/** Procedures that hold a libvirtd worker for up to seconds (QEMU start, qemu-img, ...). */
export const WORKER_HOLDING_PROCEDURES: ReadonlySet<string> = new Set(
  [
    "DOMAIN_CREATE",
    "DOMAIN_CREATE_WITH_FLAGS",
    "DOMAIN_CREATE_XML",
    "DOMAIN_DESTROY",
    "DOMAIN_DESTROY_FLAGS",
    "DOMAIN_SHUTDOWN",
    "DOMAIN_SHUTDOWN_FLAGS",
    "DOMAIN_REBOOT",
    "DOMAIN_RESET",
    "STORAGE_VOL_CREATE_XML",
    "STORAGE_VOL_CREATE_XML_FROM",
    "STORAGE_VOL_DELETE",
    "STORAGE_VOL_RESIZE",
    "STORAGE_POOL_REFRESH",
    "STORAGE_POOL_CREATE",
    "STORAGE_POOL_BUILD",
    // internal snapshots: qemu-img on each disk, or QEMU saving/loading the guest's memory
    "DOMAIN_SNAPSHOT_CREATE_XML",
    "DOMAIN_REVERT_TO_SNAPSHOT",
    "DOMAIN_SNAPSHOT_DELETE",
  ].map((p) => `REMOTE_PROC_${p}`),
);

export interface SlowCallGateOptions {
  /** Least time between two window growths, ms; 0 turns the gate off. */
  gapMs: number;
  /** Workers a freshly started daemon has (libvirtd's min_workers, default 5). */
  startWorkers?: number;
  /** Most slow calls in flight (libvirtd's max_workers, default 20). */
  maxWorkers?: number;
}

export class SlowCallGate {
  private inFlight = 0;
  private window: number;
  private lastGrowth = -Infinity;
  private readonly waiting: (() => void)[] = [];
  private timer: ReturnType<typeof setTimeout> | null = null;
  private readonly startWorkers: number;
  private readonly maxWorkers: number;

  constructor(private readonly opts: SlowCallGateOptions) {
    this.maxWorkers = Math.max(1, opts.maxWorkers ?? 20);
    this.startWorkers = Math.min(this.maxWorkers, Math.max(1, opts.startWorkers ?? 5));
    this.window = this.startWorkers;
  }

  get enabled(): boolean {
    return this.opts.gapMs > 0;
  }

  /** Slow calls in flight and the current window (for tests and metrics). */
  get state(): { inFlight: number; window: number; waiting: number } {
    return { inFlight: this.inFlight, window: this.window, waiting: this.waiting.length };
  }

  /**
   * Resolves when the call may be sent; pair it with one leave(). If `signal` aborts while
   * the call waits, the call leaves the queue and the promise rejects with the signal's
   * reason (no leave() then).
   */
  enter(signal?: AbortSignal): Promise<void> | null {
    if (!this.enabled) return null;
    if (this.waiting.length === 0 && this.admit()) return null;
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise<void>((resolve, reject) => {
      const onAbort = () => {
        const i = this.waiting.indexOf(admitted);
        if (i >= 0) this.waiting.splice(i, 1);
        reject(signal?.reason);
      };
      const admitted = () => {
        signal?.removeEventListener("abort", onAbort);
        resolve();
      };
      this.waiting.push(admitted);
      signal?.addEventListener("abort", onAbort, { once: true });
      this.schedule();
    });
  }

  /** The call has finished (either way). */
  leave(): void {
    if (!this.enabled) return;
    this.inFlight--;
    this.drain();
  }

  /** The daemon may have restarted (a session was lost): back to its starting pool. */
  reset(): void {
    this.window = this.startWorkers;
  }

  private admit(): boolean {
    if (this.inFlight < this.window) {
      this.inFlight++;
      return true;
    }
    const now = performance.now();
    if (this.window < this.maxWorkers && now - this.lastGrowth >= this.opts.gapMs) {
      this.window++;
      this.lastGrowth = now;
      this.inFlight++;
      return true;
    }
    return false;
  }

  private drain(): void {
    while (this.waiting.length > 0 && this.admit()) this.waiting.shift()!();
    this.schedule();
  }

  /** While calls wait on a full window that may still grow, try again after the gap. */
  private schedule(): void {
    if (this.timer || this.waiting.length === 0 || this.window >= this.maxWorkers) return;
    const wait = Math.max(0, this.lastGrowth + this.opts.gapMs - performance.now());
    this.timer = setTimeout(() => {
      this.timer = null;
      this.drain();
    }, wait);
  }
}
