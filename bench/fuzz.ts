/**
 * bun run fuzz [--requests N] [--seed S]
 *
 * Property-based fuzzing of rcloud's REST API, driven by the server's own OpenAPI document
 * (/swagger/json): for every route and method, requests with valid-looking and hostile path
 * parameters, query strings, bodies and content types (fast-check), with the admin token,
 * without one and with a bad one. The property: no answer is a 5xx, the server process stays
 * up, /api/v1/health answers 200 throughout, and its RSS stays bounded.
 *
 * Alone it starts `rcloud serve` on the rig's libvirt test driver (the rig must be up:
 * scripts/lib/rig.sh up), deletes the VMs the run created, and prints one JSON line:
 * {requests, five_xx, max_rss_mb, start_rss_mb, findings, seed, seconds}.
 * The suite runs a shorter round with a fixed seed (test/api/fuzz.test.ts).
 */
import { existsSync, readFileSync } from "node:fs";
import fc from "fast-check";
import { hostileJson, hostileRawBody, hostileString } from "./hostile.ts";

export interface FuzzOptions {
  baseUrl: string;
  token: string;
  requests: number;
  /** The server process: RSS read from /proc/<pid>/status, and its death is a finding. */
  pid?: number;
  seed?: number;
}

export interface FuzzResult {
  requests: number;
  fiveXx: number;
  maxRssMb: number;
  findings: string[];
}

type Schema = Record<string, unknown> & { type?: string; properties?: Record<string, Schema>; items?: Schema; anyOf?: Schema[]; required?: string[] };
interface Operation {
  method: string;
  path: string;
  params: { name: string; in: "path" | "query"; schema: Schema }[];
  body: Schema | null;
}
interface FuzzRequest {
  op: Operation;
  auth: "admin" | "none" | "bad" | "malformed";
  pathValues: string[];
  query: [string, string][];
  body: { kind: "none" } | { kind: "json"; value: unknown } | { kind: "raw"; text: string };
  contentType: string | null;
}

/** Concurrent requests in flight. */
const PARALLEL = 8;
/** No answer within this is a finding (the machine is shared and slow: generous). */
const ANSWER_TIMEOUT_MS = 30_000;
/** Health and RSS are checked every this many requests. */
const CHECK_EVERY = 100;
/** Requests generated at a time. */
const BATCH = 200;

/** Every (method, path) of the OpenAPI document, with its parameters and JSON body schema. */
export function operationsOf(doc: { paths: Record<string, Record<string, { parameters?: unknown[]; requestBody?: { content?: Record<string, { schema?: Schema }> } }>> }): Operation[] {
  const ops: Operation[] = [];
  for (const [path, methods] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      const params = (op.parameters ?? []) as Operation["params"];
      ops.push({ method: method.toUpperCase(), path, params, body: op.requestBody?.content?.["application/json"]?.schema ?? null });
    }
  }
  return ops;
}

/** Routes the document does not list: the console websocket by ticket, and no route at all. */
const UNDOCUMENTED: Operation[] = [
  { method: "GET", path: "/api/v1/vms/{id}/console/attach", params: [{ name: "ticket", in: "query", schema: { type: "string" } }], body: null },
  { method: "PUT", path: "/api/v1/vms/{id}", params: [], body: null },
  { method: "GET", path: "/api/v1/{id}", params: [], body: null },
];

/** Values a schema accepts (mostly): what gets a request past validation into the service. */
function validLooking(schema: Schema | undefined, depth = 0): fc.Arbitrary<unknown> {
  if (!schema || depth > 4) return fc.constant("x");
  if (Array.isArray(schema.anyOf) && schema.anyOf.length > 0) return fc.oneof(...schema.anyOf.map((s) => validLooking(s, depth + 1)));
  if ("const" in schema) return fc.constant(schema.const);
  if (Array.isArray(schema.enum)) return fc.constantFrom(...(schema.enum as unknown[]));
  const num = (k: string, d: number) => (typeof schema[k] === "number" ? (schema[k] as number) : d);
  switch (schema.type) {
    case "object": {
      const props = schema.properties ?? {};
      const required = new Set(schema.required ?? []);
      const entries = Object.entries(props).map(([k, s]) => [k, validLooking(s, depth + 1)] as const);
      return fc.record(Object.fromEntries(entries), { requiredKeys: [...required].filter((k) => k in props) });
    }
    case "array":
      return fc.array(validLooking(schema.items, depth + 1), { maxLength: Math.min(num("maxItems", 3), 3) });
    case "integer":
      return fc.integer({ min: Math.min(num("minimum", 0), 1_000_000), max: Math.min(num("maximum", 64), 4096) });
    case "number":
      return fc.double({ min: 0, max: 4096, noNaN: true });
    case "boolean":
      return fc.boolean();
    case "string": {
      if (schema.format === "integer") return fc.integer({ min: 0, max: 4096 }).map(String);
      if (typeof schema.pattern === "string") return fc.stringMatching(new RegExp(schema.pattern)).map((s) => s.slice(0, num("maxLength", 63)));
      const examples = Array.isArray(schema.examples) ? (schema.examples as string[]) : [];
      return fc.oneof(fc.constantFrom("debian13", "rcloud-fuzz", "default", ...examples), fc.string({ minLength: 1, maxLength: 20 }));
    }
    default:
      return fc.jsonValue({ maxDepth: 2 });
  }
}

