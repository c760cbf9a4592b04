/**
 * Validation and planning of VM changes (PATCH /vms/{id}): every field is checked as on
 * create, against the VM as it is (and as its pending changes will make it), so nothing is
 * touched for a request that cannot succeed. The plan is a VmChange for the driver plus
 * what to do about the VM's run state; the service has the VM's host resolve boot files
 * (its kernel_dir) and adds capacity and quota checks.
 */
import { ServiceError } from "../api-types/errors.ts";
import type { UpdateVmRequest } from "../api-types/json.ts";
import { cmdlineProblem, DISK_BUSES, HOTPLUG_BUSES, isActiveState, isHotPluggable, reportedBus, VM_LIMITS } from "../api-types/values.ts";
import type { DataDiskSpec, DiskBus, VmBoot, VmChange, VmRecord } from "../drivers/types.ts";
import { bootPath, intIn, invalid, type ServiceDefaults } from "./validate-create.ts";

export interface UpdatePlan {
  change: VmChange;
  /** Stop the VM (gracefully) before changing it: `restart`, or `running: false`. */
  stopFirst: boolean;
  /** Start the VM after the change: `restart`, or `running: true` on a stopped VM. */
  startAfter: boolean;
  /** What the VM has once the change is applied and it runs: for capacity and quota checks. */
  next: { vcpus: number; memoryMb: number; diskGb: number };
}

/** The VM's definition as its next start will have it: what it runs with, overlaid by what is pending. */
export function effective(rec: VmRecord): { vcpus: number; maxVcpus: number; memoryMb: number; maxMemoryMb: number; boot: VmBoot | null } {
  const p = rec.pending ?? {};
  return {
    vcpus: p.vcpus ?? rec.vcpus,
    maxVcpus: p.maxVcpus ?? rec.maxVcpus,
    memoryMb: p.memoryMb ?? rec.memoryMb,
    maxMemoryMb: p.maxMemoryMb ?? rec.maxMemoryMb,
    boot: p.boot !== undefined ? p.boot : rec.boot,
  };
}

/** Data disks' total size plus the root disk's, in GiB (quota's disk_gb). */
export function diskGb(rec: VmRecord): number {
  return rec.disks.filter((d) => d.type === "root" || d.type === "data").reduce((n, d) => n + d.size_gb, 0);
}

/** The number in a kdevops serial (kdevops3 → 3); null for other serials. */
export function serialNumber(serial: string | null): number | null {
  const m = /^kdevops(\d{1,4})$/.exec(serial ?? "");
  return m ? Number(m[1]) : null;
}

