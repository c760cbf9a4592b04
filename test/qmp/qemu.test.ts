/**
 * QmpClient against a real qemu-system-x86_64 (TCG, no devices, no network, paused with -S).
 */
import { afterAll, describe, expect, test } from "bun:test";
import type { Subprocess } from "bun";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { QmpClient, QmpClosedError, QmpError, waitForEvent } from "../../src/qmp/index.ts";

const dir = mkdtempSync(join(tmpdir(), "rcloud-qmp-qemu-"));
const started: { proc: Subprocess; pid: number }[] = [];
const clients: QmpClient[] = [];

afterAll(async () => {
  for (const c of clients) c.close();
  for (const q of started) {
    if (q.proc.exitCode === null && q.proc.signalCode === null) {
      try {
        process.kill(q.pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    await q.proc.exited;
  }
  rmSync(dir, { recursive: true, force: true });
});

interface Qemu {
  proc: Subprocess<"ignore", "ignore", "pipe">;
  pid: number;
  socket: string;
}

async function startQemu(name: string): Promise<Qemu> {
  const socket = join(dir, `${name}.qmp`);
  const pidfile = join(dir, `${name}.pid`);
  // prettier-ignore
  const args = [
    "qemu-system-x86_64",
    "-accel", "tcg",
    "-machine", "q35",
    "-m", "64",
    "-nodefaults",
    "-nic", "none", // never a network
    "-nographic",
    "-display", "none",
    "-S",
    "-qmp", `unix:${socket},server=on,wait=off`,
    "-pidfile", pidfile,
  ];
  const proc = Bun.spawn(args, { stdin: "ignore", stdout: "ignore", stderr: "pipe" });
  started.push({ proc, pid: proc.pid });
  const deadline = Date.now() + 15_000;
  while (!(existsSync(socket) && existsSync(pidfile) && readFileSync(pidfile, "utf8").trim() !== "")) {
    if (proc.exitCode !== null) throw new Error(`qemu exited with ${proc.exitCode}: ${await new Response(proc.stderr).text()}`);
    if (Date.now() > deadline) throw new Error("qemu did not create its QMP socket within 15 s");
    await Bun.sleep(20);
  }
  expect(Number(readFileSync(pidfile, "utf8").trim())).toBe(proc.pid); // no shell in between
  return { proc, pid: proc.pid, socket };
}

describe("real QEMU", () => {
  test("lifecycle over QMP: status, cont/stop/reset events, errors, quit", async () => {
    const q = await startQemu("life");
    const client = await QmpClient.connect(q.socket);
    clients.push(client);
    expect(client.version.major).toBe(7);
    expect(client.version.minor).toBeGreaterThanOrEqual(0);
    expect(typeof client.version.package).toBe("string");

    expect(await client.execute("query-status")).toMatchObject({ status: "prelaunch", running: false });

    const resumed = waitForEvent(client, "RESUME", 10_000);
    expect(await client.execute("cont")).toEqual({});
    await resumed;
    expect(await client.execute("query-status")).toMatchObject({ status: "running", running: true });

    const stopped = waitForEvent(client, "STOP", 10_000);
    await client.execute("stop");
    await stopped;
    expect(await client.execute("query-status")).toMatchObject({ status: "paused", running: false });

    const reset = waitForEvent(client, "RESET", 10_000);
    await client.execute("system_reset");
    const ev = await reset;
    expect(await client.execute("query-status")).toMatchObject({ running: false }); // QEMU 7.2 reports "prelaunch" again
    expect(ev.data["guest"]).toBe(false);
    expect(ev.timestamp.seconds).toBeGreaterThan(0);

    const commands = await client.execute<{ name: string }[]>("query-commands");
    expect(commands.map((c) => c.name)).toContain("query-status");

    const e = await client.execute("no-such-command").catch((x: unknown) => x);
    expect(e).toBeInstanceOf(QmpError);
    expect((e as QmpError).errorClass).toBe("CommandNotFound");
    expect((e as QmpError).command).toBe("no-such-command");

    // Several commands in flight at once.
    const many = await Promise.all(Array.from({ length: 20 }, () => client.execute<{ status: string }>("query-status")));
    expect(new Set(many.map((s) => s.status)).size).toBe(1);
    expect(client.inFlight).toBe(0);

    const closed = new Promise<Error | null>((r) => client.onClose(r));
    const shutdown = waitForEvent(client, "SHUTDOWN", 10_000);
    // QEMU may close the socket right after (or instead of) sending the reply.
    const quit = await client.execute("quit").catch((x: unknown) => x);
    if (quit !== undefined && !(quit instanceof QmpClosedError)) expect(quit).toEqual({});
    const sd = await shutdown;
    expect(sd.data["reason"]).toBe("host-qmp-quit");
    expect(await closed).toBeInstanceOf(QmpClosedError);
    expect(client.closed).toBe(true);
    expect(await q.proc.exited).toBe(0);
    expect(await client.execute("query-status").catch((x: unknown) => x)).toBeInstanceOf(QmpClosedError);
  }, 60_000);

  test("QEMU killed with SIGKILL: commands fail fast with QmpClosedError", async () => {
    const q = await startQemu("killed");
    const client = await QmpClient.connect(q.socket);
    clients.push(client);
    expect(await client.execute("query-status")).toMatchObject({ running: false });
    const closed = new Promise<Error | null>((r) => client.onClose(r));

    const killedAt = Date.now();
    const inFlight = client.execute("query-status").catch((x: unknown) => x);
    process.kill(q.pid, "SIGKILL");
    const after = await client.execute("query-status").catch((x: unknown) => x);
    expect(after).toBeInstanceOf(QmpClosedError);
    expect(Date.now() - killedAt).toBeLessThan(2_000);
    // The one sent before the kill was either answered or failed the same way.
    const first = await inFlight;
    if (!(first instanceof QmpClosedError)) expect(first).toMatchObject({ running: false });
    expect(await closed).toBeInstanceOf(QmpClosedError);
    expect(client.closed).toBe(true);
    expect(await q.proc.exited).not.toBe(0);
    expect(q.proc.signalCode).toBe("SIGKILL");
  }, 60_000);
});
