/** `rcloud vm snapshot create|list|revert|delete`: a VM's internal snapshots (/vms/{id}/snapshots). */
import type { ApiSnapshot, ApiSnapshotDeleted, ApiVm, CreateSnapshotRequest } from "../api-types/json.ts";
import { isSnapshotName, SNAPSHOT_NAME_RULE } from "../api-types/values.ts";
import type { Command, Context } from "./context.ts";
import { EXIT, usageError } from "./errors.ts";
import { formatTable } from "./table.ts";
import { formatMiB } from "./units.ts";

/** Saving or loading a guest's memory on a slow, shared host takes a while. */
const SNAPSHOT_TIMEOUT_MS = 30 * 60_000;

const USAGE = "rcloud vm snapshot create NAME SNAPSHOT [--memory|--no-memory] | list NAME | revert NAME SNAPSHOT | delete NAME SNAPSHOT";

function snapshotName(v: string | undefined): string {
  if (v === undefined) throw usageError(`missing SNAPSHOT; usage: ${USAGE}`);
  if (!isSnapshotName(v)) throw usageError(`invalid snapshot name '${v}': ${SNAPSHOT_NAME_RULE}`);
  return v;
}

export function snapshotTable(list: ApiSnapshot[]): string {
  return formatTable(
    ["NAME", "CREATED", "MEMORY", "STATE", "VM STATE"],
    list.map((s) => [s.name, s.created_at, s.memory ? "yes" : "no", s.state, s.vm_state_bytes !== null ? formatMiB(Math.round(s.vm_state_bytes / 1024 ** 2)) : "-"]),
  );
}

function path(ctx: Context, ref: string, suffix = ""): string {
  return ctx.api.vmPath(ref, `/snapshots${suffix}`);
}

export const SNAPSHOT_COMMANDS: Command[] = [
  {
    path: "vm snapshot",
    args: "create|list|revert|delete NAME [SNAPSHOT]",
    summary: "Take, list, revert to or delete a VM's snapshots",
    description:
      "create: a running VM's snapshot holds its memory too (revert resumes it where it was); a stopped VM's holds its disks. " +
      "--memory / --no-memory insist on one kind (refused when the VM's state does not fit it). " +
      "revert: a memory snapshot leaves the VM running, a disk-only one leaves it stopped (what ran is powered off). " +
      "delete: removes the snapshot; the VM stays as it is. Deleting the VM deletes its snapshots.",
    flags: [
      { name: "memory", help: "create: the running VM's memory too (default when it runs)" },
      { name: "no-memory", help: "create: the disks of the stopped VM only (default when stopped)" },
    ],
    minArgs: 2,
    maxArgs: 3,
    async run(ctx) {
      const [action, ref, snap] = ctx.args as string[];
      if (action === "list") {
        if (snap !== undefined) throw usageError(`unexpected argument '${snap}'; usage: ${USAGE}`);
        const { snapshots } = await ctx.api.request<{ snapshots: ApiSnapshot[] }>("GET", path(ctx, ref!));
        await ctx.emit({ snapshots }, () => (snapshots.length ? snapshotTable(snapshots) : `VM ${ref} has no snapshots`), () => snapshots.map((s) => s.name));
        return EXIT.ok;
      }
      if (action === "create") {
        const body: CreateSnapshotRequest = { name: snapshotName(snap) };
        if (ctx.bool("memory") && ctx.bool("no-memory")) throw usageError("--memory and --no-memory exclude each other");
        if (ctx.bool("memory")) body.memory = true;
        if (ctx.bool("no-memory")) body.memory = false;
        const made = await ctx.api.request<ApiSnapshot>("POST", path(ctx, ref!), body, SNAPSHOT_TIMEOUT_MS);
        await ctx.emit(made, () => `Took snapshot ${made.name} of VM ${ref} (${made.memory ? "memory and disks" : "disks only"})`);
        return EXIT.ok;
      }
      if (action === "revert") {
        const name = snapshotName(snap);
        const vm = await ctx.api.request<ApiVm>("POST", path(ctx, ref!, `/${encodeURIComponent(name)}/revert`), undefined, SNAPSHOT_TIMEOUT_MS);
        await ctx.emit(vm, () => `Reverted VM ${vm.name} to snapshot ${name}; it is ${vm.state}`);
        return EXIT.ok;
      }
      if (action === "delete") {
        const name = snapshotName(snap);
        const res = await ctx.api.request<ApiSnapshotDeleted>("DELETE", path(ctx, ref!, `/${encodeURIComponent(name)}`), undefined, SNAPSHOT_TIMEOUT_MS);
        await ctx.emit(res, () => `Deleted snapshot ${res.name} of VM ${res.vm}`);
        return EXIT.ok;
      }
      throw usageError(`unknown action '${action}'; usage: ${USAGE}`);
    },
  },
];
