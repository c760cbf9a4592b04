/**
 * The qemu driver's state lock (flock on <state_dir>/rcloud.lock) with real processes: two
 * rclouds starting at once, a holder killed with SIGKILL, a second driver in one process.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { DriverError } from "../../src/drivers/types.ts";
import { StateLock } from "../../src/drivers/qemu/lock.ts";

const lockModule = resolve(import.meta.dir, "../../src/drivers/qemu/lock.ts");
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
const stateDir = () => {
  const d = mkdtempSync(join(tmpdir(), "rcloud-lock-"));
  dirs.push(d);
  return d;
};

/** A child process that waits for `go` to exist, tries the lock, prints won/refused and holds what it got for `holdMs`. */
function contender(dir: string, go: string, holdMs: number) {
  const script = `
    const { StateLock } = await import(${JSON.stringify(lockModule)});
    while (!(await Bun.file(${JSON.stringify(go)}).exists())) await Bun.sleep(1);
    try { StateLock.acquire(${JSON.stringify(dir)}); console.log("won"); }
    catch (e) { console.log(e.code === "conflict" ? "refused" : "error " + e.message); }
    await Bun.sleep(${holdMs});`;
  return Bun.spawn([process.execPath, "-e", script], { stdout: "pipe", stderr: "inherit" });
}

describe("state lock", () => {
  test("of two rclouds starting at the same moment, exactly one gets the lock (20 rounds, half over a stale lock file)", async () => {
    const gone = Bun.spawn(["true"]);
    await gone.exited;
    for (let round = 0; round < 20; round++) {
      const dir = stateDir();
      const go = join(dir, "go");
      if (round % 2 === 1) await Bun.write(join(dir, "rcloud.lock"), `${gone.pid}\n`); // left by a dead rcloud
      const children = [contender(dir, go, 300), contender(dir, go, 300)];
      await Bun.sleep(150); // both are polling for the go file
      await Bun.write(go, "");
      const said = await Promise.all(children.map(async (c) => (await new Response(c.stdout).text()).trim()));
      expect(said.sort()).toEqual(["refused", "won"]);
    }
  }, 120_000);

  test("a holder killed with SIGKILL leaves no stale lock: the next one takes it at once", async () => {
    const dir = stateDir();
    const go = join(dir, "go");
    await Bun.write(go, "");
    const holder = contender(dir, go, 60_000);
    const reader = holder.stdout.getReader();
    expect(new TextDecoder().decode((await reader.read()).value).trim()).toBe("won");
    expect(() => StateLock.acquire(dir)).toThrow(/in use by another rcloud \(PID \d+/);
    holder.kill("SIGKILL");
    await holder.exited;
    const lock = StateLock.acquire(dir);
    try {
      expect(readFileSync(join(dir, "rcloud.lock"), "utf8").trim()).toBe(String(process.pid));
      expect(lock.held()).toBe(true);
    } finally {
      lock.release();
    }
  });

  test("a second driver in the same process is refused; release removes the file and frees it", () => {
    const dir = stateDir();
    const first = StateLock.acquire(dir);
    let refusal: unknown = null;
    try {
      StateLock.acquire(dir);
    } catch (e) {
      refusal = e;
    }
    expect(refusal).toBeInstanceOf(DriverError);
    expect((refusal as DriverError).code).toBe("conflict");
    expect((refusal as DriverError).message).toContain(`(PID ${process.pid}, lock file ${join(dir, "rcloud.lock")})`);
    first.release();
    expect(first.held()).toBe(false);
    expect(existsSync(join(dir, "rcloud.lock"))).toBe(false);
    const second = StateLock.acquire(dir);
    expect(second.held()).toBe(true);
    second.release();
  });
});
