/**
 * The API fuzzer (bench/fuzz.ts) for a short round with a fixed seed against `rcloud serve` as
 * a child process on the rig's test driver: no 5xx, the process alive, /health answering,
 * RSS bounded. And one regression test for each 5xx a fuzz run found.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { runFuzz } from "../../bench/fuzz.ts";
import { spawnTestDriverServer, type ServerProcess } from "../helpers/serve-process.ts";

let server: ServerProcess;

beforeAll(async () => {
  server = await spawnTestDriverServer(`rctest-fuzz-${process.pid}`);
});

afterAll(async () => {
  await server?.stop();
});

async function call(method: string, path: string, token: string | null = server.token) {
  const res = await fetch(`${server.baseUrl}${path}`, { method, headers: token ? { authorization: `Bearer ${token}` } : {} });
  return { status: res.status, json: (await res.json().catch(() => null)) as { error?: { code: string; message: string } } | null };
}

describe("fuzz regressions", () => {
  test("console attach with a malformed escape in the VM reference: answered like any unknown VM (was 500, decodeURIComponent threw)", async () => {
    const known = await call("GET", "/api/v1/vms/rcloud-fuzz-a/console/attach?ticket=9007199254740993");
    expect(known.status).toBeLessThan(500);
    for (const ref of ["%", "%E0%A4%A", "%zz"]) {
      const r = await call("GET", `/api/v1/vms/${ref}/console/attach?ticket=9007199254740993`);
      expect({ ref, status: r.status, code: r.json?.error?.code }).toEqual({ ref, status: known.status, code: known.json?.error?.code });
    }
    expect((await call("GET", "/api/v1/health", null)).status).toBe(200);
  });

  test("a body nested 5,000 levels deep is 400 bad_request (validating it held the event loop ~8 s; libvirt keepalives lapsed → 503s)", async () => {
    let deep: unknown = "x";
    for (let i = 0; i < 5000; i++) deep = i % 2 ? [deep] : { a: deep };
    for (const [method, path, body] of [
      ["POST", "/api/v1/vms", deep],
      ["POST", "/api/v1/vms", { name: "rcloud-fuzz-deep", image: deep }],
      ["PATCH", "/api/v1/vms/rcloud-fuzz-deep", { memory_mb: deep }],
    ] as const) {
      const res = await fetch(`${server.baseUrl}${path}`, { method, headers: { authorization: `Bearer ${server.token}`, "content-type": "application/json" }, body: JSON.stringify(body) });
      const json = (await res.json()) as { error: { code: string; message: string } };
      expect({ status: res.status, code: json.error.code }).toEqual({ status: 400, code: "bad_request" });
      expect(json.error.message).toContain("deeper than 32 levels");
    }
    // Ordinary nesting still goes through to validation.
    const ok = await fetch(`${server.baseUrl}/api/v1/vms`, {
      method: "POST",
      headers: { authorization: `Bearer ${server.token}`, "content-type": "application/json" },
      body: JSON.stringify({ name: "rcloud-fuzz-deep", image: "no-such-image", network: { mode: "none" }, extra_disks: [{ size_gb: 1 }] }),
    });
    expect(((await ok.json()) as { error: { code: string } }).error.code).toBe("image_not_found");
  });
});

describe("API fuzz", () => {
  test(
    "2,000 random and hostile requests on every route: no 5xx, no crash, health throughout, RSS bounded",
    async () => {
      const r = await runFuzz({ baseUrl: server.baseUrl, token: server.token, requests: 2000, pid: server.pid, seed: 20261202 });
      expect(r.findings).toEqual([]);
      expect(r.fiveXx).toBe(0);
      expect(r.requests).toBe(2000);
      expect(server.alive()).toBe(true);
      // Bounded: 2,000 requests with bodies up to 300 kB each would leak far more than this.
      expect(r.maxRssMb).toBeGreaterThan(0);
      expect(r.maxRssMb).toBeLessThan(1024);
      // The VMs the round created are gone again.
      const left = await fetch(`${server.baseUrl}/api/v1/vms`, { headers: { authorization: `Bearer ${server.token}` } }).then((x) => x.json() as Promise<{ vms: unknown[] }>);
      expect(left.vms).toEqual([]);
    },
    600_000,
  );
});
