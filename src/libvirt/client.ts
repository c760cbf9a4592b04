/**
 * LibvirtClient: a libvirt connection that authenticates, opens the driver, keeps itself
 * alive and comes back after the daemon restarts.
 *
 * - A dropped connection fails every pending call at once (ConnectionClosedError).
 * - Reconnection runs in the background with exponential backoff; a call made while an
 *   attempt is in flight waits for it, a call made between attempts fails fast with the
 *   last ConnectError (so an API can answer 503 at once instead of hanging).
 * - Event subscriptions survive reconnects: they are registered again on every new session.
 */
import {
  remoteMessages,
  remoteProcedures,
  type RemoteConnectDomainEventCallbackRegisterAnyArgs,
  type RemoteDomainEventCallbackAgentLifecycleMsg,
  type RemoteDomainEventCallbackDeviceAddedMsg,
  type RemoteDomainEventCallbackDeviceRemovedMsg,
  type RemoteDomainEventCallbackLifecycleMsg,
  type RemoteDomainEventCallbackMetadataChangeMsg,
  type RemoteDomainEventCallbackRebootMsg,
  type RemoteNonnullDomain,
} from "../codecs/generated/remote.ts";
import type { MessageDescriptor, ProcedureDescriptor } from "../xdr/index.ts";
import { AsyncQueue } from "../util/async-queue.ts";
import { displayUri } from "../util/display-uri.ts";
import { DEFAULT_MAX_IN_FLIGHT, RpcConnection, type CallObserver, type CallOptions, type ConnectionOptions } from "./connection.ts";
import { ConnectError, ConnectionClosedError, LibvirtError } from "./errors.ts";
import type { LibvirtStream } from "./stream.ts";
import { parseLibvirtUri, type LibvirtTarget } from "./uri.ts";
import { oncePerMessage } from "./warnings.ts";

/** libvirt's version numbers (major * 1,000,000 + minor * 1,000 + micro) as "9.0.0". */
export function formatVersion(v: bigint): string {
  const n = Number(v);
  return `${Math.floor(n / 1_000_000)}.${Math.floor((n % 1_000_000) / 1000)}.${n % 1000}`;
}

/** CONNECT_SUPPORTS_FEATURE numbers (virDrvFeature). */
export const Feature = { FD_PASSING: 8, TYPED_PARAM_STRING: 9, PROGRAM_KEEPALIVE: 10, REMOTE_EVENT_CALLBACK: 14, REMOTE_CLOSE_CALLBACK: 15 } as const;
const AUTH_NONE = 0;
const AUTH_SASL = 1;
const AUTH_POLKIT = 2;
const CONNECT_RO = 1;

export interface LibvirtClientOptions {
  connectTimeoutMs?: number;
  /** Deadline of quick calls (lookups, XML, state), ms; default 60 s; 0 = none. */
  callTimeoutMs?: number;
  /**
   * Deadline of calls that hold a libvirtd worker for long (domain start, volume creation:
   * WORKER_HOLDING_PROCEDURES), ms; default 0 = none while keepalive answers (deadline-policy.ts).
   */
  slowCallTimeoutMs?: number;
  /** Ping after this long without traffic, ms; default 5 s; 0 = no keepalive of our own. */
  keepaliveIntervalMs?: number;
  /** Declare the daemon dead after interval × count without a packet; default 3. */
  keepaliveCount?: number;
  /** Calls sent and not yet answered, at most; the rest wait in a local backlog (default 8, connection.ts). */
  maxInFlight?: number;
  /**
   * After each call and reply, while two or more calls are outstanding, keep the event loop
   * polling this long instead of sleeping (see busy-poll.ts); 0 disables. Default 0: with
   * 8 callers it brings our CPU per call up to libvirt's C client's (docs/benchmarks.md).
   */
  busyPollUs?: number;
  readonly?: boolean;
  /** Background reconnection after an unexpected drop. */
  reconnect?: { initialDelayMs?: number; maxDelayMs?: number } | false;
  onCallComplete?: CallObserver;
  /**
   * Security warnings (qemu+tcp to another host, no_verify=1), each distinct one once per
   * client (once per pool for a LibvirtPool); route them to the logger.
   */
  onWarning?: (message: string) => void;
}

