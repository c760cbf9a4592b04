/**
 * Callers of Transport.drained(threshold): each waits until the transport's queue is down to
 * its threshold, or the transport is gone. Shared by the socket and the ssh transports.
 */
export class DrainWaiters {
  private waiters: { threshold: number; resolve: () => void }[] = [];

  /** Resolves once notify() reports `queued` at or below `threshold` (or release() runs). */
  wait(threshold: number): Promise<void> {
    return new Promise((resolve) => this.waiters.push({ threshold, resolve }));
  }

  /** The queue is now `queued` bytes long: wake whoever waited for that. */
  notify(queued: number): void {
    if (this.waiters.length === 0) return;
    const still: typeof this.waiters = [];
    for (const w of this.waiters) {
      if (queued <= w.threshold) w.resolve();
      else still.push(w);
    }
    this.waiters = still;
  }

  /** The transport is gone: nobody waits any more. */
  release(): void {
    for (const w of this.waiters) w.resolve();
    this.waiters = [];
  }
}
