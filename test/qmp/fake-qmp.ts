/**
 * A scriptable fake QMP peer on a unix socket, for driving QmpClient through situations a
 * real QEMU rarely produces: reordered replies, garbage, abrupt closes, silence.
 */
import type { Socket, UnixSocketListener } from "bun";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const GREETING = {
  QMP: { version: { qemu: { micro: 22, minor: 2, major: 7 }, package: "Debian 1:7.2+dfsg-7+deb12u18+b3" }, capabilities: ["oob"] },
};

export interface FakeCommand {
  execute: string;
  arguments?: Record<string, unknown>;
  id?: unknown;
}

export class FakeConnection {
  readonly commands: FakeCommand[] = [];
  /** Lines from the client that were not JSON commands. */
  readonly badInput: string[] = [];
  closed = false;
  private queue: Uint8Array[] = [];
  private inbuf = "";
  private commandWaiters: (() => void)[] = [];

  constructor(private readonly socket: Socket<undefined>) {}

  /** Sends a message (JSON-encoded) followed by "\r\n", like QEMU. */
  send(msg: unknown): void {
    this.raw(JSON.stringify(msg) + "\r\n");
  }

  /** Sends bytes exactly as given. */
  raw(bytes: string | Uint8Array): void {
    if (this.closed) return;
    this.queue.push(typeof bytes === "string" ? new TextEncoder().encode(bytes) : bytes);
    this.flush();
  }

  reply(id: unknown, ret: unknown): void {
    this.send({ return: ret, id });
  }

  event(name: string, data?: Record<string, unknown>): void {
    const msg: Record<string, unknown> = { timestamp: { seconds: 1_700_000_000, microseconds: 1234 }, event: name };
    if (data) msg["data"] = data;
    this.send(msg);
  }

  flush(): void {
    while (this.queue.length > 0 && !this.closed) {
      const chunk = this.queue[0]!;
      const n = this.socket.write(chunk);
      if (n < 0) return;
      if (n < chunk.byteLength) {
        this.queue[0] = chunk.subarray(n);
        return;
      }
      this.queue.shift();
    }
  }

  /** Bytes not yet accepted by the kernel. */
  get backlog(): number {
    return this.queue.reduce((n, q) => n + q.byteLength, 0);
  }

  /** Graceful close (FIN). */
  end(): void {
    if (this.closed) return;
    this.closed = true;
    this.socket.end();
  }

  /** Abrupt close. */
  terminate(): void {
    if (this.closed) return;
    this.closed = true;
    this.socket.terminate();
  }

  /** Resolves once at least `n` commands (qmp_capabilities included) have arrived. */
  async waitForCommands(n: number, timeoutMs = 5_000): Promise<FakeCommand[]> {
    const deadline = Date.now() + timeoutMs;
    while (this.commands.length < n) {
      if (Date.now() > deadline) throw new Error(`fake peer: expected ${n} commands, got ${this.commands.length}`);
      await new Promise<void>((r) => {
        this.commandWaiters.push(r);
        setTimeout(r, 50);
      });
    }
    return this.commands;
  }

  /** @internal */
  onData(chunk: Uint8Array, handle: (cmd: FakeCommand, conn: FakeConnection) => void): void {
    this.inbuf += new TextDecoder().decode(chunk);
    let nl: number;
    while ((nl = this.inbuf.indexOf("\n")) >= 0) {
      const line = this.inbuf.slice(0, nl);
      this.inbuf = this.inbuf.slice(nl + 1);
      let cmd: FakeCommand;
      try {
        cmd = JSON.parse(line) as FakeCommand;
      } catch {
        this.badInput.push(line);
        continue;
      }
      this.commands.push(cmd);
      for (const w of this.commandWaiters.splice(0)) w();
      handle(cmd, this);
    }
  }
}

export interface FakeQmpOptions {
  /** Raw first line; null sends none. Default: a QEMU 7.2 greeting. */
  greeting?: string | null;
  /** Called for each command except qmp_capabilities (answered automatically). Default: `{return: {}}`. */
  onCommand?: (cmd: FakeCommand, conn: FakeConnection) => void;
  /** Also route qmp_capabilities to onCommand instead of answering it. */
  manualCapabilities?: boolean;
}

export class FakeQmp {
  readonly connections: FakeConnection[] = [];
  private connWaiters: ((c: FakeConnection) => void)[] = [];

  private constructor(
    readonly path: string,
    private readonly dir: string,
    private listener: UnixSocketListener<undefined> | null,
  ) {}

  static start(opts: FakeQmpOptions = {}): FakeQmp {
    const dir = mkdtempSync(join(tmpdir(), "rcloud-qmp-"));
    const path = join(dir, "qmp.sock");
    const conns = new Map<Socket<undefined>, FakeConnection>();
    const greeting = opts.greeting === undefined ? JSON.stringify(GREETING) + "\r\n" : opts.greeting;
    const handle = (cmd: FakeCommand, conn: FakeConnection) => {
      if (cmd.execute === "qmp_capabilities" && !opts.manualCapabilities) conn.reply(cmd.id, {});
      else if (opts.onCommand) opts.onCommand(cmd, conn);
      else conn.reply(cmd.id, {});
    };
    // eslint-disable-next-line prefer-const
    let fake: FakeQmp;
    const listener = Bun.listen<undefined>({
      unix: path,
      socket: {
        open(socket) {
          const conn = new FakeConnection(socket);
          conns.set(socket, conn);
          fake.connections.push(conn);
          if (greeting !== null) conn.raw(greeting);
          for (const w of fake.connWaiters.splice(0)) w(conn);
        },
        data(socket, data) {
          conns.get(socket)?.onData(data, handle);
        },
        drain(socket) {
          conns.get(socket)?.flush();
        },
        close(socket) {
          const c = conns.get(socket);
          if (c) c.closed = true;
          conns.delete(socket);
        },
        error(socket) {
          const c = conns.get(socket);
          if (c) c.closed = true;
        },
      },
    });
    fake = new FakeQmp(path, dir, listener);
    return fake;
  }

  /** The newest connection, waiting for one if there is none yet. */
  connection(): Promise<FakeConnection> {
    const last = this.connections.at(-1);
    if (last) return Promise.resolve(last);
    return new Promise((r) => this.connWaiters.push(r));
  }

  stop(): void {
    for (const c of this.connections) c.terminate();
    this.listener?.stop(true);
    this.listener = null;
    rmSync(this.dir, { recursive: true, force: true });
  }
}
