/**
 * Booting a kernel one just built: PUT /vms/{id}/kernel and /vms/{id}/initrd take the file as
 * the raw request body, streamed to the VM's host (server.max_body_bytes does not apply;
 * vm_defaults.max_kernel_bytes does, checked by the service before anything is read), and
 * POST /vms/{id}/boot restarts the VM on it, or back on its image's own kernel.
 */
import { Elysia, t } from "elysia";
import { ServiceError } from "../api-types/errors.ts";
import type { ApiBootFile, BootVmRequest } from "../api-types/json.ts";
import { CMDLINE_PATTERN, VM_LIMITS } from "../api-types/values.ts";
import type { Caller } from "../auth/index.ts";
import type { VmService } from "../vm/service.ts";
import { ErrorBody, Vm } from "./schemas.ts";

/** PUT /api/v1/vms/{id}/kernel|initrd: the routes whose bodies are files, not JSON. */
const UPLOAD_PATH = /^\/api\/v1\/vms\/[^/]+\/(?:kernel|initrd)$/;

/** Whether `request` is a boot-file upload (the app leaves its body unread for the route). */
export function isBootFileUpload(request: Request): boolean {
  return request.method === "PUT" && UPLOAD_PATH.test(new URL(request.url).pathname);
}

export interface BootRoutesOptions {
  service: VmService;
  /** The caller of a request (authenticated before any route runs). */
  callerOf: (request: Request) => Caller | null;
}

const errors = (...codes: number[]) => Object.fromEntries([401, ...codes].map((c) => [c, ErrorBody]));
const Ref = t.Object({ id: t.String({ description: "VM id (vm-xxxxxxxx) or name" }) });

const BootFile = t.Object({
  vm: t.String({ description: "VM id" }),
  kind: t.Union([t.Literal("kernel"), t.Literal("initrd")]),
  size_bytes: t.Integer(),
  path: t.String({ description: "Where the VM's host keeps it" }),
});

export const BootBody = t.Object(
  {
    kernel: t.Optional(t.Union([t.Literal("uploaded"), t.Literal("image")], { description: 'uploaded (default): the kernel sent with PUT /vms/{id}/kernel; image: the image\'s own (boot from the disk)' })),
    initrd: t.Optional(t.Union([t.Literal("uploaded"), t.Literal("none")], { description: "uploaded (default, when there is one) or none" })),
    cmdline: t.Optional(t.Nullable(t.String({ maxLength: VM_LIMITS.cmdlineMax, pattern: CMDLINE_PATTERN, description: "Kernel command line (printable characters); left out: the VM's current one" }))),
    force: t.Optional(t.Boolean({ description: "Power off at once instead of a graceful shutdown" })),
  },
  { additionalProperties: false },
);

function declaredLength(request: Request): number | null {
  const v = request.headers.get("content-length");
  return v !== null && /^\d{1,16}$/.test(v.trim()) ? Number(v.trim()) : null;
}

/** `body`, calling `done` once it has been read to its end. */
function onEnd(body: ReadableStream<Uint8Array> | null, done: () => void): ReadableStream<Uint8Array> | null {
  return body === null ? null : body.pipeThrough(new TransformStream<Uint8Array, Uint8Array>({ flush: done }));
}

type Server = { timeout(request: Request, seconds: number): void } | null;

export function bootRoutes(opts: BootRoutesOptions) {
  // The idle timeout holds while the body arrives (a client that stops sending is cut off);
  // storing the last bytes on the host may take longer.
  const upload = (kind: "kernel" | "initrd") => async (request: Request, server: Server, id: string): Promise<ApiBootFile> => {
    try {
      return await opts.service.storeBootFile(id, kind, declaredLength(request), onEnd(request.body, () => server?.timeout(request, 0)), opts.callerOf(request));
    } catch (e) {
      // The client went away mid-body: its fault, not the server's (logged as such, not as internal_error).
      if (request.signal.aborted) throw new ServiceError("bad_request", `the ${kind} upload was cut off by the client before all its bytes arrived; the previous upload is kept`, { field: "body" });
      throw e;
    }
  };
  const uploadDoc = (kind: "kernel" | "initrd") => ({
    params: Ref,
    parse: "none" as const,
    detail: {
      tags: ["vms"],
      summary: `Upload the VM's ${kind} (the raw file as the body, with Content-Length; at most vm_defaults.max_kernel_bytes)`,
      description:
        `Streamed to the VM's host and stored with its disks; it replaces the previous upload once complete. ` +
        `POST /vms/{id}/boot boots it. ${kind === "kernel" ? "An x86 bzImage or an ELF vmlinux." : "A cpio archive, plain or compressed."}`,
    },
    response: { 200: BootFile, ...errors(403, 404, 411, 413, 422, 503, 507) },
  });
  return new Elysia({ name: "rcloud-boot" })
    .put("/vms/:id/kernel", ({ request, server, params }) => upload("kernel")(request, server, params.id), uploadDoc("kernel"))
    .put("/vms/:id/initrd", ({ request, server, params }) => upload("initrd")(request, server, params.id), uploadDoc("initrd"))
    .post("/vms/:id/boot", ({ request, params, body }) => opts.service.boot(params.id, (body ?? {}) as BootVmRequest, opts.callerOf(request)), {
      params: Ref,
      body: t.Optional(BootBody),
      detail: {
        tags: ["vms"],
        summary: "Restart the VM on its uploaded kernel (direct boot) or on its image's own kernel",
        description: "Stops the VM (gracefully unless force), switches its boot, starts it; answers when it runs. A VM that does not start that way is left stopped, set to boot so.",
      },
      response: { 200: Vm, ...errors(403, 404, 409, 422, 503) },
    });
}
