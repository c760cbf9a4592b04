/**
 * qemu+ssh://: the system `ssh` as a child process (command line: ssh-command.ts); its stdin
 * and stdout carry the RPC stream. The transport is open once ssh says the session is up
 * (within the connect timeout); when ssh fails, what it printed on stderr ("Host key
 * verification failed.", "Permission denied (publickey).") becomes the error, with the host.
 * Closing the transport ends ssh's stdin and kills the child by its PID.
 */
import type { FileSink, Subprocess } from "bun";
import { DrainWaiters } from "./drain-waiters.ts";
import { ConnectError } from "./errors.ts";
import { SESSION_UP_MARKER, sshCommand } from "./ssh-command.ts";
import { registerTransport, type Transport, type TransportHandlers, type TransportOptions } from "./transport.ts";
import { UriError, type LibvirtTarget } from "./uri.ts";

/** Bytes of ssh's stderr kept for the error message (the end is what matters). */
const STDERR_KEEP = 4096;
/** How long to wait for ssh to exit after its stdout closed, for its status and last words. */
const EXIT_GRACE_MS = 2_000;
/** Coalesce queued writes up to this size into one pipe write. */
const COALESCE_MAX = 256 * 1024;

type SshProcess = Subprocess<"pipe", "pipe", "pipe">;

class SshTransport implements Transport {
  private queue: Uint8Array[] = [];
  private queued = 0;
  /** A write to the pipe is waiting for the child to read (FileSink.flush returned a promise). */
  private writing = false;
  private pumpScheduled = false;
  private state: "starting" | "open" | "closed" = "starting";
  private readonly waiters = new DrainWaiters();
  private stderrTail = "";
  /** Set while reading is paused (read backpressure): stdout is not read until it resolves. */
  private paused: { until: Promise<void>; resume: () => void } | null = null;
  private sessionUp!: () => void;
  private startFailed!: (e: Error) => void;
  /** Settles when ssh reports the session up, or fails before that. */
  readonly started: Promise<void>;

  constructor(
    readonly description: string,
    private readonly proc: SshProcess,
    private readonly handlers: TransportHandlers,
  ) {
    this.started = new Promise<void>((resolve, reject) => {
      this.sessionUp = resolve;
      this.startFailed = reject;
    });
    void this.readStdout();
    void this.readStderr();
  }

  get buffered(): number {
    return this.queued;
  }

  write(bytes: Uint8Array): void {
    if (this.state === "closed") return;
    this.queue.push(bytes);
    this.queued += bytes.byteLength;
    if (!this.pumpScheduled && !this.writing) {
      this.pumpScheduled = true;
      queueMicrotask(() => {
        this.pumpScheduled = false;
        this.pump();
      });
    }
  }

  /** Hands queued bytes to the pipe, one pending flush at a time (that is the backpressure). */
  private pump(): void {
    const sink: FileSink = this.proc.stdin;
    while (this.state !== "closed" && !this.writing && this.queue.length > 0) {
      let chunk: Uint8Array;
      if (this.queue.length > 1 && this.queued <= COALESCE_MAX) {
        chunk = new Uint8Array(this.queued);
        let off = 0;
        for (const q of this.queue) {
          chunk.set(q, off);
          off += q.byteLength;
        }
        this.queue = [];
      } else {
        chunk = this.queue.shift()!;
      }
      let pending: Promise<unknown> | null = null;
      try {
        // Bun's FileSink answers a promise when the pipe is full.
        const written = sink.write(chunk) as number | Promise<number>;
        const flushed = sink.flush() as number | Promise<number>;
        if (written instanceof Promise) pending = written;
        if (flushed instanceof Promise) pending = pending ? Promise.all([pending, flushed]) : flushed;
      } catch (e) {
        this.finish(new Error(`writing to ${this.description} failed: ${(e as Error).message}`));
        return;
      }
      if (pending) {
        this.writing = true;
        pending.then(
          () => {
            this.writing = false;
            this.queued -= chunk.byteLength;
            this.notifyWaiters();
            this.pump();
          },
          (e: Error) => this.finish(new Error(`writing to ${this.description} failed: ${e.message}`)),
        );
        return;
      }
      this.queued -= chunk.byteLength;
    }
    this.notifyWaiters();
  }

  private notifyWaiters(): void {
    this.waiters.notify(this.queued);
  }

  drained(threshold = 0): Promise<void> {
    if (this.queued <= threshold || this.state === "closed") return Promise.resolve();
    return this.waiters.wait(threshold);
  }

