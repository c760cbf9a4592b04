/**
 * API tokens, roles, projects and quotas against a real rcloud (real Elysia, libvirtd's test
 * driver from the rig). Tokens are made with the real CLI as a child process.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { chmodSync, mkdtempSync, readFileSync, statSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { stringify } from "yaml";
import { loadConfig } from "../../src/config/index.ts";
import { LibvirtClient } from "../../src/libvirt/index.ts";
import { startServer, type RunningServer } from "../../src/server.ts";
import { removePool, unixUri } from "../helpers/rig.ts";
import { mirrorToTestDriver } from "../helpers/server.ts";

const repo = resolve(import.meta.dir, "../..");
const tag = `${process.pid % 100000}`;
const PA = `pa-${tag}`;
const PB = `pb-${tag}`;
const PQ = `pq-${tag}`; // quota: 3 VMs
const PV = `pv-${tag}`; // quota: 2 vCPUs
const dir = mkdtempSync(join(tmpdir(), "rcloud-auth-"));
const tokensFile = join(dir, "tokens.json");
const images = mkdtempSync(join(tmpdir(), "rcloud-images-"));
const pools: string[] = [];
const servers: RunningServer[] = [];

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function cli(args: string[], env: Record<string, string> = {}): Promise<Run> {
  const proc = Bun.spawn([process.execPath, join(repo, "src/main.ts"), ...args], {
    cwd: repo,
    env: { ...process.env, RCLOUD_TOKENS_FILE: tokensFile, ...env } as Record<string, string>,
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  return { code, stdout, stderr };
}

async function newToken(role: "admin" | "user", project?: string): Promise<{ id: string; token: string }> {
  const r = await cli(["token", "create", "--name", `t-${role}-${project ?? "all"}`, "--role", role, ...(project ? ["--project", project] : []), "-o", "json"]);
  expect(r.stderr).toBe("");
  expect(r.code).toBe(0);
  const j = JSON.parse(r.stdout);
  return { id: j.id, token: j.token };
}

async function serve(name: string, auth: Record<string, unknown> | null, server?: Record<string, unknown>): Promise<RunningServer> {
  const pool = `rctest-auth-${name}-${process.pid}`;
  pools.push(pool);
  const cfgDir = mkdtempSync(join(tmpdir(), "rcloud-cfg-"));
  const file = join(cfgDir, "rcloud.yaml");
  writeFileSync(
    file,
    stringify({
      logging: { level: "error", format: "text" },
      libvirt: { uri: unixUri("test"), storage_pool_name: pool, storage_pool_path: `/rctest/${pool}` },
      images: { base_images_dir: images },
      vm_defaults: { network_mode: "bridge", network_bridge: "default", memory_mb: 256, vcpus: 1, root_disk_gb: 2 },
      ...(auth ? { auth } : {}),
      ...(server ? { server } : {}),
    }),
  );
  await mirrorToTestDriver(pool, { imagesDir: images });
  const s = await startServer({ config: loadConfig({ file, env: {} }), port: 0 });
  servers.push(s);
  const deadline = Date.now() + 15_000;
  while ((await fetch(`${s.url}/api/v1/health`)).status !== 200) {
    if (Date.now() > deadline) throw new Error("rcloud did not become healthy");
    await Bun.sleep(100);
  }
  return s;
}

async function call(s: RunningServer, method: string, path: string, token: string | null, body?: unknown) {
  const headers: Record<string, string> = {};
  if (token !== null) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(`${s.url}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let json: any = null;
  try {
    json = JSON.parse(text);
  } catch {
    json = null;
  }
  return { status: res.status, json, text, headers: res.headers };
}

let srv: RunningServer;
let admin: { id: string; token: string };
let userA: { id: string; token: string };
let userB: { id: string; token: string };
let userQ: { id: string; token: string };
let userV: { id: string; token: string };
const vmA = `rctest-auth-a-${tag}`;
const vmB = `rctest-auth-b-${tag}`;

beforeAll(async () => {
  writeFileSync(join(images, "debian-13-generic-amd64.raw"), "");
  truncateSync(join(images, "debian-13-generic-amd64.raw"), 1024 ** 3);
  admin = await newToken("admin");
  userA = await newToken("user", PA);
  userB = await newToken("user", PB);
  userQ = await newToken("user", PQ);
  userV = await newToken("user", PV);
  srv = await serve("main", { enabled: true, tokens_file: tokensFile, quotas: { [PQ]: { vms: 3 }, [PV]: { vcpus: 2 } } });
  expect((await call(srv, "POST", "/api/v1/vms", userA.token, { name: vmA, image: "debian13" })).status).toBe(201);
  expect((await call(srv, "POST", "/api/v1/vms", userB.token, { name: vmB, image: "debian13" })).status).toBe(201);
});

afterAll(async () => {
  if (srv && admin) {
    const all = await call(srv, "GET", "/api/v1/vms", admin.token);
    for (const v of all.json?.vms ?? []) {
      if ([PA, PB, PQ, PV].includes(v.project)) await call(srv, "DELETE", `/api/v1/vms/${v.id}`, admin.token);
    }
  }
  for (const s of servers) await s.stop({ drainMs: 5000 });
  const lv = await LibvirtClient.connect(unixUri("test"));
  for (const p of pools) await removePool(lv, p);
  await lv.close();
});

describe("rcloud token (CLI, no server)", () => {
  test("the file is 0600 and stores only hashes; list shows no secrets", async () => {
    const f = join(dir, "own.json");
    const r = await cli(["token", "create", "--name", "ci", "--role", "user", "--project", "kernel-ci", "--tokens-file", f]);
    expect(r.code).toBe(0);
    const token = /rc_[0-9a-f]{8}_[A-Za-z0-9_-]{43}/.exec(r.stdout)?.[0] as string;
    expect(token).toBeDefined();
    const [, id, secret] = /^rc_([0-9a-f]{8})_(.+)$/.exec(token) as RegExpExecArray;
    expect(statSync(f).mode & 0o777).toBe(0o600);
    const text = readFileSync(f, "utf8");
    expect(text).not.toContain(secret as string);
    const stored = JSON.parse(text).tokens;
    expect(stored).toHaveLength(1);
    expect(stored[0]).toMatchObject({ id, name: "ci", role: "user", project: "kernel-ci" });
    expect(stored[0].hash).toBe(createHash("sha256").update(secret as string).digest("hex"));
    const list = await cli(["token", "list", "--tokens-file", f]);
    expect(list.code).toBe(0);
    expect(list.stdout).toContain(id as string);
    expect(list.stdout).toContain("kernel-ci");
    expect(list.stdout).not.toContain(secret as string);
    const json = await cli(["token", "list", "-o", "json", "--tokens-file", f]);
    expect(JSON.parse(json.stdout).tokens.map((t: any) => t.id)).toEqual([id]);
    expect(json.stdout).not.toContain("hash");

    expect((await cli(["token", "revoke", id as string, "--tokens-file", f])).code).toBe(0);
    expect(JSON.parse(readFileSync(f, "utf8")).tokens).toEqual([]);
    expect(statSync(f).mode & 0o777).toBe(0o600);
    const again = await cli(["token", "revoke", id as string, "--tokens-file", f]);
    expect(again.code).toBe(3);
    expect(again.stderr).toContain("no token");
  });

  test("an existing file keeps its group-readable mode (the service reads it as group rcloud)", async () => {
    const f = join(dir, "shared.json");
    expect((await cli(["token", "create", "--name", "a", "--role", "admin", "--tokens-file", f])).code).toBe(0);
    chmodSync(f, 0o644); // too open: others' read bit must be dropped on the next write
    expect((await cli(["token", "create", "--name", "b", "--role", "admin", "--tokens-file", f])).code).toBe(0);
    expect(statSync(f).mode & 0o777).toBe(0o640);
  });

  test("usage errors: role, project", async () => {
    const f = join(dir, "bad.json");
    expect((await cli(["token", "create", "--name", "x", "--role", "root", "--tokens-file", f])).code).toBe(2);
    expect((await cli(["token", "create", "--name", "x", "--role", "user", "--tokens-file", f])).code).toBe(2);
    expect((await cli(["token", "create", "--name", "x", "--role", "user", "--project", "Bad Name", "--tokens-file", f])).code).toBe(5);
  });
});

describe("every route", () => {
  test("answers 401 without a token (except health), and 403 across projects on /vms/{id}", async () => {
    const doc = await call(srv, "GET", "/swagger/json", null);
    expect(doc.status).toBe(200);
    const paths = doc.json.paths as Record<string, Record<string, unknown>>;
    const routes: [string, string][] = [];
    for (const [path, ops] of Object.entries(paths)) {
      for (const method of Object.keys(ops)) if (["get", "post", "put", "patch", "delete"].includes(method)) routes.push([method.toUpperCase(), path]);
    }
    expect(routes.length).toBeGreaterThanOrEqual(12);
    expect(routes).toContainEqual(["POST", "/api/v1/vms/{id}/qmp"]);
    let vmRoutes = 0;
    for (const [method, path] of routes) {
      const concrete = path.replace(/\{id\}|:id/g, path.startsWith("/api/v1/images") ? "debian13" : vmA);
      // A well-formed body where the route requires one: the access check is what is tested.
      const bodies: Record<string, unknown> = { "/qmp": { execute: "query-status" }, "/snapshots": { name: "snap1" } };
      const body = method === "POST" ? (path === "/api/v1/vms" ? { name: "rctest-x", image: "debian13" } : Object.entries(bodies).find(([end]) => path.endsWith(end))?.[1]) : undefined;
      const anon = await call(srv, method, concrete, null, body);
      if (path === "/api/v1/health") {
        expect(anon.status, `${method} ${path}`).toBe(200);
        continue;
      }
      expect({ route: `${method} ${path}`, status: anon.status, code: anon.json?.error?.code }).toEqual({ route: `${method} ${path}`, status: 401, code: "unauthorized" });
      expect(anon.headers.get("www-authenticate")).toMatch(/^Bearer/);
      const bad = await call(srv, method, concrete, `rc_${admin.id}_${"x".repeat(43)}`, body);
      expect({ route: `${method} ${path}`, status: bad.status }).toEqual({ route: `${method} ${path}`, status: 401 });
      if (path.startsWith("/api/v1/vms/{id}")) {
        vmRoutes++;
        const other = await call(srv, method, concrete, userB.token, body);
        expect({ route: `${method} ${path}`, status: other.status, code: other.json?.error?.code }).toEqual({ route: `${method} ${path}`, status: 403, code: "forbidden" });
      }
    }
    expect(vmRoutes).toBeGreaterThanOrEqual(7);
    // The VM survived project B's attempts (DELETE included).
    expect((await call(srv, "GET", `/api/v1/vms/${vmA}`, userA.token)).status).toBe(200);
  });
});

describe("health", () => {
  test("without a valid token it says which hosts answer, not what the host's URI or last error is", async () => {
    for (const token of [null, `rc_${admin.id}_${"x".repeat(43)}`]) {
      const anon = await call(srv, "GET", "/api/v1/health", token);
      expect(anon.status).toBe(200);
      expect(anon.json.hypervisor).toEqual({ ok: true, detail: "1 of 1 hosts online" });
    }
    for (const token of [admin.token, userA.token]) {
      const known = await call(srv, "GET", "/api/v1/health", token);
      expect(known.json.hypervisor).toEqual({ ok: true, detail: "connected to test+unix:///default" });
    }
  });
});

describe("projects", () => {
  test("a user lists only its project's VMs; an admin sees all", async () => {
    const a = await call(srv, "GET", "/api/v1/vms", userA.token);
    expect(a.status).toBe(200);
    expect(a.json.vms.map((v: any) => v.name)).toEqual([vmA]);
    expect(a.json.vms[0].project).toBe(PA);
    const b = await call(srv, "GET", "/api/v1/vms", userB.token);
    expect(b.json.vms.map((v: any) => v.name)).toEqual([vmB]);
    const all = await call(srv, "GET", "/api/v1/vms", admin.token);
    const names = all.json.vms.map((v: any) => v.name);
    expect(names).toContain(vmA);
    expect(names).toContain(vmB);
    expect((await call(srv, "GET", `/api/v1/vms/${vmB}`, admin.token)).json.project).toBe(PB);
  });

  test("the id works like the name, and a missing VM is still 404", async () => {
    const a = await call(srv, "GET", `/api/v1/vms/${vmA}`, userA.token);
    expect((await call(srv, "GET", `/api/v1/vms/${a.json.id}`, userB.token)).status).toBe(403);
    expect((await call(srv, "GET", "/api/v1/vms/rctest-nothing-here", userB.token)).status).toBe(404);
  });

  test("a user cannot create in another project; an admin may create in any", async () => {
    const r = await call(srv, "POST", "/api/v1/vms", userB.token, { name: `rctest-auth-x-${tag}`, image: "debian13", project: PA });
    expect(r.status).toBe(403);
    expect(r.json.error.code).toBe("forbidden");
    const name = `rctest-auth-adm-${tag}`;
    const c = await call(srv, "POST", "/api/v1/vms", admin.token, { name, image: "debian13", project: PB });
    expect(c.status).toBe(201);
    expect(c.json.project).toBe(PB);
    expect((await call(srv, "GET", "/api/v1/vms", userB.token)).json.vms.map((v: any) => v.name).sort()).toEqual([name, vmB].sort());
    expect((await call(srv, "DELETE", `/api/v1/vms/${name}`, userB.token)).status).toBe(200);
  });

  test("images and status need a token but no project", async () => {
    expect((await call(srv, "GET", "/api/v1/images", userA.token)).status).toBe(200);
    expect((await call(srv, "GET", "/api/v1/status", userA.token)).status).toBe(200);
  });

  test("/status: a project token counts its own VMs and sees the host's size, not its layout; an admin sees all", async () => {
    const countOf = (byState: Record<string, number>) => Object.values(byState).reduce((n, k) => n + k, 0);
    for (const [user, project, own] of [[userA, PA, vmA], [userB, PB, vmB]] as const) {
      const mine = (await call(srv, "GET", "/api/v1/vms", user.token)).json.vms;
      const st = await call(srv, "GET", "/api/v1/status", user.token);
      expect(st.status).toBe(200);
      expect(st.json).toMatchObject({ status: "operational", project, uri: null, hostname: null, free_memory_mb: null, storage: null });
      expect(st.json.cpus).toBeGreaterThan(0);
      expect(st.json.memory_mb).toBeGreaterThan(0);
      expect(st.json.allocated.vms).toBe(mine.length);
      expect(countOf(st.json.vms_by_state)).toBe(mine.length);
      expect(st.json.allocated.vcpus).toBe(mine.filter((v: any) => v.state !== "stopped").reduce((n: number, v: any) => n + v.vcpus, 0));
      // Nothing of the other project, nor of the pool.
      const other = own === vmA ? vmB : vmA;
      expect(st.text).not.toContain(other);
      expect(st.text).not.toContain("rctest-auth-main");
      // The CLI shows the project and leaves out what the server withheld.
      const shown = await cli(["status"], { RCLOUD_ENDPOINT: srv.url, RCLOUD_TOKEN: user.token });
      expect(shown.stderr).toBe("");
      expect(shown.stdout).toMatch(new RegExp(`^Project: +${project}$`, "m"));
      expect(shown.stdout).toMatch(/^Host: +\d+ CPUs, \S+ memory$/m);
      expect(shown.stdout).not.toContain("null");
    }
    const all = (await call(srv, "GET", "/api/v1/vms", admin.token)).json.vms;
    const st = await call(srv, "GET", "/api/v1/status", admin.token);
    expect(st.json.allocated.vms).toBe(all.length);
    expect(all.length).toBeGreaterThanOrEqual(2);
    expect(typeof st.json.hostname).toBe("string");
    expect(st.json.storage.pool).toBe(`rctest-auth-main-${process.pid}`);
    expect(st.json.project).toBeUndefined();
  });
});

describe("quotas", () => {
  test("VM count: 10 concurrent creates against a quota of 3 → exactly 3 succeed, the rest 403 quota_exceeded", async () => {
    const names = Array.from({ length: 10 }, (_, i) => `rctest-auth-q${i}-${tag}`);
    const results = await Promise.all(names.map((name) => call(srv, "POST", "/api/v1/vms", userQ.token, { name, image: "debian13" })));
    const statuses = results.map((r) => r.status);
    expect(statuses.filter((s) => s === 201)).toHaveLength(3);
    expect(statuses.filter((s) => s === 403)).toHaveLength(7);
    const refused = results.find((r) => r.status === 403);
    expect(refused?.json.error.code).toBe("quota_exceeded");
    expect(refused?.json.error.message).toContain("vms");
    expect((await call(srv, "GET", "/api/v1/vms", userQ.token)).json.vms).toHaveLength(3);
    // Sequentially too; and deleting one frees a slot.
    const one = await call(srv, "POST", "/api/v1/vms", userQ.token, { name: `rctest-auth-q10-${tag}`, image: "debian13" });
    expect(one.status).toBe(403);
    expect(one.json.error.code).toBe("quota_exceeded");
    const created = results.filter((r) => r.status === 201).map((r) => r.json.name);
    expect((await call(srv, "DELETE", `/api/v1/vms/${created[0]}`, userQ.token)).status).toBe(200);
    expect((await call(srv, "POST", "/api/v1/vms", userQ.token, { name: `rctest-auth-q11-${tag}`, image: "debian13" })).status).toBe(201);
  });

  test("vCPUs: over the quota → 403 quota_exceeded naming vcpus", async () => {
    const big = await call(srv, "POST", "/api/v1/vms", userV.token, { name: `rctest-auth-v0-${tag}`, image: "debian13", vcpus: 3 });
    expect(big.status).toBe(403);
    expect(big.json.error.code).toBe("quota_exceeded");
    expect(big.json.error.message).toContain("vcpus");
    expect((await call(srv, "POST", "/api/v1/vms", userV.token, { name: `rctest-auth-v1-${tag}`, image: "debian13", vcpus: 2 })).status).toBe(201);
    const more = await call(srv, "POST", "/api/v1/vms", userV.token, { name: `rctest-auth-v2-${tag}`, image: "debian13", vcpus: 1 });
    expect(more.status).toBe(403);
    expect(more.json.error.code).toBe("quota_exceeded");
  });

  test("PATCH: growing over the quota → 403 quota_exceeded, nothing changed; another project's VM → 403", async () => {
    const name = `rctest-auth-v1-${tag}`; // the 2 vCPUs of the quota, from the test before
    const grow = await call(srv, "PATCH", `/api/v1/vms/${name}`, userV.token, { vcpus: 3 });
    expect({ status: grow.status, code: grow.json.error?.code }).toEqual({ status: 403, code: "quota_exceeded" });
    expect(grow.json.error.message).toContain("vcpus");
    expect((await call(srv, "GET", `/api/v1/vms/${name}`, userV.token)).json).toMatchObject({ vcpus: 2, pending: null });
    const shrink = await call(srv, "PATCH", `/api/v1/vms/${name}`, userV.token, { vcpus: 1 });
    expect(shrink.status).toBe(200);
    expect(shrink.json.pending).toEqual({ vcpus: 1 });
    expect((await call(srv, "PATCH", `/api/v1/vms/${name}`, userQ.token, { vcpus: 1 })).status).toBe(403);
  });

  test("projects without a quota are unlimited", async () => {
    const name = `rctest-auth-a2-${tag}`;
    expect((await call(srv, "POST", "/api/v1/vms", userA.token, { name, image: "debian13", vcpus: 4 })).status).toBe(201);
    expect((await call(srv, "DELETE", `/api/v1/vms/${name}`, userA.token)).status).toBe(200);
  });
});

describe("tokens at run time", () => {
  test("revocation takes effect within about a second, without a restart", async () => {
    const t = await newToken("user", PA);
    // A new token is picked up within a second too.
    const t1 = Date.now();
    while ((await call(srv, "GET", "/api/v1/vms", t.token)).status !== 200 && Date.now() - t1 < 3000) await Bun.sleep(50);
    expect((await call(srv, "GET", "/api/v1/vms", t.token)).status).toBe(200);
    expect((await cli(["token", "revoke", t.id])).code).toBe(0);
    // The server looks at the file at most once a second, so a request that starts a second
    // after the revocation is refused, however long requests take on this machine.
    const revokedAt = Date.now();
    await Bun.sleep(Math.max(0, revokedAt + 1050 - Date.now()));
    expect((await call(srv, "GET", "/api/v1/vms", t.token)).status).toBe(401);
    // Other tokens keep working.
    expect((await call(srv, "GET", "/api/v1/vms", userA.token)).status).toBe(200);
  });

  test("a token created while the server runs is accepted", async () => {
    const t = await newToken("user", PB);
    const t0 = Date.now();
    let status = 0;
    while (Date.now() - t0 < 3000) {
      status = (await call(srv, "GET", "/api/v1/vms", t.token)).status;
      if (status === 200) break;
      await Bun.sleep(50);
    }
    expect(status).toBe(200);
  });

  test("malformed Authorization headers are 401", async () => {
    for (const h of ["Basic Zm9vOmJhcg==", "Bearer", `Bearer ${admin.token}x`, admin.token]) {
      const res = await fetch(`${srv.url}/api/v1/vms`, { headers: { authorization: h } });
      expect(res.status).toBe(401);
    }
  });
});

describe("auth on and off", () => {
  test("/metrics is 401 while auth is on, 403 for a project token; with an admin token or metrics_open it answers", async () => {
    expect((await call(srv, "GET", "/metrics", null)).status).toBe(401);
    expect((await call(srv, "GET", "/metrics", admin.token)).status).toBe(200);
    // Every project's VMs are in the metrics: a project token is refused.
    const scoped = await call(srv, "GET", "/metrics", userA.token);
    expect({ status: scoped.status, code: scoped.json?.error?.code }).toEqual({ status: 403, code: "forbidden" });
    expect(scoped.text).not.toContain(vmB);
    const open = await serve("metrics", { enabled: true, tokens_file: tokensFile, metrics_open: true });
    expect((await call(open, "GET", "/metrics", null)).status).toBe(200);
    expect((await call(open, "GET", "/api/v1/vms", null)).status).toBe(401);
  });

  test("loopback bind without auth config: auth off", async () => {
    const s = await serve("loopback", null);
    expect((await call(s, "GET", "/api/v1/vms", null)).status).toBe(200);
    expect((await call(s, "GET", "/metrics", null)).status).toBe(200);
  });

  test("non-loopback bind with auth: auto → auth on", async () => {
    const s = await serve("wide", { tokens_file: tokensFile }, { bind_address: "0.0.0.0:8765" });
    const url = s.url.replace("0.0.0.0", "127.0.0.1");
    expect((await fetch(`${url}/api/v1/health`)).status).toBe(200);
    expect((await fetch(`${url}/api/v1/vms`)).status).toBe(401);
    expect((await fetch(`${url}/api/v1/vms`, { headers: { authorization: `Bearer ${admin.token}` } })).status).toBe(200);
  });
});
