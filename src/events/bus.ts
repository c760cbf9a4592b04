/**
 * The event bus behind GET /events: a bounded ring of the last `capacity` events, each
 * serialised once, and subscribers that are cursors into it. A subscriber costs no memory per
 * event: it reads the shared ring from its cursor. One that falls more than `subscriberBuffer`
 * events behind what was published since it connected is cut off with a final stream event,
 * so a stalled reader never grows rcloud; a replay the ring overtakes gets a `gap` event.
 *
 * Ids increase by one per event and start at the clock (milliseconds × 1000) when the bus is
 * made, so they keep increasing across restarts: a `since` from before a restart is older than
 * anything held and gets a `gap` event instead of silently skipping the new events.
 */
import type { ApiEvent } from "../api-types/json.ts";
import { type EventFilter, matches } from "./filter.ts";

/** What a publisher supplies; the bus adds id and time. */
export type EventInput = Omit<ApiEvent, "id" | "time">;

/** Anything events can be published to (the VM service holds one of these). */
export interface EventSink {
  publish(input: EventInput): void;
}

export interface Entry {
  event: ApiEvent;
  /** The event as one NDJSON line. */
  line: Uint8Array;
  /** The event as a Server-Sent Event, made by the first SSE subscriber that needs it. */
  sse?: Uint8Array;
}

export interface BusOptions {
  /** Events held for resumption (events.buffer). */
  capacity: number;
  /** Live events a subscriber may fall behind before it is cut off (events.subscriber_buffer). */
  subscriberBuffer: number;
  /** First id; default Date.now() × 1000. */
  firstId?: number;
  now?: () => Date;
}

const encoder = new TextEncoder();

export function encodeLine(event: ApiEvent): Uint8Array {
  return encoder.encode(`${JSON.stringify(event)}\n`);
}

export class EventBus implements EventSink {
  private readonly ring: (Entry | undefined)[];
  /** Id of the next event published. */
  private nextId: number;
  /** Id of the oldest event held (== nextId when none is). */
  private oldestId: number;
  private readonly subscribers = new Set<Subscription>();
  private readonly now: () => Date;
  private readonly firstId: number;
  /** Subscribers cut off for falling behind, since start (metrics). */
  cutOffs = 0;

  constructor(readonly opts: BusOptions) {
    if (!Number.isInteger(opts.capacity) || opts.capacity < 1) throw new RangeError("event bus capacity must be a positive integer");
    this.ring = new Array<Entry | undefined>(opts.capacity);
    this.nextId = opts.firstId ?? Date.now() * 1000;
    this.firstId = this.nextId;
    this.oldestId = this.nextId;
    this.now = opts.now ?? (() => new Date());
  }

  /** The id of the last event published (one less than the first id when none was). */
  get lastId(): number {
    return this.nextId - 1;
  }

  /** The id of the oldest event still held; lastId + 1 when the ring is empty. */
  get firstHeldId(): number {
    return this.oldestId;
  }

  get subscriberCount(): number {
    return this.subscribers.size;
  }

  /** Events published since the bus was made. */
  get publishedCount(): number {
    return this.nextId - this.firstId;
  }

  publish(input: EventInput): ApiEvent {
    const event: ApiEvent = { id: this.nextId, time: this.now().toISOString(), ...input };
    const cap = this.ring.length;
    this.ring[this.nextId % cap] = { event, line: encodeLine(event) };
    this.nextId++;
    if (this.nextId - this.oldestId > cap) this.oldestId = this.nextId - cap;
    for (const sub of this.subscribers) sub.published();
    return event;
  }

  /** The entry with this id, if the ring still holds it. */
  entry(id: number): Entry | undefined {
    if (id < this.oldestId || id >= this.nextId) return undefined;
    return this.ring[id % this.ring.length];
  }

  /**
   * A new subscriber. `since`: replay the held events after this id first (0: all held; null:
   * live events only). `follow: false` ends the subscription once it has caught up with the events
   * published before it began.
   */
  subscribe(filter: EventFilter, opts: { since: number | null; follow: boolean }): Subscription {
    const sub = new Subscription(this, filter, opts.since, opts.follow, (s) => this.subscribers.delete(s));
    if (opts.follow) this.subscribers.add(sub);
    return sub;
  }

  /** Called by a subscription that fell behind. */
  noteCutOff(): void {
    this.cutOffs++;
  }

  /** A stream event (not held, no id). */
  streamEvent(action: "subscribed" | "gap" | "cut-off", detail: string, lastId: number | null): ApiEvent {
    return { id: null, time: this.now().toISOString(), type: "stream", action, vm: null, project: null, detail, request_id: null, host: null, last_id: lastId };
  }
}

export type SubscriptionState = "open" | "caught-up" | "cut-off" | "closed";

