/**
 * `--wait`: waits until the VM runs and is reachable — its IP is known (bridge), its
 * forwarded SSH port answers with an SSH banner (user networking), or it just runs (none).
 * Changes of state come from the VM's events (GET /events); the VM is read again when one
 * arrives, and only reachability is probed on a timer. Against a server without events it
 * polls the VM instead. Progress is a spinner line on a TTY and one plain line per change
 * otherwise.
 */
import { connect } from "node:net";
import type { ApiEvent, ApiVm } from "../api-types/json.ts";
import type { ApiClient } from "./client.ts";
import { CliError, EXIT } from "./errors.ts";
import type { EventFeed } from "./events.ts";
import { formatDuration } from "./units.ts";

const FRAMES = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

export class Progress {
  private text = "";
  private last = "";
  private frame = 0;
  private timer: ReturnType<typeof setInterval> | null = null;
  private readonly t0 = Date.now();

  constructor(
    private readonly write: (s: string) => void,
    private readonly tty: boolean,
  ) {
    if (tty) this.timer = setInterval(() => this.draw(), 100);
  }

  private elapsed(): string {
    return formatDuration(Math.floor((Date.now() - this.t0) / 1000) * 1000);
  }

  private draw(): void {
    this.frame = (this.frame + 1) % FRAMES.length;
    this.write(`\r\x1b[K${FRAMES[this.frame]} ${this.text} (${this.elapsed()})`);
  }

  update(text: string): void {
    this.text = text;
    if (this.tty) this.draw();
    else if (text !== this.last) this.write(`[${this.elapsed()}] ${text}\n`);
    this.last = text;
  }

  /** Stops the spinner; `text` (if any) ends the line. */
  stop(text?: string): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    if (this.tty) this.write(`\r\x1b[K${text ? `${text}\n` : ""}`);
    else if (text) this.write(`${text}\n`);
  }
}

/** True when host:port accepts a TCP connection and sends an SSH banner within `ms`. */
export function sshBanner(host: string, port: number, ms = 3000): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect({ host, port });
    let buf = "";
    const done = (ok: boolean) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), ms);
    sock.on("data", (d: Buffer) => {
      buf += d.toString("latin1");
      if (buf.length >= 4) done(buf.startsWith("SSH-"));
    });
    sock.on("error", () => done(false));
    sock.on("close", () => done(false));
  });
}

const LOOPBACK = /^(127\.|::1$|localhost$)/;

export interface WaitOptions {
  timeoutMs: number;
  pollMs?: number;
  /** Host part of the API endpoint: a forwarded port on 127.0.0.1 is only probed from the same host. */
  endpointHost: string;
  progress: Progress;
  /** The VM's event stream, opened before the operation; null: poll. */
  events?: EventFeed | null;
}

/** Lifecycle events after which a VM being waited for will not come up by itself. */
const DEAD_ENDS = new Set(["vm-stopped", "vm-crashed", "vm-deleted"]);

/** Waits until `ref` is running and reachable; returns the last VM seen. */
export async function waitReady(api: ApiClient, ref: string, opts: WaitOptions): Promise<ApiVm> {
  const deadline = Date.now() + opts.timeoutMs;
  const poll = opts.pollMs ?? 1000;
  let status = "waiting for the VM";
  let label = ref;
  const events = opts.events ?? null;
  let read = true;
  let vm: ApiVm | null = null;
  for (;;) {
    if (read || vm === null) {
      try {
        vm = await api.request<ApiVm>("GET", api.vmPath(ref), undefined, Math.max(1000, Math.min(30_000, deadline - Date.now())));
      } catch (e) {
        if (!(e instanceof CliError) || e.exitCode !== EXIT.unavailable) throw e;
        status = "server unavailable, retrying";
      }
    }
    read = events === null;
    let probeAgain = true;
    if (vm) {
      label = vm.name;
      const r = await reachability(vm, opts.endpointHost);
      if (r.ready) {
        opts.progress.stop();
        return vm;
      }
      if (vm.state === "crashed" || vm.state === "stopped") {
        opts.progress.stop();
        // The event says why (its detail); it is on its way when the state changed just now.
        const why = events ? await deadEnd(events, 2_000) : null;
        if (why) throw deadEndError(why, vm.name);
        throw new CliError(`VM ${vm.name} is ${vm.state}; see 'rcloud vm console ${vm.name}'`, EXIT.conflict);
      }
      status = `${vm.name}: ${r.status}`;
      // Not running yet: nothing to probe until an event says something changed.
      probeAgain = vm.state === "running";
      // Bridged guests get their address without an event: read the VM again.
      if (vm.state === "running" && vm.network.mode === "bridge") read = true;
    }
    opts.progress.update(status);
    if (Date.now() >= deadline) {
      opts.progress.stop();
      throw new CliError(`timed out after ${formatDuration(opts.timeoutMs)} waiting for VM ${label} (${status.replace(/^[^:]*: /, "")})`, EXIT.timeout);
    }
    const wait = Math.max(0, deadline - Date.now());
    if (events === null) {
      await Bun.sleep(Math.min(poll, wait));
      continue;
    }
    // The next event, and every one already here: the latest word on the VM counts.
    for (let e = await events.next(probeAgain || vm === null ? Math.min(poll, wait) : wait); e !== null; e = await events.next(0)) {
      if (e.type === "stream") continue;
      read = true;
      if (DEAD_ENDS.has(e.action)) {
        opts.progress.stop();
        throw deadEndError(e, label);
      }
    }
    if (events.done) await events.resume().catch(() => {}); // cut off or reconnected server: follow again
  }
}

function deadEndError(e: ApiEvent, fallbackName: string): CliError {
  const name = e.vm?.name ?? fallbackName;
  return new CliError(`VM ${name}: ${e.action} (${e.detail}); see 'rcloud vm console ${name}'`, EXIT.conflict);
}

/** The first event that ends the wait (stopped, crashed, deleted) within `ms`; null if none came. */
async function deadEnd(events: EventFeed, ms: number): Promise<ApiEvent | null> {
  const deadline = Date.now() + ms;
  for (;;) {
    const e = await events.next(Math.max(0, deadline - Date.now()));
    if (e === null) return null;
    if (DEAD_ENDS.has(e.action)) return e;
  }
}

async function reachability(vm: ApiVm, endpointHost: string): Promise<{ ready: boolean; status: string }> {
  if (vm.state !== "running") return { ready: false, status: `${vm.state}, waiting for it to run` };
  const mode = vm.network.mode;
  if (mode === "user") {
    const host = vm.ip_address ?? "127.0.0.1";
    if (vm.ssh_port === null) return { ready: true, status: "running" };
    // The forwarded port listens on the server's loopback; from elsewhere it cannot be probed.
    if (LOOPBACK.test(host) && !LOOPBACK.test(endpointHost)) return { ready: true, status: "running" };
    const ok = await sshBanner(host, vm.ssh_port);
    return { ready: ok, status: `running, waiting for SSH on ${host}:${vm.ssh_port}` };
  }
  if (mode === "bridge") return { ready: vm.ip_address !== null, status: "running, waiting for an IP address" };
  return { ready: true, status: "running" };
}
