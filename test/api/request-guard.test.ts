/**
 * Browser-facing protections and request limits of the real server (real Elysia on Bun, the
 * rig's libvirtd test driver): foreign Origin and Host are refused (websocket upgrades too),
 * bodies over server.max_body_bytes are refused before they are read, authentication comes
 * before the body, and the OpenAPI document states the limits the service applies.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createToken } from "../../src/auth/index.ts";
import { LibvirtClient } from "../../src/libvirt/index.ts";
import { BRIDGE_PATTERN, QMP_QUERY_PATTERN, VM_NAME_PATTERN } from "../../src/api-types/values.ts";
import { LOGIN_USER_RE } from "../../src/util/login-user.ts";
import { removePool, uniqueName, unixUri } from "../helpers/rig.ts";
import { startTestServer, testDriverConfig, type TestServer, waitHealthy } from "../helpers/server.ts";

const pools = [`rctest-guard-${process.pid}`, `rctest-guard-auth-${process.pid}`];
const ALLOWED = "https://ci.example.org";
const MiB = 1024 * 1024;
let open: TestServer; // auth off (the loopback default)
let authed: TestServer; // auth on
let token = "";
const vm = uniqueName("guard").slice(0, 40);

beforeAll(async () => {
  open = await startTestServer({ ...(await testDriverConfig(pools[0] as string)), server: { allowed_origins: [ALLOWED], idle_timeout_s: 2 } });
  const tokensFile = join(mkdtempSync(join(tmpdir(), "rcloud-guard-")), "tokens.json");
  token = createToken(tokensFile, { name: "guard", role: "admin", project: null }).token;
  authed = await startTestServer({ ...(await testDriverConfig(pools[1] as string)), auth: { enabled: true, tokens_file: tokensFile } });
  await waitHealthy(open);
  const created = await open.req("POST", "/api/v1/vms", { name: vm, image: "debian13" });
  expect(created.status).toBe(201);
  expect(created.json.state).toBe("running");
});

afterAll(async () => {
  await open?.req("DELETE", `/api/v1/vms/${vm}`);
  await open?.stop({ drainMs: 5_000 });
  await authed?.stop({ drainMs: 5_000 });
  const lv = await LibvirtClient.connect(unixUri("test"));
  for (const p of pools) await removePool(lv, p);
  await lv.close();
});

async function call(s: TestServer, method: string, path: string, headers: Record<string, string>) {
  const r = await fetch(`${s.url}${path}`, { method, headers });
  const text = await r.text();
  return { status: r.status, text, json: JSON.parse(text) as { error?: { code: string; message: string } } };
}

/**
 * A raw HTTP/1.1 exchange: sends `head` and `body` and keeps the request open (no more body)
 * until the server answers or closes, or `waitMs` passes. Shows what the server does before it
 * has the whole body.
 */
async function raw(s: TestServer, head: string, body: Uint8Array | string, waitMs = 10_000): Promise<{ response: string; closed: boolean }> {
  let response = "";
  let closed = false;
  let wake: () => void = () => {};
  const done = new Promise<void>((r) => (wake = r));
  const socket = await Bun.connect({
    hostname: "127.0.0.1",
    port: s.port,
    socket: {
      data(_s, d) {
        response += d.toString();
        if (/\r\n\r\n/.test(response)) wake();
      },
      close() {
        closed = true;
        wake();
      },
      error() {
        closed = true;
        wake();
      },
    },
  });
  socket.write(head);
  if (body.length > 0) socket.write(body);
  await Promise.race([done, Bun.sleep(waitMs)]);
  await Bun.sleep(50); // the rest of a short response
  socket.end();
  return { response, closed };
}

function statusOf(response: string): number {
  return Number(/^HTTP\/1\.1 (\d{3})/.exec(response)?.[1] ?? 0);
}

function jsonOf(response: string): { error: { code: string; message: string } } {
  return JSON.parse(response.slice(response.indexOf("\r\n\r\n") + 4));
}

