/** Booting a VM on a kernel of one's own: uploads of kernel and initrd, POST /boot, and kernel/initrd paths resolved on the VM's host. */
import { ServiceError } from "../api-types/errors.ts";
import type { ApiBootFile, ApiVm, BootVmRequest } from "../api-types/json.ts";
import type { Caller } from "../auth/scope.ts";
import type { VmBoot, VmRecord } from "../drivers/types.ts";
import { cmdlineProblem } from "../api-types/values.ts";
import { bootFileProblem, peekHead } from "./boot-upload-check.ts";
import { fromDriver } from "./errors.ts";
import type { Host } from "./hosts.ts";
import { effective, sameBoot, type UpdatePlan } from "./update.ts";
import { DEFAULT_MAX_KERNEL_BYTES, invalid } from "./validate-create.ts";
import { known, type VmContext } from "./vm-context.ts";

/**
 * PUT /vms/{id}/kernel|initrd: stores the body (exactly `sizeBytes`, streamed, never held
 * whole) as the VM's uploaded kernel or initrd on its host, after a look at its first
 * bytes. The previous upload stays until this one is complete. `data` is cancelled on any
 * refusal.
 */
export async function storeBootFile(ctx: VmContext, ref: string, kind: "kernel" | "initrd", sizeBytes: number | null, data: ReadableStream<Uint8Array> | null, caller: Caller | null): Promise<ApiBootFile> {
  let body = data;
  try {
    return await ctx.tracked(`upload_${kind}`, ref, caller, async () => {
      // Who may, then how much: nothing of the body is read before both.
      const found = await ctx.resolve(ref, caller);
      const limit = ctx.defaults.maxKernelBytes ?? DEFAULT_MAX_KERNEL_BYTES;
      if (sizeBytes === null) throw new ServiceError("length_required", `send the ${kind}'s size as Content-Length (a chunked body is not accepted here)`);
      if (sizeBytes > limit) throw new ServiceError("payload_too_large", `the ${kind} has ${sizeBytes} bytes; at most ${limit} are accepted (vm_defaults.max_kernel_bytes)`);
      if (sizeBytes === 0 || body === null) throw invalid("body", `is empty; send the ${kind} file as the request body`);
      const peeked = await peekHead(body);
      body = peeked.body;
      const problem = bootFileProblem(kind, peeked.head);
      if (problem) throw invalid("body", `the ${kind} ${problem}`);
      const stream = body;
      return ctx.lockedAt(found, ref, `upload_${kind}`, async (host, rec) => {
        const stored = await ctx.fleet.onHost(host, () => host.driver.storeBootFile(rec.name, kind, sizeBytes, stream));
        return { vm: rec.id, kind, size_bytes: stored.sizeBytes, path: stored.path };
      });
    });
  } catch (e) {
    await body?.cancel(e).catch(() => {});
    throw e;
  }
}

/**
 * POST /vms/{id}/boot: stops the VM (gracefully unless `force`), points its definition at
 * its uploaded kernel (and initrd) with `cmdline`, or back at booting from its disk, and
 * starts it. A VM that does not start that way is left stopped with that setting (the
 * error says so); `kernel: "image"` takes it back to its disk.
 */
