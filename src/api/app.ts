/**
 * The REST API (/api/v1) on Elysia. Thin: it validates shapes, calls the VM service and
 * maps ServiceError codes to statuses. Every error is JSON `{"error": {code, message}}`;
 * nothing internal (stack traces, libvirt internals beyond messages) reaches clients.
 */
import { swagger } from "@elysiajs/swagger";
import { Elysia, t } from "elysia";
import { bearerToken, type Caller, type TokenStore } from "../auth/index.ts";
import { enterRequest } from "../util/request-context.ts";
import { ServiceError } from "../api-types/errors.ts";
import type { ApiConsoleTicket, ApiStatus, CreateSnapshotRequest, CreateVmRequest, UpdateVmRequest } from "../api-types/json.ts";
import type { EventBus } from "../events/bus.ts";
import type { ConsoleSession, HostInfo, VmService } from "../vm/service.ts";
import type { Metrics } from "./metrics.ts";
import { ConsoleTickets } from "./console-tickets.ts";
import { eventRoutes } from "./events-routes.ts";
import { bootRoutes, isBootFileUpload } from "./boot-routes.ts";
import { apiReferencePage } from "./reference-page.ts";
import { isUiPath, uiPage } from "./ui-page.ts";
import { checkContentLength, checkJsonDepth, readBodyLimited, type RequestGuard } from "./request-guard.ts";
import { CopyImageBody, CreateSnapshotBody, CreateVmBody, DeleteResult, DumpList, ErrorBody, Flag, Host, Image, isTrue, QmpBody, Reconcile, Snapshot, SnapshotDeleted, SnapshotList, UpdateVmBody, Vm, VmList } from "./schemas.ts";

export interface AppOptions {
  version: string;
  log?: (level: "info" | "warn" | "error", msg: string, fields?: Record<string, unknown>) => void;
  metrics?: Metrics;
  /** API tokens; absent or null = authentication off (every request has full access). */
  auth?: { tokens: TokenStore; metricsOpen: boolean } | null;
  /** Host and Origin rules (server.public_names, server.allowed_origins); absent = none. */
  guard?: RequestGuard | null;
  /** server.max_body_bytes; default 1 MiB. */
  maxBodyBytes?: number;
  /** The event bus behind GET /events; absent = no events route. */
  events?: { bus: EventBus; heartbeatMs?: number } | null;
}

const DEFAULT_MAX_BODY_BYTES = 1024 * 1024;

/** Routes answered without a token even when auth is on. */
function isOpen(path: string, metricsOpen: boolean): boolean {
  if (path === "/api/v1/health" || path === "/swagger" || path.startsWith("/swagger/") || isUiPath(path)) return true;
  return path === "/metrics" && metricsOpen;
}

const errors = (...codes: number[]) => Object.fromEntries([401, ...codes].map((c) => [c, ErrorBody]));
const Ref = t.Object({ id: t.String({ description: "VM id (vm-xxxxxxxx) or name" }) });
const SnapshotRef = t.Object({ id: t.String({ description: "VM id (vm-xxxxxxxx) or name" }), name: t.String({ description: "Snapshot name" }) });
const HostRef = t.Object({ name: t.String({ description: "Host name (GET /hosts)" }) });

/** Hosts show the whole fleet's layout and load: admin tokens only (or auth off). */
function requireAdmin(caller: Caller | null, what: string): void {
  if (caller !== null && caller.role !== "admin") throw new ServiceError("forbidden", `${what} needs an admin token: hosts show every project's load`);
}
/** The console websocket; with ?ticket= it is authenticated by the ticket instead of a header. */
const ATTACH_PATH = /^\/api\/v1\/vms\/([^/]+)\/console\/attach$/;
/** Largest console log tail handed out at once. */
const MAX_CONSOLE_LOG_BYTES = 16 * 1024 * 1024;

/** A path's VM reference; a malformed escape (`%`, `%E0%A4%A`) names no VM, so it stays as sent. */
function decodedRef(raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    return raw;
  }
}

