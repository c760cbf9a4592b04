/** A VM's guest memory dumps (on_panic: dump): listing them and streaming one from its host. */
import { ServiceError } from "../api-types/errors.ts";
import type { ApiDump } from "../api-types/json.ts";
import { DUMP_NAME_PATTERN } from "../api-types/values.ts";
import type { Caller } from "../auth/scope.ts";
import type { DumpReader } from "../drivers/types.ts";
import type { VmContext } from "./vm-context.ts";

const DUMP_NAME_RE = new RegExp(DUMP_NAME_PATTERN);

/** The VM's guest memory dumps, oldest first. */
export async function listDumps(ctx: VmContext, ref: string, caller: Caller | null): Promise<ApiDump[]> {
  const { host, rec } = await ctx.resolve(ref, caller);
  const list = await ctx.fleet.onHost(host, () => host.driver.dumps(rec.name));
  return list.map((d) => ({ name: d.name, size_bytes: d.sizeBytes, created_at: d.createdAt }));
}

/** One dump's bytes, streamed from its host; 404 dump_not_found for a name the VM has no dump by. */
export async function readDump(ctx: VmContext, ref: string, dump: string, caller: Caller | null): Promise<DumpReader & { vm: string }> {
  const { host, rec } = await ctx.resolve(ref, caller);
  // Names are rcloud's own: anything else (a path, '..') is refused before any host is asked.
  if (typeof dump !== "string" || !DUMP_NAME_RE.test(dump)) {
    throw new ServiceError("dump_not_found", `${rec.name} has no dump '${String(dump).slice(0, 64)}'; GET /api/v1/vms/${rec.name}/dumps lists them`);
  }
  try {
    const reader = await ctx.fleet.onHost(host, () => host.driver.readDump(rec.name, dump));
    return { ...reader, vm: rec.name };
  } catch (e) {
    if (e instanceof ServiceError && e.code === "not_found") {
      throw new ServiceError("dump_not_found", `${rec.name} has no dump '${dump}'; GET /api/v1/vms/${rec.name}/dumps lists them`);
    }
    throw e;
  }
}