describe("Origin and Host", () => {
  test("a POST from another site's page is refused with 403 forbidden_origin and the VM keeps running", async () => {
    for (const origin of ["http://evil.example", "null", `${open.url.replace("127.0.0.1", "localhost")}`]) {
      const r = await call(open, "POST", `/api/v1/vms/${vm}/stop?force=true`, { origin });
      expect(r.status).toBe(403);
      expect(r.json.error?.code).toBe("forbidden_origin");
      expect(r.json.error?.message).toContain("server.allowed_origins");
    }
    const after = await open.req("GET", `/api/v1/vms/${vm}`);
    expect(after.json.state).toBe("running");
  });

  test("a GET with a foreign Origin is refused too (a page could otherwise read nothing, but the rule is one)", async () => {
    const r = await call(open, "GET", "/api/v1/vms", { origin: "http://evil.example" });
    expect(r.status).toBe(403);
    expect(r.json.error?.code).toBe("forbidden_origin");
  });

  test("no Origin (curl, CLI, Terraform), the server's own origin and a listed origin work", async () => {
    expect((await call(open, "GET", `/api/v1/vms/${vm}`, {})).status).toBe(200);
    expect((await call(open, "GET", `/api/v1/vms/${vm}`, { origin: open.url })).status).toBe(200);
    expect((await call(open, "GET", `/api/v1/vms/${vm}`, { origin: ALLOWED })).status).toBe(200);
    expect((await call(open, "GET", `/api/v1/vms/${vm}`, { host: `localhost:${open.port}`, origin: `http://localhost:${open.port}` })).status).toBe(200);
  });

  test("a Host the server does not answer to (DNS rebinding) is refused with 403 forbidden_host", async () => {
    for (const host of ["evil.example", `evil.example:${open.port}`, "127.0.0.1.evil.example"]) {
      const r = await call(open, "POST", `/api/v1/vms/${vm}/stop?force=true`, { host });
      expect(r.status).toBe(403);
      expect(r.json.error?.code).toBe("forbidden_host");
      expect(r.json.error?.message).toContain("server.public_names");
    }
    expect((await open.req("GET", `/api/v1/vms/${vm}`)).json.state).toBe("running");
  });

  test("a websocket upgrade of the console from another site is refused; from the server's own page it opens", async () => {
    const attach = `/api/v1/vms/${vm}/console/attach`;
    const upgrade = { upgrade: "websocket", connection: "Upgrade", "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==", "sec-websocket-version": "13" };
    const refused = await call(open, "GET", attach, { ...upgrade, origin: "http://evil.example" });
    expect(refused.status).toBe(403);
    expect(refused.json.error?.code).toBe("forbidden_origin");

    const outcome = async (origin: string) => {
      const ws = new WebSocket(`${open.url.replace("http://", "ws://")}${attach}`, { headers: { origin } } as unknown as string[]);
      return await new Promise<string>((resolve) => {
        ws.onopen = () => {
          resolve("open");
          ws.close();
        };
        ws.onerror = () => resolve("error");
        ws.onclose = () => resolve("closed");
      });
    };
    expect(await outcome("http://evil.example")).toBe("error");
    expect(await outcome(open.url)).toBe("open");
  });
});

