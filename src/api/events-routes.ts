/**
 * GET /api/v1/events: the event stream (src/events/). NDJSON by default, Server-Sent Events
 * for `Accept: text/event-stream`; filters ?type= ?vm= ?project=; resumption with ?since=ID
 * or Last-Event-ID; ?follow=false ends the stream once the held events are sent.
 */
import { Elysia, t } from "elysia";
import { ServiceError } from "../api-types/errors.ts";
import { EVENT_TYPES } from "../api-types/values.ts";
import type { Caller } from "../auth/index.ts";
import type { EventBus } from "../events/bus.ts";
import { FilterError, parseFilter } from "../events/filter.ts";
import { CONTENT_TYPES, eventStream, type StreamFormat } from "../events/stream.ts";
import { Flag, isTrue } from "./schemas.ts";

export interface EventRoutesOptions {
  bus: EventBus;
  /** The caller of a request (authenticated before any route runs). */
  callerOf: (request: Request) => Caller | null;
  /** SSE comment interval while nothing happens, ms. */
  heartbeatMs?: number;
}

function eventId(value: string | null | undefined, field: string): number | null {
  if (value === null || value === undefined || value === "") return null;
  if (!/^\d{1,16}$/.test(value.trim())) throw new ServiceError("validation_error", `${field}: expected an event id (a whole number)`, { field });
  return Number(value.trim());
}

export function eventRoutes(opts: EventRoutesOptions) {
  return new Elysia({ name: "rcloud-events" }).get(
    "/events",
    ({ request, query, server }) => {
      const caller = opts.callerOf(request);
      const confined = caller !== null && caller.role !== "admin" ? (caller.project ?? "") : null;
      let filter;
      try {
        filter = parseFilter(query, confined);
      } catch (e) {
        if (!(e instanceof FilterError)) throw e;
        throw new ServiceError(e.field === "project" && confined !== null ? "forbidden" : "validation_error", e.message, { field: e.field });
      }
      const since = eventId(query.since, "since") ?? eventId(request.headers.get("last-event-id"), "Last-Event-ID");
      const follow = query.follow === undefined || isTrue(query.follow);
      const format: StreamFormat = /\btext\/event-stream\b/i.test(request.headers.get("accept") ?? "") ? "sse" : "ndjson";
      const sub = opts.bus.subscribe(filter, { since, follow });
      // A stream lives as long as the client wants it: no idle timeout (SSE sends heartbeats).
      server?.timeout(request, 0);
      return new Response(eventStream(sub, format, { heartbeatMs: opts.heartbeatMs ?? 15_000 }), {
        headers: { "content-type": CONTENT_TYPES[format], "cache-control": "no-store", "x-accel-buffering": "no" },
      });
    },
    {
      query: t.Object({
        type: t.Optional(t.String({ description: `Comma-separated event types: ${EVENT_TYPES.join(", ")}` })),
        vm: t.Optional(t.String({ description: "Comma-separated VM names or ids" })),
        project: t.Optional(t.String({ description: "Comma-separated projects (a project token sees only its own)" })),
        since: t.Optional(t.String({ description: "Replay the held events after this id first (SSE: or the Last-Event-ID header)" })),
        follow: t.Optional(Flag("false (or 0): end the stream after the held events instead of following new ones; true (or 1, the default): follow")),
      }),
      detail: {
        tags: ["events"],
        summary: "Stream of VM lifecycle and operation events (NDJSON, or SSE with Accept: text/event-stream)",
        description:
          "Each line (or SSE data) is one event: id, time, type, action, vm {id, name}, project, detail, request_id, host. " +
          "The stream starts with a `stream` event: `subscribed`, or `gap` when the ring (events.buffer) no longer holds the events after `since`. " +
          "A consumer more than events.subscriber_buffer events behind gets a final `cut-off` event and the stream ends.",
        responses: {
          200: { description: "The event stream", content: { "application/x-ndjson": { schema: { type: "string" } }, "text/event-stream": { schema: { type: "string" } } } },
        },
      },
    },
  );
}