/** Checks `req` against `rec` and the server's limits; throws a 422 naming the field. */
export function planUpdate(req: UpdateVmRequest, rec: VmRecord, d: ServiceDefaults): UpdatePlan {
  const active = isActiveState(rec.state);
  if (req.restart === true && req.running === false) throw invalid("restart", "restart and running: false do not go together");
  if (rec.state !== "stopped" && !active) throw new ServiceError("invalid_state", `${rec.name} is ${rec.state}; it can be changed when it runs or is stopped`);
  const stopFirst = active && (req.restart === true || req.running === false);
  const startAfter = (active && req.restart === true) || (!active && req.running === true);
  // Changes to a VM that stays up are made live where they can be.
  const staysUp = active && !stopFirst;
  const cur = effective(rec);
  const change: VmChange = {};

  // vCPUs and memory: a maximum left out follows a value that outgrows it.
  const vcpus = req.vcpus !== undefined ? intIn("vcpus", req.vcpus, VM_LIMITS.vcpus.min, VM_LIMITS.vcpus.max) : cur.vcpus;
  const maxVcpus = req.max_vcpus !== undefined ? intIn("max_vcpus", req.max_vcpus, VM_LIMITS.vcpus.min, VM_LIMITS.vcpus.max) : Math.max(cur.maxVcpus, vcpus);
  if (vcpus > maxVcpus) throw invalid(req.max_vcpus !== undefined ? "max_vcpus" : "vcpus", `vcpus (${vcpus}) must not exceed max_vcpus (${maxVcpus})`);
  if (req.memory_mb !== undefined && req.memory_gb !== undefined) throw invalid("memory_mb", "give memory_mb or memory_gb, not both");
  const memoryMb =
    req.memory_gb !== undefined ? intIn("memory_gb", req.memory_gb, VM_LIMITS.memoryGb.min, VM_LIMITS.memoryGb.max) * 1024 : req.memory_mb !== undefined ? intIn("memory_mb", req.memory_mb, VM_LIMITS.memoryMb.min, VM_LIMITS.memoryMb.max) : cur.memoryMb;
  const maxMemoryMb = req.max_memory_mb !== undefined ? intIn("max_memory_mb", req.max_memory_mb, VM_LIMITS.memoryMb.min, VM_LIMITS.memoryMb.max) : Math.max(cur.maxMemoryMb, memoryMb);
  if (memoryMb > maxMemoryMb) {
    throw invalid(req.max_memory_mb !== undefined ? "max_memory_mb" : req.memory_gb !== undefined ? "memory_gb" : "memory_mb", `memory (${memoryMb} MiB) must not exceed max_memory_mb (${maxMemoryMb})`);
  }
  if (vcpus !== cur.vcpus) change.vcpus = vcpus;
  if (maxVcpus !== cur.maxVcpus) change.maxVcpus = maxVcpus;
  if (memoryMb !== cur.memoryMb) change.memoryMb = memoryMb;
  if (maxMemoryMb !== cur.maxMemoryMb) change.maxMemoryMb = maxMemoryMb;

  // Root disk: grow only.
  const root = rec.disks.find((x) => x.type === "root");
  let rootGb = root?.size_gb ?? 0;
  if (req.root_disk_gb !== undefined) {
    const want = intIn("root_disk_gb", req.root_disk_gb, VM_LIMITS.diskGb.min, VM_LIMITS.diskGb.max);
    if (want < rootGb) throw invalid("root_disk_gb", `the root disk cannot shrink (it has ${rootGb} GiB); a smaller root disk needs a new VM`);
    if (want > rootGb) {
      change.rootDiskGb = want;
      rootGb = want;
    }
  }

  // Data disks: removed by serial, added after the last one.
  const data = rec.disks.filter((x) => x.type === "data");
  const remove = req.extra_disks?.remove ?? [];
  const add = req.extra_disks?.add ?? [];
  if (!Array.isArray(remove) || !Array.isArray(add)) throw invalid("extra_disks", "add and remove must be lists");
  const removed = new Set<string>();
  remove.forEach((serial, i) => {
    const field = `extra_disks.remove[${i}]`;
    const disk = data.find((x) => x.serial === serial);
    if (!disk) throw invalid(field, `${rec.name} has no data disk with serial '${String(serial).slice(0, 64)}' (it has ${data.map((x) => x.serial).join(", ") || "none"})`);
    if (removed.has(serial)) throw invalid(field, `${serial} is listed twice`);
    if (staysUp && !isHotPluggable(disk.driver)) throw notHotPluggable(field, disk.driver, rec.name);
    removed.add(serial);
  });
  const added: DataDiskSpec[] = add.map((x, i) => {
    const bus = (x.type ?? d.diskDriver) as DiskBus;
    if (!DISK_BUSES.includes(bus)) throw invalid(`extra_disks.add[${i}].type`, `must be one of ${DISK_BUSES.join(", ")}`);
    const sizeGb = intIn(`extra_disks.add[${i}].size_gb`, x.size_gb, VM_LIMITS.diskGb.min, VM_LIMITS.diskGb.max);
    if (staysUp && !isHotPluggable(reportedBus(bus))) throw notHotPluggable(`extra_disks.add[${i}].type`, reportedBus(bus), rec.name);
    return { sizeGb, bus };
  });
  const count = data.length - removed.size + added.length;
  if (count > d.maxExtraDisks) throw invalid("extra_disks", `at most ${d.maxExtraDisks} extra disks (vm_defaults.max_extra_disks); this would make ${count}`);
  const lastSerial = Math.max(-1, ...data.map((x) => serialNumber(x.serial) ?? -1));
  if (added.length > 0 && lastSerial + added.length > 9999) throw invalid("extra_disks.add", "serials would pass kdevops9999");
  if (removed.size > 0) change.removeDisks = [...removed];
  if (added.length > 0) change.addDisks = added;

  // Direct kernel boot: given fields replace the current ones; kernel: null turns it off.
  const boot = nextBoot(req, cur.boot);
  if (!sameBoot(boot, cur.boot)) change.boot = boot;

  const dataGb = data.filter((x) => !removed.has(x.serial ?? "")).reduce((n, x) => n + x.size_gb, 0) + added.reduce((n, x) => n + x.sizeGb, 0);
  return { change, stopFirst, startAfter, next: { vcpus, memoryMb, diskGb: rootGb + dataGb } };
}

