/**
 * One timer for many deadlines (calls awaiting replies): armed for the earliest deadline
 * and re-armed after each sweep, so calls with equal timeouts never touch the timer and
 * each call costs no setTimeout/clearTimeout of its own.
 */
export class DeadlineSweeper<K> {
  private timer: ReturnType<typeof setTimeout> | null = null;
  private at = Infinity;

  constructor(
    /** The live entries; each has a performance.now() deadline (Infinity = none). */
    private readonly entries: () => Iterable<[K, { deadline: number }]>,
    /** Called for each entry whose deadline has passed. */
    private readonly expire: (key: K) => void,
  ) {}

  /** Makes sure a sweep happens no later than `deadline`. */
  arm(deadline: number): void {
    if (deadline < this.at) this.schedule(deadline);
  }

  private schedule(at: number): void {
    if (this.timer) clearTimeout(this.timer);
    this.at = at;
    this.timer = setTimeout(() => this.sweep(), Math.max(0, at - performance.now()));
  }

  private sweep(): void {
    this.timer = null;
    this.at = Infinity;
    const now = performance.now();
    let next = Infinity;
    const expired: K[] = [];
    for (const [key, e] of this.entries()) {
      if (e.deadline <= now) expired.push(key);
      else if (e.deadline < next) next = e.deadline;
    }
    for (const key of expired) this.expire(key);
    if (next < Infinity) this.schedule(next);
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.at = Infinity;
  }
}
