/** The service's snapshot operations (list, create, revert, delete) on a VM, under its lock; the rules are snapshots.ts's. */
import { ServiceError } from "../api-types/errors.ts";
import type { ApiSnapshot, ApiSnapshotDeleted, ApiVm, CreateSnapshotRequest } from "../api-types/json.ts";
import type { Caller } from "../auth/scope.ts";
import type { VmRecord } from "../drivers/types.ts";
import { currentRequestId } from "../util/request-context.ts";
import type { Host } from "./hosts.ts";
import { checkSnapshotName, noSnapshot, snapshotKind, toApiSnapshot } from "./snapshots.ts";
import { known, type VmContext } from "./vm-context.ts";

export async function listSnapshots(ctx: VmContext, ref: string, caller: Caller | null): Promise<ApiSnapshot[]> {
  const { host, rec } = await ctx.resolve(ref, caller);
  return (await ctx.fleet.onHost(host, () => host.driver.snapshots(rec.name))).map(toApiSnapshot);
}

/** Takes a snapshot under the VM's lock: memory when it runs, its disks when stopped (snapshots.ts). */
export function createSnapshot(ctx: VmContext, ref: string, req: CreateSnapshotRequest, caller: Caller | null): Promise<ApiSnapshot> {
  return ctx.tracked("snapshot-create", ref, caller, () =>
    ctx.underLock(ref, caller, "snapshot_create", async (host, rec) => {
      const name = checkSnapshotName(req?.name);
      const memory = snapshotKind(rec, req?.memory);
      const existing = await ctx.fleet.onHost(host, () => host.driver.snapshots(rec.name));
      if (existing.some((s) => s.name === name)) throw new ServiceError("snapshot_exists", `${rec.name} already has a snapshot named '${name}'; delete it first or pick another name`, { field: "name" });
      const made = await ctx.fleet.onHost(host, () => host.driver.createSnapshot(rec.name, name, memory));
      ctx.feed?.snapshotted("snapshot-created", known(rec, host), name, currentRequestId());
      return toApiSnapshot(made);
    }),
  );
}

/** Reverts to a snapshot: a memory snapshot leaves the VM running where it was, a disk-only one stopped. */
export function revertSnapshot(ctx: VmContext, ref: string, snapshot: string, caller: Caller | null): Promise<ApiVm> {
  return ctx.tracked("snapshot-revert", ref, caller, () =>
    ctx.underLock(ref, caller, "snapshot_revert", async (host, rec) => {
      const name = await mustHaveSnapshot(ctx, host, rec, snapshot);
      await ctx.fleet.onHost(host, () => host.driver.revertSnapshot(rec.name, name));
      ctx.feed?.snapshotted("snapshot-reverted", known(rec, host), name, currentRequestId());
      return ctx.current(host, rec.name);
    }),
  );
}

export function deleteSnapshot(ctx: VmContext, ref: string, snapshot: string, caller: Caller | null): Promise<ApiSnapshotDeleted> {
  return ctx.tracked("snapshot-delete", ref, caller, () =>
    ctx.underLock(ref, caller, "snapshot_delete", async (host, rec) => {
      const name = await mustHaveSnapshot(ctx, host, rec, snapshot);
      await ctx.fleet.onHost(host, () => host.driver.deleteSnapshot(rec.name, name));
      ctx.feed?.snapshotted("snapshot-deleted", known(rec, host), name, currentRequestId());
      return { vm: rec.name, name, status: "deleted" as const };
    }),
  );
}

async function mustHaveSnapshot(ctx: VmContext, host: Host, rec: VmRecord, snapshot: string): Promise<string> {
  const name = checkSnapshotName(snapshot);
  const list = await ctx.fleet.onHost(host, () => host.driver.snapshots(rec.name));
  if (!list.some((s) => s.name === name)) throw noSnapshot(rec.name, name, list);
  return name;
}
