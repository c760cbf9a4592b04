/**
 * How long rcloud waits for a libvirt reply before giving up on it.
 *
 * Liveness is keepalive's job (connection.ts): a daemon that stops answering PINGs for
 * interval × count is declared dead and every call on it fails at once. A deadline only has
 * to catch a daemon whose main loop still answers keepalive while a call never completes.
 * Quick calls (lookups, XML, state) keep a deadline: they take milliseconds, so waiting
 * longer means something is wrong. Calls that hold a libvirtd worker for as long as the
 * work takes (domain start, volume creation, destroy, pool refresh: WORKER_HOLDING_PROCEDURES)
 * can legitimately take minutes on a loaded host (50 TCG starts at a load of 30), so by
 * default they wait as long as keepalive says the daemon is alive, as virsh does.
 */
import { WORKER_HOLDING_PROCEDURES } from "./slow-calls.ts";

export interface DeadlinePolicy {
  /** Deadline of quick calls, ms; 0 = none. */
  quickMs: number;
  /** Deadline of worker-holding calls, ms; 0 = none while keepalive watches the connection. */
  slowMs: number;
  /** Whether keepalive watches the connection (its interval is above 0). */
  keepalive: boolean;
}

/** With keepalive off nothing else notices a hung daemon: slow calls then stop waiting after this. */
export const SLOW_CALL_CAP_WITHOUT_KEEPALIVE_MS = 30 * 60_000;

/** The deadline of one call in ms (0 = none); an explicit per-call timeoutMs always wins. */
export function callDeadlineMs(procedure: string, policy: DeadlinePolicy, explicitMs?: number): number {
  if (explicitMs !== undefined) return explicitMs;
  if (!WORKER_HOLDING_PROCEDURES.has(procedure)) return policy.quickMs;
  if (policy.slowMs > 0) return policy.slowMs;
  return policy.keepalive ? 0 : SLOW_CALL_CAP_WITHOUT_KEEPALIVE_MS;
}
