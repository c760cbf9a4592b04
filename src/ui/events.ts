/**
 * Follows GET /api/v1/events (NDJSON over fetch, so the token can go in a header, which an
 * EventSource cannot send). Reconnects with ?since=<last id> when the stream ends.
 */
import type { ApiEvent } from "../api-types/json.ts";
import { ApiError, authHeaders, errorOf } from "./api.ts";

export interface EventHandlers {
  /** Every event, stream events included. */
  onEvent(e: ApiEvent): void;
  /** Connected (true) or lost (false, with the reason). */
  onState(connected: boolean, reason?: string): void;
}

export async function followEvents(h: EventHandlers, signal: AbortSignal): Promise<void> {
  let since: number | null = null;
  while (!signal.aborted) {
    try {
      const q = since === null ? "" : `?since=${since}`;
      const res = await fetch(`/api/v1/events${q}`, { headers: { ...authHeaders(), accept: "application/x-ndjson" }, signal });
      if (!res.ok || !res.body) throw await errorOf(res);
      h.onState(true);
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let rest = "";
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        rest += value;
        let nl: number;
        while ((nl = rest.indexOf("\n")) >= 0) {
          const line = rest.slice(0, nl);
          rest = rest.slice(nl + 1);
          if (line.trim() === "") continue;
          const e = JSON.parse(line) as ApiEvent;
          if (e.id !== null) since = e.id;
          else if (since === null && e.last_id !== undefined && e.last_id !== null) since = e.last_id;
          h.onEvent(e);
        }
      }
      h.onState(false, "the event stream ended; reconnecting");
    } catch (e) {
      if (signal.aborted) return;
      h.onState(false, (e as Error).message);
      if (e instanceof ApiError && e.status === 401) return; // the page asks for a token
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}