export type ClientState = "open" | "reconnecting" | "closed";

/** Domain event IDs (virDomainEventID) with the message each one delivers. */
export interface DomainEventMap {
  0: RemoteDomainEventCallbackLifecycleMsg;
  1: RemoteDomainEventCallbackRebootMsg;
  15: RemoteDomainEventCallbackDeviceRemovedMsg;
  18: RemoteDomainEventCallbackAgentLifecycleMsg;
  19: RemoteDomainEventCallbackDeviceAddedMsg;
  23: RemoteDomainEventCallbackMetadataChangeMsg;
}
export type DomainEventId = keyof DomainEventMap;
export const DomainEventId = { LIFECYCLE: 0, REBOOT: 1, DEVICE_REMOVED: 15, AGENT_LIFECYCLE: 18, DEVICE_ADDED: 19, METADATA_CHANGE: 23 } as const;

const DOMAIN_EVENT_MESSAGES: { [K in DomainEventId]: MessageDescriptor<DomainEventMap[K]> } = {
  0: remoteMessages.domainEventCallbackLifecycle,
  1: remoteMessages.domainEventCallbackReboot,
  15: remoteMessages.domainEventCallbackDeviceRemoved,
  18: remoteMessages.domainEventCallbackAgentLifecycle,
  19: remoteMessages.domainEventCallbackDeviceAdded,
  23: remoteMessages.domainEventCallbackMetadataChange,
};

/** A flattened lifecycle event. `event`/`detail` are virDomainEventType and its detail enum. */
export interface DomainLifecycleEvent {
  domain: RemoteNonnullDomain;
  event: number;
  detail: number;
}

interface Subscription {
  eventId: DomainEventId;
  domain: RemoteNonnullDomain | null;
  queue: AsyncQueue<unknown>;
  /** callbackID on the current session; null until registered. */
  callbackId: number | null;
  closed: boolean;
}

export interface HypervisorInfo {
  libVersion: bigint;
  hvVersion: bigint;
  hvType: string;
  uri: string;
}

export class LibvirtClient {
  readonly target: LibvirtTarget;
  private readonly connOpts: ConnectionOptions;
  private conn: RpcConnection | null = null;
  private connecting: Promise<RpcConnection> | null = null;
  private lastConnectError: Error | null = null;
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  private reconnectDelay: number;
  private stateValue: ClientState = "reconnecting";
  private readonly subscriptions = new Set<Subscription>();
  /**
   * Registrations sent and not yet answered, and the events that arrived for callback IDs
   * nobody holds yet meanwhile: libvirtd may emit an event for a new callback before its
   * REGISTER reply, and those are handed over once the reply names the ID.
   */
  private registering = 0;
  private early: { eventId: DomainEventId; msg: { callbackID: number } }[] = [];
  private readonly listeners = { connect: [] as (() => void)[], disconnect: [] as ((e: Error) => void)[] };
  /** Sessions opened so far (1 = first connect; more = reconnects). */
  sessions = 0;
  /** Whether the daemon supports per-callback domain events (probed on connect). */
  eventCallbacks = false;

  private constructor(
    uri: string,
    private readonly opts: LibvirtClientOptions,
  ) {
    this.target = parseLibvirtUri(uri);
    this.connOpts = {
      connectTimeoutMs: opts.connectTimeoutMs ?? 10_000,
      callTimeoutMs: opts.callTimeoutMs ?? 60_000,
      slowCallTimeoutMs: opts.slowCallTimeoutMs ?? 0,
      keepaliveIntervalMs: opts.keepaliveIntervalMs ?? 5_000,
      keepaliveCount: opts.keepaliveCount ?? 3,
      maxInFlight: opts.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT,
      busyPollUs: opts.busyPollUs ?? 0,
      onCallComplete: opts.onCallComplete,
      onWarning: oncePerMessage(opts.onWarning),
    };
    this.reconnectDelay = this.initialDelay;
  }

