/** The Host and Origin rules of src/api/request-guard.ts (pure; the real server is in test/api/request-guard.test.ts). */
import { describe, expect, test } from "bun:test";
import { hostName, RequestGuard, type GuardSettings } from "../../src/api/request-guard.ts";
import { ServiceError } from "../../src/api-types/errors.ts";

function outcome(settings: Partial<GuardSettings>, headers: Record<string, string>): string {
  const guard = new RequestGuard({ bindHost: "127.0.0.1", scheme: "http", publicNames: [], allowedOrigins: [], ...settings });
  try {
    guard.check(new Request("http://127.0.0.1:8765/api/v1/vms", { headers }));
    return "ok";
  } catch (e) {
    if (e instanceof ServiceError) return e.code;
    throw e;
  }
}

test("hostName strips port, IPv6 brackets and a trailing dot, and lower-cases", () => {
  expect(hostName("Rcloud.Lab.:8765")).toBe("rcloud.lab");
  expect(hostName("[::1]:8765")).toBe("::1");
  expect(hostName("[fe80::1]")).toBe("fe80::1");
  expect(hostName("127.0.0.1")).toBe("127.0.0.1");
});

describe("Host", () => {
  const cases: [string, Partial<GuardSettings>, string, string][] = [
    ["the bind address with port", {}, "127.0.0.1:8765", "ok"],
    ["localhost", {}, "localhost:8765", "ok"],
    ["localhost with a trailing dot", {}, "LOCALHOST.:8765", "ok"],
    ["a foreign name", {}, "evil.example:8765", "forbidden_host"],
    ["another IP than a specific bind", {}, "10.0.0.1:8765", "forbidden_host"],
    ["IPv6 loopback bind", { bindHost: "::1" }, "[::1]:8765", "ok"],
    ["another IPv6 address", { bindHost: "::1" }, "[::2]:8765", "forbidden_host"],
    ["any IPv4 address with 0.0.0.0", { bindHost: "0.0.0.0" }, "192.168.1.5:8765", "ok"],
    ["any IPv6 address with [::]", { bindHost: "::" }, "[fe80::1]:8765", "ok"],
    ["a name with 0.0.0.0", { bindHost: "0.0.0.0" }, "rcloud.lab:8765", "forbidden_host"],
    ["a public name", { bindHost: "0.0.0.0", publicNames: ["rcloud.lab"] }, "RCLOUD.LAB", "ok"],
    ["a name-shaped address", { bindHost: "0.0.0.0" }, "127.0.0.1.evil.example", "forbidden_host"],
  ];
  for (const [what, settings, host, expected] of cases) test(what, () => expect(outcome(settings, { host })).toBe(expected));
  test("no Host header (HTTP/1.0 clients)", () => expect(outcome({}, {})).toBe("ok"));
});

describe("Origin", () => {
  const host = "127.0.0.1:8765";
  const cases: [string, Partial<GuardSettings>, string, string][] = [
    ["the server's own origin", {}, "http://127.0.0.1:8765", "ok"],
    ["another scheme", {}, "https://127.0.0.1:8765", "forbidden_origin"],
    ["another port", {}, "http://127.0.0.1:8766", "forbidden_origin"],
    ["another site", {}, "http://evil.example", "forbidden_origin"],
    ["null (sandboxed frames, file: pages)", {}, "null", "forbidden_origin"],
    ["garbage", {}, "not a url", "forbidden_origin"],
    ["a listed origin", { allowedOrigins: ["https://ci.example"] }, "https://ci.example", "ok"],
    ["own origin over https", { scheme: "https" }, "https://127.0.0.1:8765", "ok"],
  ];
  for (const [what, settings, origin, expected] of cases) test(what, () => expect(outcome(settings, { host, origin })).toBe(expected));
  test("a default port in Host matches an Origin without one", () => expect(outcome({}, { host: "127.0.0.1:80", origin: "http://127.0.0.1" })).toBe("ok"));
  test("Host is checked first", () => expect(outcome({}, { host: "evil.example", origin: "http://evil.example" })).toBe("forbidden_host"));
});
