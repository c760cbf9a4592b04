/**
 * Spacing of calls that keep a libvirtd worker thread busy for long.
 *
 * libvirtd's worker pool starts with min_workers (5) threads and may grow to max_workers
 * (20). In libvirt 9.0 it adds a thread only when a call arrives while the number of idle
 * workers equals the number of queued calls (virThreadPoolSendJob compares two unsigned
 * counters, so "fewer idle workers than queued calls" never counts). A burst of slow calls
 * sent at once therefore leaves the pool at 6-9 threads for as long as calls stay queued:
 * 50 domain starts then finish one by one (42-52 s here), while the same starts from 50
 * virsh processes, which arrive spread out, run on 20 workers (~29 s).
 *
 * Sending slow calls a few milliseconds apart lets each arrive at an empty queue, so the
 * daemon's pool grows to max_workers within the first burst. A call is only held back when
 * another slow call was sent less than one gap ago, so single operations never wait.
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
  ].map((p) => `REMOTE_PROC_${p}`),
);

export class CallSpacer {
  /** performance.now() at which the next slow call may be sent. */
  private next = 0;

  constructor(private readonly gapMs: number) {}

  /**
   * Reserves the next send slot. Returns null when the call may go now (the common case,
   * no promise, no timer), else a promise that resolves at its slot.
   */
  turn(): Promise<void> | null {
    if (this.gapMs <= 0) return null;
    const now = performance.now();
    const at = Math.max(now, this.next);
    this.next = at + this.gapMs;
    return at > now ? Bun.sleep(at - now) : null;
  }
}