  /** Connects, authenticates and opens the driver named by the URI. */
  static async connect(uri: string, opts: LibvirtClientOptions = {}): Promise<LibvirtClient> {
    const client = new LibvirtClient(uri, opts);
    await client.ensureConnection();
    return client;
  }

  get state(): ClientState {
    return this.stateValue;
  }

  get uri(): string {
    return this.target.uri;
  }

  /** Calls sent or queued and not yet answered on the current session. */
  get inFlight(): number {
    return this.conn && !this.conn.closed ? this.conn.inFlight : 0;
  }

  on(event: "connect", listener: () => void): void;
  on(event: "disconnect", listener: (e: Error) => void): void;
  on(event: "connect" | "disconnect", listener: (() => void) | ((e: Error) => void)): void {
    (this.listeners[event] as unknown[]).push(listener);
  }

  private get initialDelay(): number {
    return this.opts.reconnect === false ? 0 : (this.opts.reconnect?.initialDelayMs ?? 100);
  }

  private get maxDelay(): number {
    return this.opts.reconnect === false ? 0 : (this.opts.reconnect?.maxDelayMs ?? 2_000);
  }

  /** Calls a procedure; see CallOptions for deadlines and cancellation. */
  call<A, R>(desc: ProcedureDescriptor<A, R>, args: A, opts?: CallOptions): Promise<R> {
    // Open session: straight through, no extra promise per call (this is the hot path).
    const conn = this.conn;
    if (conn && !conn.closed && this.stateValue !== "closed") return conn.call(desc, args, opts);
    return this.ensureConnection().then((c) => c.call(desc, args, opts));
  }

  /** Calls a stream-opening procedure (console, upload, download) and returns the stream. */
  async openStream<A>(desc: ProcedureDescriptor<A, void>, args: A, opts?: CallOptions): Promise<LibvirtStream> {
    const conn = await this.ensureConnection();
    return conn.openStream(desc, args, opts);
  }

  /** Hypervisor and library versions, driver type and canonical URI. */
  async info(opts?: CallOptions): Promise<HypervisorInfo> {
    const [lib, hv, type, uri] = await Promise.all([
      this.call(remoteProcedures.connectGetLibVersion, undefined, opts),
      this.call(remoteProcedures.connectGetVersion, undefined, opts),
      this.call(remoteProcedures.connectGetType, undefined, opts),
      this.call(remoteProcedures.connectGetUri, undefined, opts),
    ]);
    return { libVersion: lib.lib_ver, hvVersion: hv.hv_ver, hvType: type.type, uri: uri.uri };
  }

  /**
   * Subscribes to one domain event type, for every domain or one. Iterate the result with
   * `for await`; `return()` (or breaking out of the loop) deregisters it.
   */
  async subscribeDomainEvents<K extends DomainEventId>(
    eventId: K,
    opts: { domain?: RemoteNonnullDomain; capacity?: number } = {},
  ): Promise<AsyncQueue<DomainEventMap[K]>> {
    const sub: Subscription = {
      eventId,
      domain: opts.domain ?? null,
      queue: new AsyncQueue<unknown>(opts.capacity ?? 10_000, () => void this.unsubscribe(sub)),
      callbackId: null,
      closed: false,
    };
    const conn = await this.ensureConnection();
    this.subscriptions.add(sub);
    try {
      await this.register(conn, sub);
    } catch (e) {
      this.subscriptions.delete(sub);
      throw e;
    }
    return sub.queue as AsyncQueue<DomainEventMap[K]>;
  }