export async function bootVm(ctx: VmContext, ref: string, req: BootVmRequest, caller: Caller | null): Promise<ApiVm> {
  return ctx.tracked("boot", ref, caller, async () => {
    const which = req.kernel ?? "uploaded";
    if (which !== "uploaded" && which !== "image") throw invalid("kernel", 'must be "uploaded" (the kernel sent with PUT /vms/{id}/kernel) or "image" (the image\'s own, from the disk)');
    const initrd = req.initrd ?? "uploaded";
    if (initrd !== "uploaded" && initrd !== "none") throw invalid("initrd", 'must be "uploaded" or "none"');
    if (req.cmdline !== undefined && req.cmdline !== null) {
      const problem = cmdlineProblem(req.cmdline);
      if (problem) throw invalid("cmdline", problem);
    }
    if (which === "image" && ((req.cmdline ?? null) !== null || req.initrd !== undefined)) {
      throw invalid(req.initrd !== undefined ? "initrd" : "cmdline", 'goes with kernel "uploaded" only: the image\'s kernel boots as its disk\'s boot loader says');
    }
    return ctx.underLock(ref, caller, "boot", async (host, rec) => {
      const driver = host.driver;
      const on = <T>(call: () => Promise<T>) => ctx.fleet.onHost(host, call);
      let boot: VmBoot | null = null;
      if (which === "uploaded") {
        const up = await on(() => driver.uploadedBootFiles(rec.name));
        if (!up.kernel) {
          throw new ServiceError("nothing_uploaded", `${rec.name} has no uploaded kernel; PUT it to /api/v1/vms/${rec.name}/kernel first (rcloud vm boot ${rec.name} --kernel FILE does both)`, { field: "kernel" });
        }
        const cmdline = req.cmdline !== undefined ? req.cmdline : (effective(rec).boot?.cmdline ?? null);
        boot = { kernel: up.kernel.path, initrd: initrd === "uploaded" ? (up.initrd?.path ?? null) : null, cmdline: cmdline === "" ? null : cmdline };
      }
      if (rec.state !== "stopped") {
        const force = req.force === true || rec.state === "crashed";
        await on(() => driver.stop(rec.name, { force, timeoutMs: ctx.defaults.stopTimeoutS * 1000 }));
        ctx.feed?.operated("stop", known(rec, host));
      }
      const stopped = await on(() => driver.get(rec.name));
      if (!stopped) throw new ServiceError("not_found", `VM '${rec.name}' disappeared`);
      if (!sameBoot(boot, effective(stopped).boot)) await on(() => driver.update(rec.name, { boot }));
      try {
        await on(() => driver.start(rec.name));
      } catch (e) {
        const err = fromDriver(e);
        // QEMU refusing the kernel is the kernel's fault, not the server's; a host that is away
        // stays 503, and an unexpected error stays internal (its message is for the log).
        const code = err.code === "internal_error" && !err.internal ? "boot_failed" : err.code;
        const on_ = which === "uploaded" ? "its uploaded kernel" : "its image's kernel";
        const back = which === "uploaded" ? `; POST /api/v1/vms/${rec.name}/boot {"kernel": "image"} boots it from its disk again` : "";
        throw new ServiceError(code, `${rec.name} did not start on ${on_}: ${err.message}; it is stopped and set to boot ${on_}${back}`, err.details, { cause: e, internal: err.internal });
      }
      ctx.feed?.operated("start", known(rec, host));
      return ctx.current(host, rec.name);
    });
  });
}

/** A kernel or initrd as the VM's host has it (in its kernel_dir); 422 naming the field and the host otherwise. */
export async function bootFile(ctx: VmContext, h: Host, field: "kernel" | "initrd", path: string): Promise<string> {
  try {
    return await ctx.fleet.onHost(h, () => h.driver.bootFile(field, path));
  } catch (e) {
    if (e instanceof ServiceError && (e.code === "not_found" || e.code === "unsupported")) {
      throw invalid(field, ctx.registry.hosts.length > 1 ? `${e.message} (on host ${h.name})` : e.message);
    }
    throw e;
  }
}

/** New kernel and initrd paths as the VM's host has them (its kernel_dir); unchanged files are no change. */
export async function resolveBoot(ctx: VmContext, host: Host, rec: VmRecord, plan: UpdatePlan): Promise<void> {
  const boot = plan.change.boot;
  if (!boot) return;
  const cur = effective(rec).boot;
  const kernel = boot.kernel === cur?.kernel ? boot.kernel : await bootFile(ctx, host, "kernel", boot.kernel);
  const initrd = boot.initrd === null || boot.initrd === cur?.initrd ? boot.initrd : await bootFile(ctx, host, "initrd", boot.initrd);
  const resolved = { kernel, initrd, cmdline: boot.cmdline };
  if (sameBoot(resolved, cur)) delete plan.change.boot;
  else plan.change.boot = resolved;
}
