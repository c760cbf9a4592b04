/** Shared by the boot benchmarks: free ports, the SSH banner probe, medians. */

export function freePort(): number {
  const l = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const p = l.port;
  l.stop(true);
  return p;
}

/** One attempt: connect and wait briefly for the SSH banner (slirp accepts before the guest listens). */
export function banner(port: number, timeoutMs = 1500): Promise<boolean> {
  return new Promise((done) => {
    let settled = false;
    const finish = (ok: boolean, s?: { end(): void }) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      try {
        s?.end();
      } catch {
        // closed
      }
      done(ok);
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    Bun.connect({
      hostname: "127.0.0.1",
      port,
      socket: {
        data: (s, d) => finish(Buffer.from(d).toString("latin1").startsWith("SSH-"), s),
        close: () => finish(false),
        end: () => finish(false),
        error: () => finish(false),
        connectError: () => finish(false),
      },
    }).catch(() => finish(false));
  });
}

/** Seconds from `t0` (performance.now()) until the SSH banner shows on `port`. */
export async function waitSsh(port: number, t0: number, deadlineMs = 300_000): Promise<number> {
  while (performance.now() - t0 < deadlineMs) {
    if (await banner(port)) return (performance.now() - t0) / 1000;
    await Bun.sleep(50);
  }
  throw new Error(`no SSH banner on 127.0.0.1:${port} within ${deadlineMs} ms`);
}

export const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
export const r3 = (n: number) => Math.round(n * 1000) / 1000;