  /** Lifecycle events (defined, started, stopped, …) flattened for convenience. */
  async lifecycleEvents(opts: { domain?: RemoteNonnullDomain; capacity?: number } = {}): Promise<AsyncIterableIterator<DomainLifecycleEvent>> {
    const raw = await this.subscribeDomainEvents(DomainEventId.LIFECYCLE, opts);
    const it: AsyncIterableIterator<DomainLifecycleEvent> = {
      next: async () => {
        const r = await raw.next();
        if (r.done) return { value: undefined, done: true };
        return { value: { domain: r.value.msg.dom, event: r.value.msg.event, detail: r.value.msg.detail }, done: false };
      },
      return: async () => {
        await raw.return();
        return { value: undefined, done: true };
      },
      [Symbol.asyncIterator]: () => it,
    };
    return it;
  }

  private async register(conn: RpcConnection, sub: Subscription): Promise<void> {
    const args: RemoteConnectDomainEventCallbackRegisterAnyArgs = { eventID: sub.eventId, dom: sub.domain };
    this.registering++;
    try {
      const ret = await conn.call(remoteProcedures.connectDomainEventCallbackRegisterAny, args);
      if (conn !== this.conn) return; // the session went away meanwhile; re-registered on the next
      sub.callbackId = ret.callbackID;
      const mine = this.early.filter((e) => e.eventId === sub.eventId && e.msg.callbackID === ret.callbackID);
      if (mine.length > 0) this.early = this.early.filter((e) => !mine.includes(e));
      for (const e of mine) sub.queue.push(e.msg);
    } finally {
      if (--this.registering === 0) this.early = [];
    }
  }

  private async unsubscribe(sub: Subscription): Promise<void> {
    if (sub.closed) return;
    sub.closed = true;
    this.subscriptions.delete(sub);
    const id = sub.callbackId;
    sub.callbackId = null;
    if (id === null || !this.conn || this.conn.closed) return;
    try {
      await this.conn.call(remoteProcedures.connectDomainEventCallbackDeregisterAny, { callbackID: id });
    } catch {
      // The session may be gone; the daemon forgets callbacks with it.
    }
  }

  private routeEvent(eventId: DomainEventId, msg: { callbackID: number }): void {
    for (const sub of this.subscriptions) {
      if (sub.eventId === eventId && sub.callbackId === msg.callbackID) {
        sub.queue.push(msg);
        return;
      }
    }
    // Possibly for a registration still waiting for its reply (bounded: a few per callback).
    if (this.registering > 0 && this.early.length < 1_000) this.early.push({ eventId, msg });
  }

  /** Returns the open session, waiting for a connect attempt in flight if there is one. */
  private ensureConnection(): Promise<RpcConnection> {
    if (this.stateValue === "closed") return Promise.reject(new ConnectError("the libvirt client was closed", this.uri));
    if (this.conn && !this.conn.closed) return Promise.resolve(this.conn);
    if (this.connecting) return this.connecting;
    if (this.reconnectTimer && this.lastConnectError) {
      // Between background attempts: fail fast with what we know.
      return Promise.reject(
        new ConnectError(`libvirtd at ${displayUri(this.uri)} is unreachable (${this.lastConnectError.message}); retrying in the background`, this.uri, {
          cause: this.lastConnectError,
        }),
      );
    }
    return this.attempt();
  }

  private attempt(): Promise<RpcConnection> {
    const p = this.openSession().then(
      (conn) => {
        this.connecting = null;
        this.lastConnectError = null;
        this.reconnectDelay = this.initialDelay;
        if (this.reconnectTimer) {
          clearTimeout(this.reconnectTimer);
          this.reconnectTimer = null;
        }
        return conn;
      },
      (e: Error) => {
        this.connecting = null;
        this.lastConnectError = e;
        if (this.sessions > 0) this.scheduleReconnect();
        throw e;
      },
    );
    this.connecting = p;
    return p;
  }

