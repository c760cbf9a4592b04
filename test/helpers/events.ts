/** Reading GET /api/v1/events in tests: a consumer that keeps every event it gets, in order. */
import type { ApiEvent } from "../../src/api-types/json.ts";

export class EventCollector {
  readonly events: ApiEvent[] = [];
  private readonly abort = new AbortController();
  private waiters: { pred: (e: ApiEvent[]) => boolean; resolve: () => void }[] = [];
  /** Resolves when the stream ends (the server closed it, or close()). */
  readonly ended: Promise<void>;
  /** The response's status and content type, once the headers came. */
  status = 0;
  contentType = "";

  private constructor(url: string, headers: Record<string, string>) {
    let opened!: () => void;
    this.opened = new Promise((r) => (opened = r));
    this.ended = (async () => {
      try {
        const res = await fetch(url, { headers, signal: this.abort.signal });
        this.status = res.status;
        this.contentType = res.headers.get("content-type") ?? "";
        opened();
        if (!res.ok || !res.body) {
          this.error = await res.text();
          return;
        }
        const decoder = new TextDecoder();
        let rest = "";
        for await (const chunk of res.body) {
          rest += decoder.decode(chunk, { stream: true });
          let nl: number;
          while ((nl = rest.indexOf("\n")) >= 0) {
            const line = rest.slice(0, nl);
            rest = rest.slice(nl + 1);
            if (line.trim() !== "") this.events.push(JSON.parse(line) as ApiEvent);
          }
          this.check();
        }
      } catch (e) {
        if (!this.abort.signal.aborted) this.error = (e as Error).message;
      } finally {
        opened();
        this.check();
      }
    })();
  }

  private readonly opened: Promise<void>;
  error: string | null = null;

  /** Opens a stream and waits until the server subscribed it (its first line arrived). */
  static async open(url: string, headers: Record<string, string> = {}): Promise<EventCollector> {
    const c = new EventCollector(url, headers);
    await c.opened;
    if (c.status === 200) await c.until((e) => e.length > 0, 10_000, "the first line");
    return c;
  }

  private check(): void {
    this.waiters = this.waiters.filter((w) => {
      if (!w.pred(this.events)) return true;
      w.resolve();
      return false;
    });
  }

  /** Resolves once `pred` holds for the events so far. */
  until(pred: (events: ApiEvent[]) => boolean, timeoutMs: number, what: string): Promise<void> {
    if (pred(this.events)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${what} within ${timeoutMs} ms; events so far:\n${this.describe()}`)), timeoutMs);
      this.waiters.push({
        pred,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      });
    });
  }

  /** Waits for an event with this action (for this VM, when given) and returns it. */
  async next(action: string, vm: string | null, timeoutMs: number): Promise<ApiEvent> {
    const match = (e: ApiEvent) => e.action === action && (vm === null || e.vm?.name === vm);
    await this.until((es) => es.some(match), timeoutMs, `${action}${vm ? ` of ${vm}` : ""}`);
    return this.events.find(match)!;
  }

  /** The events that are not about the stream itself. */
  get real(): ApiEvent[] {
    return this.events.filter((e) => e.type !== "stream");
  }

  describe(): string {
    return this.events.map((e) => `${e.id} ${e.type} ${e.action} ${e.vm?.name ?? ""} ${e.detail}`).join("\n");
  }

  close(): void {
    this.abort.abort();
  }
}

/** (action, vm name, detail) of the non-stream events about `vm`, in order. */
export function timeline(events: ApiEvent[], vm: string): string[] {
  return events.filter((e) => e.vm?.name === vm).map((e) => `${e.action} ${e.detail}`);
}
