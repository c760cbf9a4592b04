/**
 * Adaptive busy-polling of the event loop while several libvirt calls are outstanding.
 *
 * When our thread sleeps in epoll, each reply makes the daemon wake it up — on a virtual
 * machine an inter-processor interrupt to an idle vCPU, paid in the daemon's write(). On the
 * 2-core test machine that cost libvirtd 48–53 µs of CPU per call instead of 34–40 µs, and
 * throughput with 8 callers fell by a fifth. So for a short window after every call sent and
 * every reply received while calls are outstanding, the event loop keeps turning
 * (setImmediate: poll with a zero timeout) instead of sleeping. A slow call such as a domain
 * start costs at most one window of polling; an idle client costs nothing.
 *
 * The connection asks for a window only while two or more calls are in flight (connection.ts):
 * a caller waiting for one reply at a time would poll for the whole round trip, about twice
 * the C client's CPU per call for no throughput. Off by default (busyPollUs 0) since issue 18:
 * with 8 callers it brings our CPU per call up to the C client's, its gain in throughput
 * varies from run to run, and on a host whose cores are busy the spinning thread takes CPU
 * from libvirtd itself (docs/benchmarks.md).
 */
let until = 0;
let polling = false;

function tick(): void {
  if (performance.now() < until) setImmediate(tick);
  else polling = false;
}

/** Keeps the event loop polling for at least `windowUs` more microseconds (0: no-op). */
export function keepPolling(windowUs: number): void {
  if (windowUs <= 0) return;
  const end = performance.now() + windowUs / 1000;
  if (end > until) until = end;
  if (!polling) {
    polling = true;
    setImmediate(tick);
  }
}

/** Whether the event loop is being kept polling right now (for tests). */
export function isPolling(): boolean {
  return polling;
}
