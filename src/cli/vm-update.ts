/** `rcloud vm set` and `rcloud vm disk add|remove`: a VM changed in place (PATCH /vms/{id}). */
import type { ApiVm, UpdateVmRequest } from "../api-types/json.ts";
import type { Command, Context } from "./context.ts";
import { EXIT, usageError } from "./errors.ts";
import { parseDataDisk } from "./flags.ts";
import { pendingText } from "./render.ts";
import { formatMiB, parseDiskGiB, parseMemoryMiB } from "./units.ts";

/** A restart waits for a graceful stop (vm_defaults.stop_timeout_s) and a boot. */
const PATCH_TIMEOUT_MS = 15 * 60_000;

const restartFlag = { name: "restart", help: "stop the VM gracefully, apply, start it again (answers when it runs); without it, what the running VM cannot take live waits for its next stop and start" };

function positiveInt(v: string, flag: string): number {
  if (!/^\d+$/.test(v) || Number(v) < 1) throw usageError(`invalid ${flag} '${v}': expected a positive whole number`);
  return Number(v);
}

async function patch(ctx: Context, ref: string, body: UpdateVmRequest, done: (vm: ApiVm) => string): Promise<number> {
  if (ctx.bool("restart")) body.restart = true;
  const vm = await ctx.api.request<ApiVm>("PATCH", ctx.api.vmPath(ref), body, PATCH_TIMEOUT_MS);
  await ctx.emit(vm, () => `${done(vm)}${pendingNote(vm)}`);
  return EXIT.ok;
}

/** What waits for the next stop and start, and how to apply it now. */
function pendingNote(vm: ApiVm): string {
  if (!vm.restart_required || !vm.pending) return "";
  return `\nAt its next stop and start it gets: ${pendingText(vm.pending)} (rcloud vm set ${vm.name} --restart applies it now)`;
}

export const UPDATE_COMMANDS: Command[] = [
  {
    path: "vm set",
    args: "NAME",
    summary: "Change a VM's vCPUs, memory, root disk or direct boot in place",
    description:
      "Sizes take M/G/T suffixes (binary); plain numbers are MiB for memory and GiB for the disk. A running VM gets what it can take live: " +
      "memory up to its max memory (the balloon), more vCPUs up to its max vCPUs (hot-plug), a bigger root disk; the rest waits for its next " +
      "stop and start (shown as pending), or happens at once with --restart. The root disk only grows.",
    flags: [
      { name: "vcpus", value: "N", help: "virtual CPUs" },
      { name: "max-vcpus", value: "N", help: "vCPUs it may get later without a restart" },
      { name: "memory", value: "SIZE", help: "memory, e.g. 8G or 8192M (plain number: MiB)" },
      { name: "max-memory", value: "SIZE", help: "memory it may get later without a restart" },
      { name: "disk", value: "SIZE", help: "root disk size, e.g. 40G (grow only; plain number: GiB)" },
      { name: "kernel", value: "PATH", help: "direct kernel boot: kernel path on the server (inside vm_defaults.kernel_dir)", complete: "file" },
      { name: "initrd", value: "PATH", help: "direct kernel boot: initrd path on the server", complete: "file" },
      { name: "cmdline", value: "STRING", help: "direct kernel boot: kernel command line" },
      { name: "no-kernel", help: "turn direct kernel boot off (boot from the root disk)" },
      restartFlag,
    ],
    minArgs: 1,
    maxArgs: 1,
    completeArg: "vm",
    async run(ctx) {
      const body: UpdateVmRequest = {};
      const vcpus = ctx.flag("vcpus");
      if (vcpus !== undefined) body.vcpus = positiveInt(vcpus, "--vcpus");
      const maxVcpus = ctx.flag("max-vcpus");
      if (maxVcpus !== undefined) body.max_vcpus = positiveInt(maxVcpus, "--max-vcpus");
      const memory = ctx.flag("memory");
      if (memory !== undefined) body.memory_mb = parseMemoryMiB(memory);
      const maxMemory = ctx.flag("max-memory");
      if (maxMemory !== undefined) body.max_memory_mb = parseMemoryMiB(maxMemory);
      const disk = ctx.flag("disk");
      if (disk !== undefined) body.root_disk_gb = parseDiskGiB(disk, "--disk size");
      if (ctx.bool("no-kernel")) {
        if (["kernel", "initrd", "cmdline"].some((f) => ctx.flag(f) !== undefined)) throw usageError("--no-kernel does not go with --kernel, --initrd or --cmdline");
        body.kernel = null;
      }
      for (const f of ["kernel", "initrd", "cmdline"] as const) {
        const v = ctx.flag(f);
        if (v !== undefined) body[f] = v;
      }
      if (Object.keys(body).length === 0 && !ctx.bool("restart")) throw usageError("nothing to change: give --vcpus, --memory, --disk, --kernel, ... or --restart");
      return patch(ctx, ctx.args[0] as string, body, (vm) => `Changed VM ${vm.name}: ${vm.vcpus} vCPUs, ${formatMiB(vm.memory_mb)} memory, ${vm.state}`);
    },
  },
  {
    path: "vm disk",
    args: "add NAME SIZE[,type=T]... | remove NAME SERIAL...",
    summary: "Add data disks to a VM (after the last one) or remove them by serial",
    description:
      "add: each SIZE (plain number: GiB) becomes a new data disk whose serial continues from the VM's highest kdevopsN; T: virtio, nvme, scsi, ide. " +
      "remove: detaches and deletes the data disks with these serials (kdevops0, ...) and their data. A running VM takes virtio and SCSI disks " +
      "live; NVMe and IDE disks need it stopped, or --restart.",
    flags: [restartFlag],
    minArgs: 3,
    maxArgs: 40,
    async run(ctx) {
      const [action, ref, ...items] = ctx.args as string[];
      if (action === "add") {
        const add = items.map(parseDataDisk) as NonNullable<NonNullable<UpdateVmRequest["extra_disks"]>["add"]>;
        return patch(ctx, ref!, { extra_disks: { add } }, (vm) => `Added ${add.length} disk${add.length > 1 ? "s" : ""} to VM ${vm.name}: ${dataDisks(vm)}`);
      }
      if (action === "remove") {
        for (const s of items) if (!/^kdevops\d{1,4}$/.test(s)) throw usageError(`invalid serial '${s}': expected kdevops<N> (rcloud vm show ${ref} lists them)`);
        return patch(ctx, ref!, { extra_disks: { remove: items } }, (vm) => `Removed ${items.join(", ")} from VM ${vm.name}; its data disks: ${dataDisks(vm) || "none"}`);
      }
      throw usageError(`unknown action '${action}': rcloud vm disk add NAME SIZE[,type=T]... or rcloud vm disk remove NAME SERIAL...`);
    },
  },
];

function dataDisks(vm: ApiVm): string {
  return vm.disks
    .filter((d) => d.type === "data")
    .map((d) => `${d.serial ?? "?"} (${d.size_gb}G ${d.driver})`)
    .join(", ");
}