/** A valid-looking object with one field (maybe nested) swapped for a hostile value. */
function mutated(schema: Schema): fc.Arbitrary<unknown> {
  return fc.tuple(validLooking(schema), hostileJson(), fc.nat(), fc.boolean()).map(([base, bad, pick, extraKey]) => {
    if (typeof base !== "object" || base === null || Array.isArray(base)) return bad;
    const obj = base as Record<string, unknown>;
    const keys = Object.keys(schema.properties ?? obj);
    if (extraKey || keys.length === 0) return { ...obj, [`unknown_${pick % 3}`]: bad };
    const key = keys[pick % keys.length]!;
    const sub = obj[key];
    if (typeof sub === "object" && sub !== null && !Array.isArray(sub) && Object.keys(sub).length > 0) {
      const inner = Object.keys(sub);
      return { ...obj, [key]: { ...sub, [inner[pick % inner.length]!]: bad } };
    }
    if (Array.isArray(sub) && sub.length > 0 && typeof sub[0] === "object") return { ...obj, [key]: [{ ...(sub[0] as object), size_gb: bad }] };
    return { ...obj, [key]: bad };
  });
}

function requestArbitrary(ops: Operation[], knownIds: () => string[]): fc.Arbitrary<FuzzRequest> {
  const pathValue = fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom("rcloud-fuzz-a", "vm-00000000", "default", "debian13", "debian-13-generic-amd64.raw") },
    { weight: 2, arbitrary: fc.nat().map((i) => knownIds()[i % Math.max(1, knownIds().length)] ?? "rcloud-fuzz-a") },
    { weight: 4, arbitrary: hostileString() },
    { weight: 1, arbitrary: fc.constantFrom("%", "%zz", "%E0%A4%A", "..%2F..%2F", "%2e%2e", "%00", "a%2Fb", "%C0%AE") },
  );
  const op = fc.constantFrom(...ops);
  return op.chain((o) => {
    const pathCount = (o.path.match(/\{[^}]+\}/g) ?? []).length;
    const queryParams = o.params.filter((p) => p.in === "query");
    const query = fc
      .tuple(
        fc.subarray(queryParams).chain((ps) => fc.tuple(...ps.map((p) => fc.tuple(fc.constant(p.name), fc.oneof(fc.constantFrom("true", "false", "1", "0", "10", "-1", ""), hostileString()))))),
        fc.array(fc.tuple(hostileString(), hostileString()), { maxLength: 2 }),
      )
      .map(([known, extra]) => [...known, ...extra] as [string, string][]);
    const body: fc.Arbitrary<FuzzRequest["body"]> = o.body
      ? fc.oneof(
          { weight: 3, arbitrary: validLooking(o.body).map((value) => ({ kind: "json" as const, value })) },
          { weight: 4, arbitrary: mutated(o.body).map((value) => ({ kind: "json" as const, value })) },
          { weight: 2, arbitrary: hostileJson().map((value) => ({ kind: "json" as const, value })) },
          { weight: 2, arbitrary: hostileRawBody().map((text) => ({ kind: "raw" as const, text })) },
          { weight: 1, arbitrary: fc.constant({ kind: "none" as const }) },
        )
      : fc.oneof({ weight: 4, arbitrary: fc.constant({ kind: "none" as const }) }, { weight: 1, arbitrary: hostileRawBody().map((text) => ({ kind: "raw" as const, text })) });
    return fc.record({
      op: fc.constant(o),
      auth: fc.oneof({ weight: 12, arbitrary: fc.constant("admin" as const) }, fc.constantFrom("none" as const, "bad" as const, "malformed" as const)),
      pathValues: fc.array(pathValue, { minLength: pathCount, maxLength: pathCount }),
      query,
      body,
      contentType: fc.oneof(
        { weight: 6, arbitrary: fc.constant("application/json") },
        fc.constantFrom(null, "text/plain", "multipart/form-data", "multipart/form-data; boundary=boundary", "application/x-www-form-urlencoded", "application/xml", "application/json; charset=utf-16", "application/merge-patch+json", "*/*;;;"),
      ),
    });
  });
}

