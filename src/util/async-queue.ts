/**
 * A bounded single-consumer queue exposed as an async iterator. The producer (the socket
 * reader) never waits: when the consumer falls behind, the oldest items are dropped and
 * counted, so a slow consumer can never stall replies to other calls.
 */
export class AsyncQueue<T> implements AsyncIterableIterator<T> {
  private items: T[] = [];
  private head = 0;
  private waiting: { resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void } | null = null;
  private ended = false;
  private failure: unknown = null;
  /** Items dropped because the queue was full. */
  dropped = 0;

  constructor(
    private readonly capacity = 10_000,
    private readonly onReturn?: () => void,
  ) {}

  push(item: T): void {
    if (this.ended) return;
    if (this.waiting) {
      const w = this.waiting;
      this.waiting = null;
      w.resolve({ value: item, done: false });
      return;
    }
    if (this.items.length - this.head >= this.capacity) {
      this.head++;
      this.dropped++;
    }
    this.items.push(item);
  }

  /** Ends the iteration after buffered items (or with an error). */
  end(error?: unknown): void {
    if (this.ended) return;
    this.ended = true;
    if (error !== undefined) this.failure = error;
    if (this.waiting) {
      const w = this.waiting;
      this.waiting = null;
      if (this.failure !== null) w.reject(this.failure);
      else w.resolve({ value: undefined, done: true });
    }
  }

  get size(): number {
    return this.items.length - this.head;
  }

  next(): Promise<IteratorResult<T>> {
    if (this.head < this.items.length) {
      const value = this.items[this.head]!;
      this.items[this.head++] = undefined as T;
      if (this.head > 1024 && this.head * 2 > this.items.length) {
        this.items = this.items.slice(this.head);
        this.head = 0;
      }
      return Promise.resolve({ value, done: false });
    }
    if (this.ended) {
      return this.failure !== null ? Promise.reject(this.failure) : Promise.resolve({ value: undefined, done: true });
    }
    if (this.waiting) return Promise.reject(new Error("AsyncQueue supports a single consumer"));
    return new Promise((resolve, reject) => (this.waiting = { resolve, reject }));
  }

  return(): Promise<IteratorResult<T>> {
    this.end();
    this.items = [];
    this.head = 0;
    this.onReturn?.();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<T> {
    return this;
  }
}