describe("request body size and order", () => {
  const createHead = (extra: string) => `POST /api/v1/vms HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n${extra}\r\n`;

  test("a 2 MiB body is answered 413 payload_too_large by its Content-Length, before it is sent", async () => {
    const r = await raw(open, createHead(`Content-Length: ${2 * MiB}\r\n`), "");
    expect(statusOf(r.response)).toBe(413);
    expect(jsonOf(r.response).error.code).toBe("payload_too_large");
    expect(jsonOf(r.response).error.message).toContain("server.max_body_bytes");
  });

  test("a chunked body is cut off once it passes the limit, without waiting for its end", async () => {
    const chunk = "x".repeat(64 * 1024);
    const chunks = Array.from({ length: 24 }, () => `${chunk.length.toString(16)}\r\n${chunk}\r\n`).join(""); // 1.5 MiB, no final 0-chunk
    const r = await raw(open, createHead("Transfer-Encoding: chunked\r\n"), `${(6).toString(16)}\r\n{"n":"\r\n${chunks}`);
    expect(statusOf(r.response)).toBe(413);
    expect(jsonOf(r.response).error.code).toBe("payload_too_large");
  });

  test("a small chunked body is still parsed", async () => {
    const body = JSON.stringify({ name: "Bad_Name", image: "debian13" });
    const r = await raw(open, createHead("Transfer-Encoding: chunked\r\n"), `${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`);
    expect(statusOf(r.response)).toBe(422);
    expect(jsonOf(r.response).error.code).toBe("validation_error");
  });

  test("with auth on, a request without a token gets 401 before its body is read; with a token, 413", async () => {
    const unauth = await raw(authed, createHead(`Content-Length: ${2 * MiB}\r\n`), "");
    expect(statusOf(unauth.response)).toBe(401);
    expect(jsonOf(unauth.response).error.code).toBe("unauthorized");
    // Small, but never sent: only authenticating before the body answers this.
    const stalled = await raw(authed, createHead("Content-Length: 100\r\n"), '{"name":');
    expect(statusOf(stalled.response)).toBe(401);
    const big = await raw(authed, createHead(`Authorization: Bearer ${token}\r\nContent-Length: ${2 * MiB}\r\n`), "");
    expect(statusOf(big.response)).toBe(413);
    // A foreign page is refused before its token is even looked at.
    const foreign = await raw(authed, createHead("Origin: http://evil.example\r\nContent-Length: 2\r\n"), "{}");
    expect(statusOf(foreign.response)).toBe(403);
  });

  test("a body that stalls keeps the idle timeout (the exemption starts once the body is in)", async () => {
    const t0 = performance.now();
    const r = await raw(open, createHead("Content-Length: 100\r\n"), '{"name":', 20_000);
    expect(r.closed).toBe(true);
    expect(statusOf(r.response)).not.toBe(201);
    expect(performance.now() - t0).toBeLessThan(15_000); // idle_timeout_s is 2
  }, 30_000);
});

describe("OpenAPI document", () => {
  test("states the limits the service applies", async () => {
    const doc = (await open.req("GET", "/swagger/json")).json;
    const create = doc.paths["/api/v1/vms"].post.requestBody.content["application/json"].schema.properties;
    expect(create.name).toMatchObject({ maxLength: 63, pattern: VM_NAME_PATTERN });
    expect(create.ssh_user).toMatchObject({ maxLength: 32, pattern: LOGIN_USER_RE.source });
    expect(create.network.properties.bridge).toMatchObject({ maxLength: 64, pattern: BRIDGE_PATTERN });
    expect(create.ssh_public_key.maxLength).toBe(16 * 1024);
    expect(create.ssh_public_keys).toMatchObject({ maxItems: 64, items: { maxLength: 16 * 1024 } });
    expect(create.extra_disks.maxItems).toBe(32);
    expect(create.kernel).toMatchObject({ maxLength: 4096, pattern: "^/" });
    expect(create.cmdline.maxLength).toBe(4096);
    expect(create.image.maxLength).toBe(255);
    expect(create.project.maxLength).toBe(64);
    const qmp = doc.paths["/api/v1/vms/{id}/qmp"].post.requestBody.content["application/json"].schema.properties;
    expect(qmp.execute.pattern).toBe(QMP_QUERY_PATTERN);
    // The document's limits are enforced: a 64-key list is the most.
    const keys = await open.req("POST", "/api/v1/vms", { name: "ok-name", image: "debian13", ssh_public_keys: Array.from({ length: 65 }, () => "x") });
    expect(keys.status).toBe(422);
    expect(keys.json.error.field).toBe("ssh_public_keys");
  });
});