/** encodeURIComponent, with lone surrogates sent as the (invalid) UTF-8 bytes they would have. */
function enc(v: string): string {
  return v.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]|[^\ud800-\udfff]+|[\ud800-\udbff][\udc00-\udfff]/g, (part) => {
    const c = part.charCodeAt(0);
    if (part.length === 1 && c >= 0xd800 && c <= 0xdfff) return `%ED%${(0x80 | ((c >> 6) & 0x3f)).toString(16).toUpperCase()}%${(0x80 | (c & 0x3f)).toString(16).toUpperCase()}`;
    return encodeURIComponent(part);
  });
}

/** Encodes a path value; raw percent sequences (the ones that start with %) go through as they are. */
function pathSegment(v: string): string {
  return /^(%|\.\.%)/.test(v) ? v.replace(/[^%A-Za-z0-9._~-]/g, (c) => enc(c)) : enc(v);
}

function toFetch(req: FuzzRequest, baseUrl: string, token: string): { url: string; init: RequestInit } {
  let i = 0;
  const path = req.op.path.replace(/\{[^}]+\}/g, () => pathSegment(req.pathValues[i++] ?? "x"));
  const qs = req.query.map(([k, v]) => `${enc(k)}=${enc(v)}`).join("&");
  const headers: Record<string, string> = {};
  if (req.auth === "admin") headers.authorization = `Bearer ${token}`;
  if (req.auth === "bad") headers.authorization = `Bearer rct_${"0".repeat(40)}`;
  if (req.auth === "malformed") headers.authorization = `Basic ${btoa("root:root")}`;
  let body: string | undefined;
  if (req.body.kind === "json") body = JSON.stringify(req.body.value) ?? "null";
  if (req.body.kind === "raw") body = req.body.text;
  if (req.op.method === "GET" || req.op.method === "HEAD") body = undefined; // fetch cannot send one
  if (body !== undefined && req.contentType) headers["content-type"] = req.contentType;
  return { url: `${baseUrl}${path}${qs ? `?${qs}` : ""}`, init: { method: req.op.method, headers, body } };
}

function describe(req: FuzzRequest, status: number | string, answer: string): string {
  const body = req.body.kind === "json" ? JSON.stringify(req.body.value) : req.body.kind === "raw" ? JSON.stringify(req.body.text) : "";
  const cut = (s: string | undefined, n: number) => ((s ?? "").length > n ? `${(s ?? "").slice(0, n)}…(${(s ?? "").length})` : (s ?? ""));
  return `${status} ${req.op.method} ${req.op.path} path=${cut(JSON.stringify(req.pathValues), 120)} query=${cut(JSON.stringify(req.query), 120)} ct=${req.contentType} auth=${req.auth} body=${cut(body, 200)} → ${cut(answer, 300)}`;
}

export function rssMb(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) / 1024 : 0;
  } catch {
    return 0;
  }
}

/** Reads at most `limit` bytes of an answer; streams (the event feed) are cut off. */
async function readSome(res: Response, limit = 1 << 20): Promise<string> {
  const type = res.headers.get("content-type") ?? "";
  if (/event-stream|ndjson/.test(type) || !res.body) {
    await res.body?.cancel().catch(() => {});
    return "";
  }
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  while (size < limit) {
    const { value, done } = await reader.read();
    if (done) break;
    chunks.push(value);
    size += value.byteLength;
  }
  await reader.cancel().catch(() => {});
  return new TextDecoder().decode(Buffer.concat(chunks));
}