/** One consumer's position in the bus. Single reader: the HTTP stream that owns it. */
export class Subscription {
  /** Every id ≤ cursor has been delivered or skipped. */
  private cursor: number;
  /** The last id published when the subscription began: backlog counts events after it. */
  private readonly startedAt: number;
  /** Stream events to deliver before anything else (subscribed or gap; then cut-off). */
  private readonly preface: ApiEvent[] = [];
  private waiter: (() => void) | null = null;
  private stateValue: SubscriptionState = "open";
  /** Called once when the subscriber is cut off (the stream then writes the final event). */
  onCutOff: (() => void) | null = null;

  constructor(
    private readonly bus: EventBus,
    private readonly filter: EventFilter,
    since: number | null,
    private readonly follow: boolean,
    private readonly detach: (s: Subscription) => void,
  ) {
    const last = bus.lastId;
    this.startedAt = last;
    const oldest = bus.firstHeldId;
    if (since === 0) {
      // "Everything held": no id is 0, so it cannot be a position from an earlier stream.
      this.cursor = oldest - 1;
      this.preface.push(bus.streamEvent("subscribed", `replaying the ${last - oldest + 1} events held, then live events after id ${last}`, oldest - 1));
    } else if (since === null) {
      this.cursor = last;
      this.preface.push(bus.streamEvent("subscribed", `live events follow id ${last}`, last));
    } else if (since >= oldest - 1 && since <= last) {
      this.cursor = since;
      this.preface.push(bus.streamEvent("subscribed", `replaying the events after id ${since}, then live events after id ${last}`, since));
    } else {
      // Older than the ring (or not from this server's history): say so, replay all that is held.
      this.cursor = oldest - 1;
      const why =
        since > last
          ? `id ${since} is not in this server's history (rcloud restarted, or a wrong id)`
          : `events ${since + 1} to ${oldest - 1} are no longer held (events.buffer)`;
      this.preface.push(bus.streamEvent("gap", `${why}; the stream continues after id ${oldest - 1}`, oldest - 1));
    }
  }

  get state(): SubscriptionState {
    return this.stateValue;
  }

  /** The last id delivered (or skipped by the filter). */
  get position(): number {
    return this.cursor;
  }

  /** The bus published an event: wake the reader, or cut it off if it is too far behind. */
  published(): void {
    if (this.stateValue !== "open") return;
    if (this.waiter === null) {
      const behind = this.bus.lastId - Math.max(this.cursor, this.startedAt);
      if (behind > this.bus.opts.subscriberBuffer) {
        this.cutOff(behind);
        return;
      }
    }
    this.wake();
  }

  private cutOff(behind: number): void {
    this.stateValue = "cut-off";
    this.detach(this);
    this.bus.noteCutOff();
    this.preface.push(
      this.bus.streamEvent(
        "cut-off",
        `this consumer fell ${behind} events behind (events.subscriber_buffer is ${this.bus.opts.subscriberBuffer}); reconnect with ?since=${this.cursor} to resume`,
        this.cursor,
      ),
    );
    this.wake();
    this.onCutOff?.();
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  /**
   * The next events to send, in order, at most about `maxItems` (stream events first).
   * Empty when there is nothing now: then `wait()`, unless the state is no longer "open".
   */
  take(maxItems = 256): { stream: ApiEvent[]; entries: Entry[] } {
    const stream = this.preface.splice(0);
    const entries: Entry[] = [];
    if (this.stateValue === "cut-off" || this.stateValue === "closed") return { stream, entries };
    const last = this.bus.lastId;
    while (this.cursor < last && entries.length < maxItems) {
      const e = this.bus.entry(this.cursor + 1);
      if (e === undefined) {
        // The ring moved past a replay in progress: say which events are gone, go on. (Nothing
        // is in `entries` yet: ids below a missing one are missing too.)
        const oldest = this.bus.firstHeldId;
        const gap = this.bus.streamEvent("gap", `events ${this.cursor + 1} to ${oldest - 1} were overwritten before this consumer read them (events.buffer); the stream continues after id ${oldest - 1}`, oldest - 1);
        this.cursor = oldest - 1;
        return { stream: [...stream, gap], entries };
      }
      this.cursor++;
      if (matches(this.filter, e.event)) entries.push(e);
    }
    if (!this.follow && this.cursor >= this.startedAt && this.stateValue === "open") this.stateValue = "caught-up";
    return { stream, entries };
  }

  /** Whether take() has something (or the state changed): false after a wait that timed out. */
  hasPending(): boolean {
    return this.stateValue !== "open" || this.preface.length > 0 || this.cursor < this.bus.lastId;
  }

  /** Resolves on the next publish, cut-off or close (or after `ms`, for heartbeats). */
  wait(ms?: number): Promise<void> {
    if (this.hasPending()) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const timer = ms === undefined ? null : setTimeout(() => this.wake(), ms);
      this.waiter = () => {
        if (timer) clearTimeout(timer);
        resolve();
      };
    });
  }

  close(): void {
    if (this.stateValue === "closed") return;
    this.stateValue = "closed";
    this.detach(this);
    this.wake();
  }
}