function notHotPluggable(field: string, bus: string, name: string) {
  return invalid(field, `${bus} disks cannot be plugged into or out of a running VM (only ${HOTPLUG_BUSES.join(" and ")}); stop ${name} first or send "restart": true`);
}

/** The boot settings asked for; the paths' shape only: the service has the VM's host resolve them (its kernel_dir). */
function nextBoot(req: UpdateVmRequest, cur: VmBoot | null): VmBoot | null {
  if (req.kernel === undefined && req.initrd === undefined && req.cmdline === undefined) return cur;
  if (req.kernel === null) {
    if ((req.initrd ?? null) !== null || (req.cmdline ?? null) !== null) throw invalid("kernel", "initrd and cmdline need a kernel; kernel: null turns direct kernel boot off");
    return null;
  }
  const kernel = req.kernel !== undefined ? bootPath("kernel", req.kernel) : cur?.kernel;
  if (kernel === undefined) throw invalid("kernel", "is required when initrd or cmdline is given (the VM boots from its disk)");
  const initrd = req.initrd === undefined ? (cur?.initrd ?? null) : req.initrd === null ? null : bootPath("initrd", req.initrd);
  const cmdline = req.cmdline === undefined ? (cur?.cmdline ?? null) : req.cmdline;
  const cmdlineRefusal = cmdline === null ? null : cmdlineProblem(cmdline);
  if (cmdlineRefusal) throw invalid("cmdline", cmdlineRefusal);
  return { kernel, initrd, cmdline };
}

export function sameBoot(a: VmBoot | null, b: VmBoot | null): boolean {
  if (a === null || b === null) return a === b;
  return a.kernel === b.kernel && a.initrd === b.initrd && a.cmdline === b.cmdline;
}

export function isEmptyChange(c: VmChange): boolean {
  return Object.keys(c).length === 0;
}

/**
 * The change that takes `after` back to `before` as far as that can go: sizes, vCPUs and
 * boot as they were, disks added removed again (a grown root disk stays grown, a removed
 * disk stays removed).
 */
export function undoChange(before: VmRecord, after: VmRecord): VmChange {
  const b = effective(before);
  const a = effective(after);
  const undo: VmChange = {};
  if (a.vcpus !== b.vcpus) undo.vcpus = b.vcpus;
  if (a.maxVcpus !== b.maxVcpus) undo.maxVcpus = b.maxVcpus;
  if (a.memoryMb !== b.memoryMb) undo.memoryMb = b.memoryMb;
  if (a.maxMemoryMb !== b.maxMemoryMb) undo.maxMemoryMb = b.maxMemoryMb;
  if (!sameBoot(a.boot, b.boot)) undo.boot = b.boot;
  const had = new Set(before.disks.map((x) => x.serial));
  const added = after.disks.filter((x) => x.type === "data" && x.serial !== null && !had.has(x.serial)).map((x) => x.serial!);
  if (added.length > 0) undo.removeDisks = added;
  return undo;
}