/** Fuzzes the API at baseUrl; never throws for what the server does (that is in findings). */
export async function runFuzz(opts: FuzzOptions): Promise<FuzzResult> {
  const seed = opts.seed ?? Date.now() % 2 ** 31;
  const auth = { authorization: `Bearer ${opts.token}` };
  const doc = (await (await fetch(`${opts.baseUrl}/swagger/json`)).json()) as Parameters<typeof operationsOf>[0];
  const ops = [...operationsOf(doc), ...UNDOCUMENTED];
  if (ops.length === 0) throw new Error("the OpenAPI document lists no routes");
  const listVms = async (): Promise<{ id: string; name: string }[]> =>
    ((await (await fetch(`${opts.baseUrl}/api/v1/vms`, { headers: auth })).json()) as { vms?: { id: string; name: string }[] }).vms ?? [];
  const before = new Set((await listVms()).map((v) => v.id));
  let known: string[] = [];
  const refreshKnown = async () => {
    known = (await listVms().catch(() => [])).flatMap((v) => [v.id, v.name]);
  };
  await refreshKnown();

  // Made a batch at a time (a batch's seed follows from the run's): 20,000 requests with
  // bodies of up to 300 kB are too much to hold at once.
  const arbitrary = requestArbitrary(ops, () => known);
  const batch = (i: number) => fc.sample(arbitrary, { seed: (seed + i * 7919) | 0, numRuns: Math.min(BATCH, opts.requests - i * BATCH) });
  const findings = new Map<string, string>();
  const finding = (key: string, text: string) => {
    if (!findings.has(key)) findings.set(key, text);
  };
  let fiveXx = 0;
  let sent = 0;
  let maxRssMb = opts.pid ? rssMb(opts.pid) : 0;
  let next = 0;

  const checkpoint = async () => {
    if (opts.pid) {
      maxRssMb = Math.max(maxRssMb, rssMb(opts.pid));
      if (!existsSync(`/proc/${opts.pid}`)) finding("crash", `the server process ${opts.pid} is gone after ${sent} requests`);
    }
    const h = await fetch(`${opts.baseUrl}/api/v1/health`, { signal: AbortSignal.timeout(ANSWER_TIMEOUT_MS) }).then((r) => r.status, (e: Error) => e.name);
    if (h !== 200) finding(`health-${h}`, `/api/v1/health answered ${h} after ${sent} requests`);
    await refreshKnown();
  };

  let current: FuzzRequest[] = [];
  let batchNo = -1;
  const take = (): FuzzRequest | null => {
    if (next >= opts.requests) return null;
    const b = Math.floor(next / BATCH);
    if (b !== batchNo) {
      current = batch(b);
      batchNo = b;
    }
    return current[next++ % BATCH] ?? null;
  };

  const worker = async () => {
    for (let req = take(); req !== null; req = take()) {
      const { url, init } = toFetch(req, opts.baseUrl, opts.token);
      try {
        const res = await fetch(url, { ...init, signal: AbortSignal.timeout(ANSWER_TIMEOUT_MS) });
        const text = await readSome(res);
        if (res.status >= 500) {
          fiveXx++;
          finding(`${res.status} ${req.op.method} ${req.op.path} ${text.slice(0, 120)}`, describe(req, res.status, text));
        }
      } catch (e) {
        const name = (e as Error).name;
        finding(`error ${name} ${req.op.method} ${req.op.path}`, describe(req, name, (e as Error).message));
      }
      sent++;
      if (sent % CHECK_EVERY === 0) await checkpoint();
    }
  };
  await Promise.all(Array.from({ length: PARALLEL }, worker));
  await checkpoint();

  // Leave the server as it was: the VMs this run made go, cordoned hosts are uncordoned.
  for (const vm of await listVms().catch(() => [])) {
    if (!before.has(vm.id)) await fetch(`${opts.baseUrl}/api/v1/vms/${vm.id}`, { method: "DELETE", headers: auth }).catch(() => {});
  }
  const hosts = ((await (await fetch(`${opts.baseUrl}/api/v1/hosts`, { headers: auth })).json()) as { hosts?: { name: string }[] }).hosts ?? [];
  for (const h of hosts) await fetch(`${opts.baseUrl}/api/v1/hosts/${encodeURIComponent(h.name)}/uncordon`, { method: "POST", headers: auth });

  return { requests: sent, fiveXx, maxRssMb: Math.round(maxRssMb), findings: [...findings.values()] };
}

if (import.meta.main) {
  const arg = (name: string) => {
    const i = process.argv.indexOf(name);
    return i > 0 ? Number(process.argv[i + 1]) : undefined;
  };
  const requests = arg("--requests") ?? 20_000;
  const seed = arg("--seed") ?? Math.floor(Math.random() * 2 ** 31);
  const { spawnTestDriverServer } = await import("../test/helpers/serve-process.ts");
  const server = await spawnTestDriverServer(`rcfuzz-${process.pid}`);
  const t0 = performance.now();
  try {
    const startRss = rssMb(server.pid);
    const r = await runFuzz({ baseUrl: server.baseUrl, token: server.token, requests, pid: server.pid, seed });
    console.log(
      JSON.stringify({ requests: r.requests, five_xx: r.fiveXx, max_rss_mb: r.maxRssMb, start_rss_mb: Math.round(startRss), findings: r.findings, seed, seconds: Math.round((performance.now() - t0) / 1000) }),
    );
  } finally {
    await server.stop();
  }
  process.exit(0);
}