function errorJson(code: string, message: string, field?: unknown) {
  return { error: { code, message, ...(typeof field === "string" ? { field } : {}) } };
}

/** What a client is told of an unexpected error: never its text (host paths), but where to look. */
function internalErrorJson(requestId: string | undefined) {
  const ref = requestId ? ` (request id ${requestId})` : "";
  return errorJson("internal_error", `internal error${ref}: the server could not complete the request; its log has the details${requestId ? ` under request_id ${requestId}` : ""}`);
}

/** An error's message and its causes', for the log. */
function errorChain(e: unknown): string {
  const parts: string[] = [];
  for (let c: unknown = e, i = 0; c !== undefined && c !== null && i < 5; c = (c as Error).cause, i++) {
    parts.push(c instanceof Error ? (c.stack ?? `${c.name}: ${c.message}`) : String(c));
  }
  return parts.join("\ncaused by: ");
}

/** A readable message from Elysia's schema validation error. */
function validationMessage(error: unknown): { message: string; field?: string } {
  const e = error as { all?: { path?: string; message?: string; summary?: string; schema?: { description?: unknown } }[]; message?: string };
  const first = e.all?.[0];
  if (first) {
    const field = (first.path ?? "").replace(/^\//, "").replace(/\//g, ".");
    const extra = /additional|unexpected property/i.test(first.summary ?? first.message ?? "");
    // A pattern alone says little to a person: add the field's description from the schema.
    const hint = typeof first.schema?.description === "string" && /match/i.test(first.summary ?? "") ? ` (${first.schema.description})` : "";
    const msg = extra ? "unknown field" : `${first.summary ?? first.message ?? "invalid value"}${hint}`;
    return { message: field ? `${field}: ${msg}` : msg, ...(field ? { field } : {}) };
  }
  return { message: "the request body does not match the schema" };
}

export function createApp(service: VmService, opts: AppOptions) {
  const log = opts.log ?? (() => {});
  // Console sessions of open websockets, by socket id; and websockets whose session is being opened.
  const consoles = new Map<string, ConsoleSession>();
  const opening = new Map<string, { closed: boolean }>();
  // Per-request bookkeeping, keyed by the Request so it survives parse/validation errors.
  const started = new WeakMap<Request, { t0: number; id: string }>();
  // The caller of each request, established in onRequest (before any body is read).
  const callers = new WeakMap<Request, Caller | null>();
  const maxBody = opts.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const tickets = new ConsoleTickets();
  // Console attaches whose ticket was refused: the websocket says why (a browser sees no HTTP status).
  const refusals = new WeakMap<Request, ServiceError>();

  /** Who is calling; throws unauthorized. A request without a valid token learns nothing else. */
  const authenticate = (request: Request): Caller | null => {
    const url = new URL(request.url);
    const ticket = url.searchParams.get("ticket");
    const attach = ticket !== null ? ATTACH_PATH.exec(url.pathname) : null;
    if (ticket !== null && attach) {
      const redeemed = tickets.redeem(ticket, decodedRef(attach[1] ?? ""));
      if (redeemed instanceof ServiceError) {
        refusals.set(request, redeemed);
        return null;
      }
      return redeemed.caller;
    }
    const auth = opts.auth;
    if (!auth) return null;
    if (isOpen(url.pathname, auth.metricsOpen)) return null;
    const token = bearerToken(request.headers.get("authorization"));
    const caller = token === null ? null : auth.tokens.verify(token);
    if (caller === null) {
      throw new ServiceError(
        "unauthorized",
        token === null ? "an API token is required: send 'Authorization: Bearer <token>' (rcloud token create)" : "the API token is invalid or revoked",
      );
    }
    return caller;
  };

  return new Elysia({ normalize: false })
    .onRequest(({ request, set }) => {
      const given = request.headers.get("x-request-id");
      const id = given && /^[A-Za-z0-9._-]{1,64}$/.test(given) ? given : crypto.randomUUID();
      started.set(request, { t0: performance.now(), id });
      set.headers["x-request-id"] = id;
      enterRequest(id); // VM operation logs started by this request carry its id
      // In this order, before any body is read: browser pages of other sites, then the token,
      // then the declared size.
      opts.guard?.check(request);
      callers.set(request, authenticate(request));
      // Kernel uploads stream to the VM's host under their own limit (vm_defaults.max_kernel_bytes).
      if (!isBootFileUpload(request)) checkContentLength(request, maxBody);
    })
    // Bodies without Content-Length (chunked) are counted as they arrive and cut off at the
    // limit; bodies with one were checked above. JSON is parsed here, once its nesting depth
    // is known to be sane; other bodies with a length go to Elysia's own parsers.
    .onParse(async ({ request, contentType }) => {
      // A kernel upload's body is the route's to stream: a value here (null) stops Elysia's parsers.
      if (isBootFileUpload(request)) return null;
      if (request.body === null) return;
      const json = /[/+]json$/i.test(contentType.split(";")[0]?.trim() ?? "");
      const chunked = request.headers.get("content-length") === null;
      if (!json && !chunked) return;
      const text = chunked ? new TextDecoder().decode(await readBodyLimited(request, maxBody)) : await request.text();
      if (!json) return text;
      if (text.trim() === "") return null;
      checkJsonDepth(text);
      try {
        return JSON.parse(text) as unknown;
      } catch {
        throw new ServiceError("bad_request", "the request body is not valid JSON");
      }
    })
    // Bun closes a connection idle for idle_timeout_s even while its handler still works; a
    // create or a graceful stop can take minutes, so requests that change VMs are exempt, once
    // authenticated and their body is read.
    .onBeforeHandle({ as: "global" }, ({ request, server }) => {
      // Uploads: once their body is in (boot-routes.ts), so a client that stops sending is still cut off.
      if (request.method !== "GET" && request.method !== "HEAD" && !isBootFileUpload(request)) server?.timeout(request, 0);
    })
    .onAfterResponse(({ request, route, set }) => {
      const s = started.get(request);
      if (!s) return;
      const status = String(set.status ?? 200);
      const seconds = (performance.now() - s.t0) / 1000;
      const r = route || "unmatched";
      opts.metrics?.httpRequests.inc({ method: request.method, route: r, status });
      opts.metrics?.httpDuration.observe({ method: request.method, route: r, status }, seconds);
      log("info", "request", { request_id: s.id, method: request.method, route: r, status: Number(status), duration_ms: Math.round(seconds * 1000) });
    })
    .onError(({ code, error: raised, set, request }) => {
      // A ServiceError from onParse (a body over the limit) arrives wrapped in Elysia's ParseError.
      const cause = code === "PARSE" ? (raised as Error).cause : undefined;
      const error = cause instanceof ServiceError ? cause : raised;
      const requestId = started.get(request)?.id;
      if (error instanceof ServiceError) {
        set.status = error.status;
        if (error.code === "unauthorized") set.headers["www-authenticate"] = 'Bearer realm="rcloud"';
        if (error.internal) {
          set.status = 500;
          log("error", error.message, { code: error.code, path: new URL(request.url).pathname, request_id: requestId, error: errorChain(error.cause) });
          return internalErrorJson(requestId);
        }
        if (error.status >= 500) {
          log(error.status === 503 || error.status === 507 ? "warn" : "error", error.message, { code: error.code, path: new URL(request.url).pathname, request_id: requestId });
        }
        // The log has the message whole; the answer not the user name or local paths of a host's URI.
        return errorJson(error.code, service.redact(error.message), error.details?.field);
      }
      switch (code) {
        case "VALIDATION": {
          set.status = 422;
          const v = validationMessage(error);
          return errorJson("validation_error", v.message, v.field);
        }
        case "PARSE":
          set.status = 400;
          return errorJson("bad_request", "the request body is not valid JSON");
        case "NOT_FOUND":
          set.status = 404;
          return errorJson("not_found", `no route ${request.method} ${new URL(request.url).pathname}; see /swagger`);
        default:
          set.status = 500;
          log("error", "unhandled error", { path: new URL(request.url).pathname, request_id: requestId, error: errorChain(error) });
          return internalErrorJson(requestId);
      }
    })
    .derive(({ request }): { caller: Caller | null; refusal: ServiceError | null } => ({ caller: callers.get(request) ?? null, refusal: refusals.get(request) ?? null }))
    .get(
      "/metrics",
      async ({ set, caller }) => {
        if (!opts.metrics) {
          set.status = 404;
          return errorJson("not_found", "metrics are disabled");
        }
        // Every project's VMs are in there (names, CPU time): monitoring scrapes with an admin token.
        if (caller !== null && caller.role !== "admin") {
          throw new ServiceError("forbidden", "/metrics covers every project's VMs and needs an admin token; scrape it with an admin (monitoring) token, or set auth.metrics_open");
        }
        set.headers["content-type"] = opts.metrics.registry.contentType;
        return opts.metrics.scrape();
      },
      { detail: { tags: ["system"], summary: "Prometheus metrics" } },
    )
    .use(
      swagger({
        path: "/swagger",
        documentation: {
          info: { title: "rcloud API", version: opts.version, description: "Disposable VMs for kernel developers, on libvirt or QEMU." },
          tags: [
            { name: "vms", description: "Virtual machines" },
            { name: "images", description: "Base images" },
            { name: "hosts", description: "Hypervisor hosts of the fleet" },
            { name: "system", description: "Health and capacity" },
            { name: "events", description: "What happens to VMs, as it happens" },
          ],
          // Lets the reference page send a token ("Authorize") when auth is on.
          ...(opts.auth ? { components: { securitySchemes: { bearer: { type: "http", scheme: "bearer" } } }, security: [{ bearer: [] }] } : {}),
        },
      }),
    )
    .use(apiReferencePage)
    .use(uiPage)
    .group("/api/v1", (api) =>
      api
        .use(bootRoutes({ service, callerOf: (r) => callers.get(r) ?? null }))
        .use(opts.events ? eventRoutes({ bus: opts.events.bus, callerOf: (r) => callers.get(r) ?? null, heartbeatMs: opts.events.heartbeatMs }) : new Elysia())
        .get(
          "/health",
          async ({ set, request }) => {
            // Open to all; what went wrong on which host (its last error) is for token holders.
            const token = opts.auth ? bearerToken(request.headers.get("authorization")) : null;
            const brief = opts.auth ? token === null || opts.auth.tokens.verify(token) === null : false;
            const h = service.health({ brief });
            if (!h.ok) set.status = 503;
            return { status: h.ok ? "healthy" : "unhealthy", version: opts.version, driver: service.driverKind, hypervisor: h };
          },
          {
            detail: { tags: ["system"], summary: "Liveness and hypervisor connectivity" },
            response: {
              200: t.Object({ status: t.String(), version: t.String(), driver: t.String(), hypervisor: t.Object({ ok: t.Boolean(), detail: t.String() }) }),
              503: t.Object({ status: t.String(), version: t.String(), driver: t.String(), hypervisor: t.Object({ ok: t.Boolean(), detail: t.String() }) }),
            },
          },
        )
        .get(
          "/status",
          async ({ caller }) => {
            const s = await service.status(caller);
            const infos = s.hosts.map((x) => x.info).filter((i): i is HostInfo => i !== null);
            const h = infos[0]!; // status() answers 503 when no host does
            const one = s.hosts.length === 1 ? h : null;
            const sum = (f: (i: HostInfo) => number | null) => infos.reduce<number | null>((n, i) => (n === null || f(i) === null ? null : n + f(i)!), 0);
            const count = (state: string) => s.hosts.filter((x) => x.state === state).length;
            const full: ApiStatus = {
              status: "operational",
              version: opts.version,
              driver: h.driver,
              uri: one?.uri ?? null,
              hostname: one?.hostname ?? null,
              hypervisor: h.hypervisor,
              hypervisor_version: h.hypervisorVersion,
              libvirt_version: h.libvirtVersion,
              cpus: sum((i) => i.cpus) ?? 0,
              memory_mb: sum((i) => i.memoryMb) ?? 0,
              free_memory_mb: sum((i) => i.freeMemoryMb),
              allocated: s.allocated,
              vms_by_state: s.vms,
              hosts: { total: s.hosts.length, online: count("online"), offline: count("offline"), cordoned: count("cordoned") },
              storage: one?.storage
                ? {
                    pool: one.storage.pool,
                    path: one.storage.path,
                    capacity_bytes: one.storage.capacityBytes,
                    allocation_bytes: one.storage.allocationBytes,
                    available_bytes: one.storage.availableBytes,
                  }
                : null,
            };
            if (caller === null || caller.role === "admin") return full;
            // A project token sees its own VMs (counted above) and the host's size, nothing of
            // other tenants or the host's layout: no URI, host name, free memory or storage pool,
            // whose usage shows the other projects' load.
            return { ...full, project: caller.project, uri: null, hostname: null, free_memory_mb: null, storage: null };
          },
          { detail: { tags: ["system"], summary: "Fleet capacity and usage" }, response: { 503: ErrorBody } },
        )
        .get("/hosts", async ({ caller }) => {
          requireAdmin(caller, "listing hosts");
          return { hosts: await service.hosts() };
        }, {
          detail: { tags: ["hosts"], summary: "The hypervisor hosts: state, capacity, allocation" },
          response: { 200: t.Object({ hosts: t.Array(Host) }), ...errors(403) },
        })
        .get("/hosts/:name", ({ params, caller }) => {
          requireAdmin(caller, "reading hosts");
          return service.host(params.name);
        }, {
          params: HostRef,
          detail: { tags: ["hosts"], summary: "One host" },
          response: { 200: Host, ...errors(403, 404) },
        })
        .post("/hosts/:name/cordon", ({ params, caller }) => {
          requireAdmin(caller, "cordoning hosts");
          return service.cordon(params.name, true);
        }, {
          params: HostRef,
          detail: { tags: ["hosts"], summary: "Cordon a host: it takes no new VMs (kept across restarts)" },
          response: { 200: Host, ...errors(403, 404) },
        })
        .post("/hosts/:name/uncordon", ({ params, caller }) => {
          requireAdmin(caller, "uncordoning hosts");
          return service.cordon(params.name, false);
        }, {
          params: HostRef,
          detail: { tags: ["hosts"], summary: "Uncordon a host: it takes new VMs again" },
          response: { 200: Host, ...errors(403, 404) },
        })
        .post("/reconcile", ({ caller }) => {
          if (caller !== null && caller.role !== "admin") throw new ServiceError("forbidden", "reconcile needs an admin token: it removes artefacts of every project's VMs");
          return service.reconcile();
        }, {
          detail: { tags: ["system"], summary: "Finish or remove what creates and deletes cut short left, on every host that answers (also run at start)" },
          response: { 200: Reconcile, ...errors(403) },
        })
        .get("/images", async () => ({ images: await service.images() }), {
          detail: { tags: ["images"], summary: "List base images, with the hosts that hold each" },
          response: { 200: t.Object({ images: t.Array(Image) }) },
        })
        .get("/images/:id", ({ params }) => service.image(params.id), {
          params: Ref,
          detail: { tags: ["images"], summary: "One base image, by id, file name or alias" },
          response: { 200: Image, ...errors(404) },
        })
        .post("/images/:id/copy", ({ params, body, caller }) => service.copyImage(params.id, body.to, body.from, caller), {
          params: Ref,
          body: CopyImageBody,
          detail: { tags: ["images"], summary: "Copy a base image to another host (streamed between the hosts' pools)" },
          response: { 200: Image, ...errors(403, 404, 409, 422, 503, 507) },
        })
        .get(
          "/vms",
          async ({ query, caller }) => {
            // A Response, not the Blob: Elysia would answer Range requests for a Blob.
            return new Response(await service.listJson(caller, { host: query.host }), { headers: { "content-type": "application/json;charset=utf-8" } });
          },
          {
            query: t.Object({ host: t.Optional(t.String({ maxLength: 63, description: "only the VMs of this host" })) }),
            // The body is made of JSON the service keeps per VM (src/vm/api-vm.ts); the 200 body is
            // documented, not checked again on the way out: for a fleet of 900 VMs that check, and
            // serialising every VM again, cost more than the listing itself (docs/benchmarks.md, bench:hosts).
            detail: {
              tags: ["vms"],
              summary: "List VMs (a host that does not answer within 1.5 s shows its VMs as unknown)",
              responses: { 200: { description: "The VMs", content: { "application/json": { schema: VmList as unknown as Record<string, unknown> } } } },
            },
            response: errors(404, 503),
          },
        )
        .post(
          "/vms",
          async ({ body, set, caller }) => {
            const vm = await service.create(body as CreateVmRequest, caller);
            set.status = 201;
            return vm;
          },
          {
            body: CreateVmBody,
            detail: { tags: ["vms"], summary: "Create (and by default start) a VM" },
            response: { 201: Vm, ...errors(400, 403, 409, 422, 500, 503, 507) },
          },
        )
        .get("/vms/:id", ({ params, caller }) => service.get(params.id, caller), {
          params: Ref,
          detail: { tags: ["vms"], summary: "One VM, by id or name" },
          response: { 200: Vm, ...errors(403, 404, 503) },
        })
        .patch("/vms/:id", ({ params, body, caller }) => service.update(params.id, body as UpdateVmRequest, caller), {
          params: Ref,
          body: UpdateVmBody,
          detail: {
            tags: ["vms"],
            summary: "Change a VM in place: sizes, data disks, direct boot, run state",
            description:
              "Live where the hypervisor can (data disks on virtio/SCSI, root disk growth, memory up to max_memory_mb, more vCPUs up to max_vcpus); " +
              "the rest waits for the next stop and start (restart_required, pending), or happens at once with restart: true.",
          },
          response: { 200: Vm, ...errors(403, 404, 409, 422, 501, 503, 507) },
        })
        .delete("/vms/:id", ({ params, caller }) => service.delete(params.id, caller), {
          params: Ref,
          detail: { tags: ["vms"], summary: "Destroy a VM and its disks" },
          response: { 200: DeleteResult, ...errors(403, 404, 409, 503) },
        })
        .post("/vms/:id/start", ({ params, caller }) => service.start(params.id, caller), {
          params: Ref,
          detail: { tags: ["vms"], summary: "Start a stopped VM (or resume a paused one)" },
          response: { 200: Vm, ...errors(403, 404, 409, 503) },
        })
        .post(
          "/vms/:id/stop",
          ({ params, query, caller }) =>
            service.stop(
              params.id,
              {
                force: isTrue(query.force),
                timeoutS: query.timeout !== undefined ? Number(query.timeout) : undefined,
              },
              caller,
            ),
          {
            params: Ref,
            query: t.Object({
              force: t.Optional(Flag("true (or 1): power off at once, no ACPI shutdown; false (or 0, the default): ACPI shutdown first")),
              timeout: t.Optional(t.String({ pattern: "^[0-9]{1,4}$", description: "seconds (0 to 3600) to wait for the guest to shut down before forcing" })),
            }),
            detail: { tags: ["vms"], summary: "Stop a VM: ACPI shutdown, then forced after the timeout" },
            response: { 200: Vm, ...errors(403, 404, 409, 422, 503) },
          },
        )
        .post("/vms/:id/reboot", ({ params, caller }) => service.reboot(params.id, caller), {
          params: Ref,
          detail: { tags: ["vms"], summary: "Reboot a running VM" },
          response: { 200: Vm, ...errors(403, 404, 409, 503) },
        })
        .get("/vms/:id/snapshots", async ({ params, caller }) => ({ snapshots: await service.snapshots(params.id, caller) }), {
          params: Ref,
          detail: { tags: ["snapshots"], summary: "The VM's snapshots, oldest first" },
          response: { 200: SnapshotList, ...errors(403, 404, 409, 503) },
        })
        .post(
          "/vms/:id/snapshots",
          async ({ params, body, set, caller }) => {
            const snap = await service.createSnapshot(params.id, body as CreateSnapshotRequest, caller);
            set.status = 201;
            return snap;
          },
          {
            params: Ref,
            body: CreateSnapshotBody,
            detail: {
              tags: ["snapshots"],
              summary: "Take a snapshot: of a running VM with its memory, of a stopped VM its disks",
              description: "Internal qcow2 snapshots of every writable disk (the cloud-init seed CD-ROM is left out). 409 snapshot_exists when the name is taken, 409 invalid_state when memory does not fit the VM's state.",
            },
            response: { 201: Snapshot, ...errors(403, 404, 409, 422, 501, 503, 507) },
          },
        )
        .post("/vms/:id/snapshots/:name/revert", ({ params, caller }) => service.revertSnapshot(params.id, params.name, caller), {
          params: SnapshotRef,
          detail: {
            tags: ["snapshots"],
            summary: "Revert the VM to a snapshot",
            description: "A memory snapshot leaves the VM running exactly where it was when taken; a disk-only one leaves it stopped with its disks as they were (what ran is powered off).",
          },
          response: { 200: Vm, ...errors(403, 404, 409, 422, 503) },
        })
        .delete("/vms/:id/snapshots/:name", ({ params, caller }) => service.deleteSnapshot(params.id, params.name, caller), {
          params: SnapshotRef,
          detail: { tags: ["snapshots"], summary: "Delete a snapshot (the VM stays as it is)" },
          response: { 200: SnapshotDeleted, ...errors(403, 404, 409, 422, 503) },
        })
        .get("/vms/:id/console", ({ params, caller }) => service.console(params.id, caller), {
          params: Ref,
          detail: { tags: ["vms"], summary: "How to reach the VM's serial console (and SSH)" },
          response: {
            200: t.Object({
              type: t.String(),
              log_file: t.Nullable(t.String({ description: "Host file the serial console is logged to, when known" })),
              logFile: t.Nullable(t.String({ description: "Deprecated: the same as log_file; will be removed" })),
              command: t.Nullable(t.String()),
              ssh: t.Nullable(t.Object({ host: t.String(), port: t.Integer(), user: t.String() })),
            }),
            ...errors(403, 404, 503),
          },
        })
        .post(
          "/vms/:id/console",
          async ({ params, caller, request }): Promise<ApiConsoleTicket> => {
            const vm = (await service.resolve(params.id, caller)).rec;
            const { ticket, expiresAt } = tickets.issue({ id: vm.id, name: vm.name }, caller);
            const url = new URL(`/api/v1/vms/${encodeURIComponent(vm.id)}/console/attach`, request.url);
            url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
            url.searchParams.set("ticket", ticket);
            return { url: url.href, ticket, expires_at: expiresAt.toISOString() };
          },
          {
            params: Ref,
            detail: {
              tags: ["vms"],
              summary: "A single-use console ticket for browsers (valid 30 s): open `url` as a websocket, no Authorization header needed",
            },
            response: { 200: t.Object({ url: t.String(), ticket: t.String(), expires_at: t.String() }), ...errors(403, 404, 503) },
          },
        )
        .get("/vms/:id/dumps", async ({ params, caller }) => ({ dumps: await service.dumps(params.id, caller) }), {
          params: Ref,
          detail: { tags: ["vms"], summary: "The VM's guest memory dumps (on_panic: dump), oldest first; deleted with the VM" },
          response: { 200: DumpList, ...errors(403, 404, 503) },
        })
        .get(
          "/vms/:id/dumps/:dump",
          async ({ params, caller }) => {
            const d = await service.readDump(params.id, params.dump, caller);
            // Streamed from the host as it is read: a dump is as large as the guest's memory.
            return new Response(d.data, {
              headers: {
                "content-type": "application/octet-stream",
                "content-length": String(d.sizeBytes),
                "content-disposition": `attachment; filename="${d.vm}-${params.dump}"`,
                "x-content-type-options": "nosniff",
              },
            });
          },
          {
            params: t.Object({ id: t.String({ description: "VM id (vm-xxxxxxxx) or name" }), dump: t.String({ maxLength: 64, description: "A name from GET /vms/{id}/dumps" }) }),
            detail: { tags: ["vms"], summary: "Download one guest memory dump (an ELF core); 404 dump_not_found for a name the VM has no dump by" },
            response: { 200: t.Any({ description: "The dump's bytes (application/octet-stream)" }), ...errors(403, 404, 503) },
          },
        )
        .get(
          "/vms/:id/console/log",
          async ({ params, query, caller }) => {
            const tail = query.tail === undefined ? MAX_CONSOLE_LOG_BYTES : Number(query.tail);
            if (!Number.isInteger(tail) || tail < 0 || tail > MAX_CONSOLE_LOG_BYTES) {
              throw new ServiceError("validation_error", `tail: expected a number of bytes between 0 and ${MAX_CONSOLE_LOG_BYTES}`, { field: "tail" });
            }
            const bytes = await service.consoleLog(params.id, tail, caller);
            return new Response(bytes, { headers: { "content-type": "text/plain; charset=utf-8", "x-content-type-options": "nosniff" } });
          },
          {
            params: Ref,
            query: t.Object({ tail: t.Optional(t.String({ pattern: "^[0-9]{1,8}$", description: "bytes from the end of the log, a whole number (default and most: 16 MiB)" })) }),
            detail: { tags: ["vms"], summary: "The end of the VM's serial console log, as text" },
            response: { 200: t.String(), ...errors(403, 404, 422, 501, 503) },
          },
        )
        // Interactive serial console: binary frames both ways. Errors arrive as one text frame
        // {"error": {...}} followed by a close with code 4000 + the HTTP status. Browsers
        // authenticate with ?ticket= (POST /vms/{id}/console), other clients with the header.
        .ws("/vms/:id/console/attach", {
          async open(ws) {
            const { params, caller, refusal } = ws.data as unknown as { params: { id: string }; caller: Caller | null; refusal: ServiceError | null };
            const pending = { closed: false };
            opening.set(ws.id, pending);
            try {
              if (refusal) throw refusal;
              const session = await service.openConsole(params.id, caller);
              if (pending.closed) {
                // The client left while the console was being opened: let go of it at once
                // (QEMU's serial socket serves one client at a time).
                await session.close().catch(() => {});
                return;
              }
              consoles.set(ws.id, session);
              void (async () => {
                try {
                  for await (const chunk of session.output) ws.sendBinary(chunk);
                } catch {
                  // the console went away (VM stopped, taken over); close below says so
                }
                consoles.delete(ws.id);
                ws.close(1000, "console closed");
              })();
            } catch (e) {
              const err = e instanceof ServiceError ? e : new ServiceError("internal_error", "could not attach to the console");
              if (err.internal) log("error", err.message, { code: err.code, path: "console attach", error: errorChain(err.cause) });
              ws.send(JSON.stringify(err.internal ? internalErrorJson(undefined) : errorJson(err.code, service.redact(err.message))));
              ws.close(4000 + err.status, err.code);
            } finally {
              opening.delete(ws.id);
            }
          },
          message(ws, message) {
            const session = consoles.get(ws.id);
            if (!session) return;
            const bytes =
              typeof message === "string"
                ? new TextEncoder().encode(message)
                : message instanceof Uint8Array
                  ? message
                  : message instanceof ArrayBuffer
                    ? new Uint8Array(message)
                    : new TextEncoder().encode(JSON.stringify(message));
            void session.write(bytes).catch(() => {});
          },
          close(ws) {
            const pending = opening.get(ws.id);
            if (pending) pending.closed = true;
            const session = consoles.get(ws.id);
            consoles.delete(ws.id);
            void session?.close().catch(() => {});
          },
        })
        .post("/vms/:id/qmp", ({ params, body, caller }) => service.qmp(params.id, body.execute, body.arguments, caller), {
          params: Ref,
          body: QmpBody,
          detail: { tags: ["vms"], summary: "Read-only QMP passthrough (query-* commands)" },
          response: { 200: t.Unknown(), ...errors(403, 404, 409, 422, 503) },
        }),
    );
}
