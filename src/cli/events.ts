/**
 * The CLI's side of GET /api/v1/events: an NDJSON stream read event by event (`rcloud
 * events`, and `--wait`, which follows a VM's events instead of polling it), resumed after
 * the last id when the stream ends or the server cut it off.
 */
import type { ApiEvent } from "../api-types/json.ts";
import type { ApiClient } from "./client.ts";

export interface EventQuery {
  vm?: string;
  type?: string;
  /** Replay the held events after this id (0: all held). */
  since?: number | null;
  /** false: end once the held events are read. */
  follow: boolean;
}

type Chunk = { done: true; value?: Uint8Array } | { done: false; value: Uint8Array };
interface ChunkReader {
  read(): Promise<Chunk>;
  cancel(): Promise<void>;
}

/** A followed event stream: `next()` gives the next event, or null at `timeoutMs` or the end. */
export class EventFeed {
  private buffer = "";
  private readonly pending: ApiEvent[] = [];
  private reader: ChunkReader | null = null;
  private decoder = new TextDecoder();
  /** A read that outlived a timeout: the next read takes its result. */
  private inFlight: Promise<Chunk> | null = null;
  private ended = false;
  private lastId: number | null = null;
  private readonly abort = new AbortController();

  private constructor(
    private readonly api: ApiClient,
    private readonly query: EventQuery,
  ) {}

  /** Opens the stream; resolves once the server has subscribed it (its first line arrived). */
  static async open(api: ApiClient, query: EventQuery): Promise<EventFeed> {
    const feed = new EventFeed(api, query);
    await feed.connect(query.since ?? null);
    return feed;
  }

  private async connect(since: number | null): Promise<void> {
    const q = new URLSearchParams();
    if (this.query.vm) q.set("vm", this.query.vm);
    if (this.query.type) q.set("type", this.query.type);
    if (since !== null) q.set("since", String(since));
    if (!this.query.follow) q.set("follow", "false");
    const body = await this.api.stream(`/events${q.size ? `?${q}` : ""}`, this.abort.signal);
    this.reader = body.getReader();
    this.decoder = new TextDecoder();
    this.inFlight = null;
    this.buffer = "";
    this.ended = false;
    // The server's first line (subscribed or gap) says the subscription is in place.
    const first = await this.read(null);
    if (first) this.pending.unshift(first);
  }

  /** The next event (stream events included); null when `timeoutMs` passes or the stream is over. */
  async next(timeoutMs: number | null = null): Promise<ApiEvent | null> {
    const e = this.pending.shift() ?? (await this.read(timeoutMs));
    if (e && e.id !== null) this.lastId = e.id;
    return e;
  }

  /** After the stream ended (cut off, server restart): follow again after the last id read. */
  async resume(): Promise<void> {
    await this.connect(this.lastId ?? this.query.since ?? null);
  }

  get done(): boolean {
    return this.ended && this.pending.length === 0;
  }

  close(): void {
    this.abort.abort();
    void this.reader?.cancel().catch(() => {});
  }

  private async read(timeoutMs: number | null): Promise<ApiEvent | null> {
    const deadline = timeoutMs === null ? null : Date.now() + timeoutMs;
    for (;;) {
      const nl = this.buffer.indexOf("\n");
      if (nl >= 0) {
        const line = this.buffer.slice(0, nl);
        this.buffer = this.buffer.slice(nl + 1);
        if (line.trim() !== "") return JSON.parse(line) as ApiEvent;
        continue;
      }
      if (this.ended || !this.reader) return null;
      // A timeout of 0 still takes what has already arrived.
      const left = deadline === null ? null : Math.max(0, deadline - Date.now());
      const chunk = this.inFlight ?? this.reader.read();
      this.inFlight = null;
      const got = left === null ? await chunk : await Promise.race([chunk, Bun.sleep(left).then(() => "timeout" as const)]);
      if (got === "timeout") {
        this.inFlight = chunk;
        return null;
      }
      if (got.done) {
        this.ended = true;
        return null;
      }
      this.buffer += this.decoder.decode(got.value, { stream: true });
    }
  }
}

/** One line per event for people: time, action, VM, detail (and the request id of operations). */
export function eventLine(e: ApiEvent): string {
  const time = e.time.replace(/\.\d+Z$/, "Z");
  const subject = e.vm ? e.vm.name : e.type === "host" ? `host ${e.host ?? ""}` : "-";
  const req = e.request_id ? ` [request ${e.request_id}]` : "";
  const code = e.error_code ? ` (${e.error_code})` : "";
  return `${time}  ${e.action.padEnd(16)} ${subject.padEnd(20)} ${e.detail}${code}${req}`;
}