  private async openSession(): Promise<RpcConnection> {
    const conn = await RpcConnection.open(this.target, this.connOpts);
    try {
      const auth = await conn.call(remoteProcedures.authList, undefined);
      if (!auth.types.includes(AUTH_NONE) && auth.types.length > 0) {
        if (auth.types.includes(AUTH_POLKIT)) {
          await conn.call(remoteProcedures.authPolkit, undefined);
        } else if (auth.types.includes(AUTH_SASL)) {
          throw new ConnectError(
            `libvirtd at ${displayUri(this.uri)} requires SASL authentication, which rcloud does not speak; ` +
              `use the local unix socket as root, or set auth_tcp = "none" on a trusted network`,
            this.uri,
          );
        }
      }
      // Asking for keepalive makes the daemon ping us, so it also detects us dying.
      await conn.call(remoteProcedures.connectSupportsFeature, { feature: Feature.PROGRAM_KEEPALIVE, flags: 0 });
      await conn.call(remoteProcedures.connectOpen, { name: this.target.name, flags: this.opts.readonly ? CONNECT_RO : 0 });
      // Per-callback events are what we register; every libvirt since 1.2.1 has them.
      const cb = await conn.call(remoteProcedures.connectSupportsFeature, { feature: Feature.REMOTE_EVENT_CALLBACK, flags: 0 });
      this.eventCallbacks = cb.supported === 1;
    } catch (e) {
      conn.close();
      if (e instanceof ConnectError) throw e;
      if (e instanceof LibvirtError) {
        throw new ConnectError(`libvirtd at ${displayUri(this.uri)} refused the connection: ${e.message}`, this.uri, { cause: e });
      }
      throw new ConnectError(`could not open ${displayUri(this.uri)}: ${(e as Error).message}`, this.uri, { cause: e });
    }

    for (const [id, desc] of Object.entries(DOMAIN_EVENT_MESSAGES)) {
      const eventId = Number(id) as DomainEventId;
      conn.onMessage(desc as MessageDescriptor<{ callbackID: number }>, (msg) => this.routeEvent(eventId, msg));
    }
    conn.onClose((e) => this.lost(conn, e));
    this.conn = conn;
    this.sessions++;
    this.stateValue = "open";

    // Put event subscriptions back on the new session.
    for (const sub of this.subscriptions) {
      sub.callbackId = null;
      try {
        await this.register(conn, sub);
      } catch (e) {
        sub.queue.end(e);
        this.subscriptions.delete(sub);
      }
    }
    for (const l of this.listeners.connect) l();
    return conn;
  }

  private lost(conn: RpcConnection, e: ConnectionClosedError): void {
    if (this.conn !== conn) return;
    this.conn = null;
    this.early = []; // callback IDs belong to the lost session
    for (const sub of this.subscriptions) sub.callbackId = null;
    if (this.stateValue === "closed") return;
    for (const l of this.listeners.disconnect) l(e);
    if (this.opts.reconnect === false) {
      this.stateValue = "closed";
      for (const sub of this.subscriptions) sub.queue.end(e);
      this.subscriptions.clear();
      return;
    }
    this.stateValue = "reconnecting";
    this.lastConnectError = e;
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.reconnectTimer || this.stateValue === "closed" || this.opts.reconnect === false) return;
    const delay = this.reconnectDelay;
    this.reconnectDelay = Math.min(Math.max(delay * 2, 1), this.maxDelay);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      if (this.stateValue === "closed" || (this.conn && !this.conn.closed) || this.connecting) return;
      this.attempt().catch(() => {
        // attempt() already scheduled the next try
      });
    }, delay);
  }

  /** Closes the connection (CONNECT_CLOSE, then the socket) and stops reconnecting. */
  async close(): Promise<void> {
    if (this.stateValue === "closed") return;
    this.stateValue = "closed";
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    for (const sub of this.subscriptions) sub.queue.end();
    this.subscriptions.clear();
    const conn = this.conn;
    this.conn = null;
    if (conn && !conn.closed) {
      try {
        await conn.call(remoteProcedures.connectClose, undefined, { timeoutMs: 2_000 });
      } catch {
        // closing anyway
      }
      conn.close();
    }
  }
}
