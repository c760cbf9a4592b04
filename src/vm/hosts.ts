/**
 * The fleet: every hypervisor host rcloud places VMs on, each with its own driver (and so its
 * own libvirt sessions, deadlines and keepalive), and what rcloud knows of it between calls:
 * whether it answers, its last facts and VM listing, and whether an operator cordoned it.
 * libvirtd on each host stays the store of that host's VMs; only cordons are kept here, in a
 * small JSON file in rcloud's state directory.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import type { HostState } from "../api-types/values.ts";
import type { HostInfo, VmDriver, VmRecord } from "../drivers/types.ts";
import { abortableSleep as sleep } from "../util/abortable-sleep.ts";

/** How often each host is asked whether it answers (a priority call libvirtd serves even when busy). */
export const PROBE_INTERVAL_MS = 2000;
/** A probe not answered within this long counts as a miss. */
const PROBE_TIMEOUT_MS = 2000;
/** Misses in a row after which a host is offline (≈ 3 × 2 s, well inside the 20 s promise). */
const MISSES_OFFLINE = 3;
/** First retry delay of a host that cannot be connected; doubles up to CONNECT_RETRY_MAX_MS. */
const CONNECT_RETRY_MS = 500;
const CONNECT_RETRY_MAX_MS = 5000;

export interface HostOptions {
  name: string;
  /** Shown in the API: the URI without user info or client-side parameters. */
  displayUri: string;
  /** A message as API clients may see it: without the user name or local paths of the host's URI. */
  redact?: (text: string) => string;
  labels: Record<string, string>;
  vcpuOvercommit: number;
  memoryOvercommit: number;
}

type Log = (level: "info" | "warn" | "error", msg: string, fields?: Record<string, unknown>) => void;

/** The error thrown by `whileUp` when a host stops answering under a call. */
export class HostDownError extends Error {
  override readonly name = "HostDownError";
  constructor(readonly host: string, detail: string | null) {
    super(`host ${host} is not answering${detail ? ` (${detail})` : ""}; its VMs cannot be changed until it is back`);
  }
}

export class Host {
  readonly name: string;
  readonly displayUri: string;
  readonly redact: (text: string) => string;
  readonly labels: Record<string, string>;
  readonly vcpuOvercommit: number;
  readonly memoryOvercommit: number;
  cordoned = false;
  /** Connected and answering probes. */
  private up = false;
  private misses = 0;
  lastContact: Date | null = null;
  /** Why the last probe or connect failed, as clients may see it (redacted; the log has it whole). */
  lastError: string | null = null;
  /** The last host facts read (capacity checks share one recent reading). */
  facts: { at: number; info: HostInfo } | null = null;
  /** The last complete listing of the host's VMs: served (as unknown) while it does not answer. */
  records: VmRecord[] | null = null;
  private downListeners = new Set<() => void>();
  /** Ends the probe loop's wait at once (set while it waits). */
  wakeProbe: (() => void) | null = null;

  /** A call failed as if the host were gone: probe now rather than at the next round. */
  probeSoon(): void {
    this.wakeProbe?.();
  }

  constructor(
    readonly driver: VmDriver,
    opts: HostOptions,
  ) {
    this.name = opts.name;
    this.displayUri = opts.displayUri;
    this.redact = opts.redact ?? ((text) => text);
    this.labels = opts.labels;
    this.vcpuOvercommit = opts.vcpuOvercommit;
    this.memoryOvercommit = opts.memoryOvercommit;
  }

  get online(): boolean {
    return this.up;
  }

  get state(): HostState {
    if (!this.up) return "offline";
    return this.cordoned ? "cordoned" : "online";
  }

  /** Any successful call is proof of life. */
  markContact(): void {
    this.lastContact = new Date();
    this.misses = 0;
    this.lastError = null;
    this.up = true;
  }

  /** A failed probe or connect; `force` takes the host offline at once (it is known dead). */
  markMiss(error: string, force = false): boolean {
    this.lastError = this.redact(error);
    this.misses++;
    if (this.up && (force || this.misses >= MISSES_OFFLINE)) {
      this.up = false;
      for (const l of this.downListeners) l();
      return true;
    }
    return false;
  }

  /**
   * Runs a call on this host, failing with HostDownError as soon as the host is (or goes)
   * offline, so a frozen host answers callers within one probe round instead of the call's
   * own deadline. The call itself runs on; its result is dropped.
   */
  whileUp<T>(call: () => Promise<T>): Promise<T> {
    if (!this.up) return Promise.reject(new HostDownError(this.name, this.lastError));
    return new Promise<T>((resolve, reject) => {
      const onDown = () => reject(new HostDownError(this.name, this.lastError));
      this.downListeners.add(onDown);
      call().then(
        (v) => {
          this.downListeners.delete(onDown);
          resolve(v);
        },
        (e: unknown) => {
          this.downListeners.delete(onDown);
          reject(e);
        },
      );
    });
  }
}