  private async readStdout(): Promise<void> {
    try {
      for await (const chunk of this.proc.stdout) {
        if (this.state === "closed") return;
        this.handlers.onData(chunk);
        // Unread, the pipe fills and ssh stops reading the network: the daemon waits.
        if (this.paused) await this.paused.until;
      }
    } catch (e) {
      this.finish(new Error(`reading from ${this.description} failed: ${(e as Error).message}`));
      return;
    }
    if (this.state === "closed") return;
    // stdout is done: ssh is exiting. Its status and stderr say whether this was a failure.
    const exitCode = await Promise.race([this.proc.exited, Bun.sleep(EXIT_GRACE_MS).then(() => null)]);
    const said = this.stderrTail.trim();
    // Once open, the connection's message names the transport already.
    const who = this.state === "starting" ? `${this.description}: ` : "";
    if (exitCode === 0 && said === "" && this.state === "open") this.finish(null);
    else this.finish(new Error(said ? `${who}${said}` : `${who}ssh exited with status ${exitCode ?? "unknown"}`));
  }

  private async readStderr(): Promise<void> {
    const decoder = new TextDecoder();
    try {
      for await (const chunk of this.proc.stderr) {
        this.stderrTail = (this.stderrTail + decoder.decode(chunk, { stream: true })).slice(-STDERR_KEEP);
        if (this.state === "starting" && this.stderrTail.includes(SESSION_UP_MARKER)) {
          this.stderrTail = this.stderrTail.replace(`${SESSION_UP_MARKER}\n`, "").replace(SESSION_UP_MARKER, "");
          this.state = "open";
          this.sessionUp();
        }
      }
    } catch {
      // stderr is only for messages
    }
  }

  pause(): void {
    if (this.paused) return;
    let resume!: () => void;
    const until = new Promise<void>((r) => (resume = r));
    this.paused = { until, resume };
  }

  resume(): void {
    const p = this.paused;
    this.paused = null;
    p?.resume();
  }

  close(): void {
    this.finish(null);
  }

  /** Gives up before the session is up (connect timeout). */
  abandon(error: Error): void {
    this.finish(error);
  }

  /** Reports the end once (to the connection, or to whoever waits for the start), releases waiters, ends the child. */
  private finish(error: Error | null): void {
    if (this.state === "closed") return;
    const wasStarting = this.state === "starting";
    this.state = "closed";
    this.resume();
    this.queue = [];
    this.queued = 0;
    this.waiters.release();
    try {
      // end() may throw, or return a promise that rejects: the pipe may already be closed.
      Promise.resolve(this.proc.stdin.end()).catch(() => {});
    } catch {
      // the pipe may already be closed
    }
    // By PID, and only while it is ours to kill (Bun reaps it and sets exitCode then).
    if (this.proc.exitCode === null && this.proc.signalCode === null) {
      try {
        process.kill(this.proc.pid, "SIGTERM");
      } catch {
        // exited meanwhile
      }
    }
    if (wasStarting) this.startFailed(error ?? new Error(`${this.description} closed before the session was up`));
    else this.handlers.onClose(error);
  }
}

async function sshFactory(target: LibvirtTarget, handlers: TransportHandlers, connectTimeoutMs: number, options: TransportOptions): Promise<Transport> {
  let command;
  try {
    command = sshCommand(target, { connectTimeoutMs });
  } catch (e) {
    if (e instanceof UriError) throw new ConnectError(e.message, target.uri, { cause: e });
    throw e;
  }
  if (command.hostKeyUnchecked) {
    options.onWarning?.(`libvirt connection ${target.uri}: the SSH host key of ${command.destination} is not checked (no_verify=1)`);
  }
  let proc: SshProcess;
  try {
    // ssh runs LocalCommand with $SHELL; a service account's nologin must not be that shell.
    proc = Bun.spawn(command.argv, { stdin: "pipe", stdout: "pipe", stderr: "pipe", env: { ...process.env, SHELL: "/bin/sh" } });
  } catch (e) {
    throw new ConnectError(
      `cannot run '${command.argv[0]}' to reach libvirtd at ${command.destination}: ${(e as Error).message} (install openssh-client)`,
      target.uri,
      { cause: e },
    );
  }
  const transport = new SshTransport(`ssh ${command.destination}`, proc, handlers);
  const timer = setTimeout(
    () => transport.abandon(new Error(`timed out after ${connectTimeoutMs} ms connecting to libvirtd at ${command.destination} over ssh`)),
    connectTimeoutMs,
  );
  try {
    await transport.started;
  } catch (e) {
    throw new ConnectError((e as Error).message, target.uri, { cause: e });
  } finally {
    clearTimeout(timer);
  }
  return transport;
}

registerTransport("ssh", sshFactory);
