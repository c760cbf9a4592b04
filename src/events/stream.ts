/**
 * A subscription as an HTTP response body: NDJSON (one event per line) or Server-Sent Events
 * (`id:` and `data:` lines; stream events carry no id, so a browser's Last-Event-ID stays on
 * the last real event). Pull-based: the next events are read from the ring only when the
 * connection has taken the previous ones, so a reader that stops reading stops the pulls,
 * falls behind and is cut off (bus.ts) instead of piling events up in rcloud.
 */
import type { ApiEvent } from "../api-types/json.ts";
import type { Entry, Subscription } from "./bus.ts";

export type StreamFormat = "ndjson" | "sse";

export const CONTENT_TYPES: Record<StreamFormat, string> = {
  ndjson: "application/x-ndjson",
  sse: "text/event-stream; charset=utf-8",
};

const encoder = new TextEncoder();
const SSE_HEARTBEAT = encoder.encode(": keepalive\n\n");
/** Events per chunk: fewer, larger writes when a reader is behind. */
const BATCH = 256;

function sseBytes(e: Entry): Uint8Array {
  // The NDJSON line without its newline is the data line: serialised once per event.
  e.sse ??= concat([encoder.encode(`id: ${e.event.id}\ndata: `), e.line.subarray(0, e.line.length - 1), encoder.encode("\n\n")]);
  return e.sse;
}

function streamEventBytes(e: ApiEvent, format: StreamFormat): Uint8Array {
  const json = JSON.stringify(e);
  return encoder.encode(format === "sse" ? `data: ${json}\n\n` : `${json}\n`);
}

function concat(parts: Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0]!;
  let size = 0;
  for (const p of parts) size += p.byteLength;
  const out = new Uint8Array(size);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

/** What the subscription has ready, as one chunk; null when nothing is. */
function nextChunk(sub: Subscription, format: StreamFormat): Uint8Array | null {
  const { stream, entries } = sub.take(BATCH);
  if (stream.length === 0 && entries.length === 0) return null;
  const parts = stream.map((e) => streamEventBytes(e, format));
  for (const e of entries) parts.push(format === "sse" ? sseBytes(e) : e.line);
  return concat(parts);
}

/**
 * The response body for `sub`. SSE gets a comment every `heartbeatMs` while quiet, so proxies
 * and browsers keep the connection. Cancelling (the client went away) closes the subscription.
 */
export function eventStream(sub: Subscription, format: StreamFormat, opts: { heartbeatMs: number }): ReadableStream<Uint8Array> {
  let pulling = false;
  let finished = false;
  let controller: ReadableStreamDefaultController<Uint8Array> | null = null;
  const finish = (c: ReadableStreamDefaultController<Uint8Array>) => {
    if (finished) return;
    finished = true;
    sub.close();
    try {
      c.close();
    } catch {
      // already closed or errored by the reader
    }
  };
  return new ReadableStream<Uint8Array>(
    {
      start(c) {
        controller = c;
        // A reader that stopped pulling is cut off from publish(): queue the final event
        // (one event, whatever the reader does) and end the stream behind it.
        sub.onCutOff = () => {
          if (pulling || finished || controller === null) return;
          const chunk = nextChunk(sub, format);
          if (chunk) controller.enqueue(chunk);
          finish(controller);
        };
      },
      async pull(c) {
        pulling = true;
        try {
          for (;;) {
            if (finished) return;
            const chunk = nextChunk(sub, format);
            if (chunk) {
              c.enqueue(chunk);
              if (sub.state !== "open") finish(c);
              return;
            }
            if (sub.state !== "open") return finish(c);
            await sub.wait(format === "sse" ? opts.heartbeatMs : undefined);
            if (format === "sse" && !sub.hasPending()) {
              c.enqueue(SSE_HEARTBEAT);
              return;
            }
          }
        } finally {
          pulling = false;
        }
      },
      cancel() {
        finished = true;
        sub.close();
      },
    },
    { highWaterMark: 0 },
  );
}