/** The hosts, their connections and probes, and the cordons file. */
export class HostRegistry {
  private readonly byName = new Map<string, Host>();
  private readonly abort = new AbortController();
  private readonly loops: Promise<void>[] = [];
  /** Told when a host comes or goes or is (un)cordoned (the event stream). */
  /** Called once per host when it first connects (the server reconciles it then). */
  onConnected: ((host: Host) => void) | null = null;
  onChange: ((host: Host, action: "host-online" | "host-offline" | "host-cordoned" | "host-uncordoned", detail: string) => void) | null = null;

  constructor(
    readonly hosts: Host[],
    /** JSON file of cordoned host names; null = cordons are not kept across restarts. */
    private readonly cordonFile: string | null,
    private readonly log: Log = () => {},
  ) {
    for (const h of hosts) this.byName.set(h.name, h);
    for (const name of this.readCordons()) {
      const h = this.byName.get(name);
      if (h) h.cordoned = true;
    }
  }

  get(name: string): Host | undefined {
    return this.byName.get(name);
  }

  /** Connects every host in the background and probes each from then on. */
  start(): void {
    for (const h of this.hosts) this.loops.push(this.run(h));
  }

  /** Resolves once every host has connected once (or `timeoutMs` passed). */
  async connected(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (this.hosts.every((h) => h.online)) return true;
      await Bun.sleep(50);
    }
    return false;
  }

  private async run(h: Host): Promise<void> {
    const signal = this.abort.signal;
    let delay = CONNECT_RETRY_MS;
    while (!signal.aborted) {
      try {
        await h.driver.init();
        // Placement needs the facts: read them now, not on the first create.
        h.facts = { at: Date.now(), info: await h.driver.hostInfo() };
        h.markContact();
        this.log("info", "host connected", { host: h.name, driver: h.driver.kind });
        this.onChange?.(h, "host-online", "connected");
        this.onConnected?.(h);
        break;
      } catch (e) {
        if (signal.aborted) return;
        h.markMiss((e as Error).message, true);
        this.log("warn", "host not reachable yet; retrying", { host: h.name, error: (e as Error).message, retry_ms: delay });
        await sleep(delay, signal);
        delay = Math.min(delay * 2, CONNECT_RETRY_MAX_MS);
      }
    }
    while (!signal.aborted) {
      // Woken early when a call on the host failed as if it were gone (probeSoon).
      const wake = new AbortController();
      h.wakeProbe = () => wake.abort();
      await sleep(PROBE_INTERVAL_MS, AbortSignal.any([signal, wake.signal]));
      h.wakeProbe = null;
      if (signal.aborted) return;
      const t0 = Date.now();
      const result = await Promise.race([
        h.driver.health().catch((e: unknown) => ({ ok: false, detail: (e as Error).message })),
        Bun.sleep(PROBE_TIMEOUT_MS).then(() => ({ ok: false, detail: `no answer within ${PROBE_TIMEOUT_MS} ms`, late: true })),
      ]);
      // A probe refused at once (connection gone) is proof enough; a silent one may be a busy host.
      const refused = !result.ok && !("late" in result);
      if (result.ok) {
        if (!h.online) {
          this.log("info", "host answers again", { host: h.name });
          this.onChange?.(h, "host-online", "answers again");
        }
        h.markContact();
      } else if (h.markMiss(result.detail, refused)) {
        this.log("warn", "host offline", { host: h.name, error: result.detail, probe_ms: Date.now() - t0 });
        this.onChange?.(h, "host-offline", h.redact(result.detail));
      }
    }
  }

  async cordon(name: string, on: boolean): Promise<Host> {
    const h = this.byName.get(name);
    if (!h) throw new Error(`no host ${name}`);
    if (h.cordoned !== on) {
      h.cordoned = on;
      this.writeCordons();
      this.log("info", on ? "host cordoned" : "host uncordoned", { host: name });
      this.onChange?.(h, on ? "host-cordoned" : "host-uncordoned", on ? "takes no new VMs" : "takes new VMs again");
    }
    return h;
  }

  private readCordons(): string[] {
    if (!this.cordonFile) return [];
    try {
      const v = JSON.parse(readFileSync(this.cordonFile, "utf8")) as { cordoned?: unknown };
      return Array.isArray(v.cordoned) ? v.cordoned.filter((n): n is string => typeof n === "string") : [];
    } catch {
      return []; // no file yet
    }
  }

  private writeCordons(): void {
    if (!this.cordonFile) return;
    const cordoned = this.hosts.filter((h) => h.cordoned).map((h) => h.name);
    mkdirSync(dirname(this.cordonFile), { recursive: true });
    const tmp = `${this.cordonFile}.tmp`;
    writeFileSync(tmp, `${JSON.stringify({ cordoned }, null, 2)}\n`, { mode: 0o644 });
    renameSync(tmp, this.cordonFile);
  }

  async close(): Promise<void> {
    this.abort.abort();
    await Promise.allSettled(this.loops);
    await Promise.allSettled(this.hosts.map((h) => h.driver.close()));
  }
}
