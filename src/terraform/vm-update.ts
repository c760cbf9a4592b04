/**
 * rcloud_vm changed in place (PATCH /vms/{id}): which planned changes the API can make
 * without a new VM, the data disk list as "kept disks, then new ones" (the API removes disks by
 * serial and adds them after the last one), and the request body for an apply.
 */
import type { ApiVm, UpdateVmRequest } from "../api-types/json.ts";
import { DISK_BUSES, type DiskBus, isDiskBus, reportedBus } from "../api-types/values.ts";
import { type CtyObject, type CtyValue, isUnknown, num, obj, str, UNKNOWN } from "./cty.ts";
import { type Diagnostic, type PathStep, warningDiag } from "./diagnostics.ts";

/**
 * The bus the server really uses for a requested disk type: it attaches ide disks as sata
 * (q35 has no IDE) and reports what it attached.
 */
export const busOf = (t: string): string => (isDiskBus(t) ? reportedBus(t) : t);

/** The requested type of a disk reported on `driver`: sata is how ide disks are reported. */
export const requestedBus = (driver: string): string => DISK_BUSES.find((b) => reportedBus(b) === driver) ?? driver;

/** Attributes a PATCH changes in place. */
export const UPDATABLE = ["vcpus", "max_vcpus", "memory_gb", "max_memory_gb", "root_disk_gb", "extra_disks", "kernel", "initrd", "cmdline"];

/**
 * How the planned data disks come from the prior ones: `kept[j]` is the prior index of planned
 * disk j, or null for a disk to add; a kept disk is one with the same size and bus, in order.
 * Every planned disk after the first new one is new too (the API adds disks at the end), so a
 * changed disk in the middle makes the disks after it new as well.
 */
export function diskDiff(prior: CtyValue[], planned: CtyValue[]): { kept: (number | null)[]; removed: number[] } {
  const kept: (number | null)[] = [];
  const removed: number[] = [];
  let j = 0;
  for (let i = 0; i < prior.length; i++) {
    const p = obj(prior[i]);
    const q = obj(planned[j]);
    if (p && q && j < planned.length && sameDisk(p, q)) {
      kept.push(i);
      j++;
    } else removed.push(i);
  }
  while (kept.length < planned.length) kept.push(null);
  return { kept, removed };
}

/** Same size and (when the configuration names one) the same bus. */
function sameDisk(prior: CtyObject, planned: CtyObject): boolean {
  if (prior.size_gb !== planned.size_gb) return false;
  const t = str(planned.type);
  if (isUnknown(planned.type) || planned.type === null || t === undefined) return true;
  return typeof prior.type === "string" && busOf(prior.type) === busOf(t);
}

/** The planned data disks: kept ones take the configured type (same bus) or else the prior's, new ones the configured type or unknown. */
export function planDataDisks(config: CtyValue[], prior: CtyValue[]): CtyValue[] {
  const { kept } = diskDiff(prior, config);
  return config.map((e, j) => {
    const disk = obj(e);
    if (!disk) return e;
    const i = kept[j];
    const before = i !== null && i !== undefined ? obj(prior[i]) : null;
    return { size_gb: disk.size_gb ?? null, type: before ? (disk.type ?? before.type ?? null) : (disk.type ?? UNKNOWN) };
  });
}

/** Warnings the plan shows for what an in-place update deletes. */
export function updateWarnings(prior: CtyObject, planned: CtyObject): Diagnostic[] {
  const before = Array.isArray(prior.extra_disks) ? prior.extra_disks : [];
  const after = Array.isArray(planned.extra_disks) ? planned.extra_disks : [];
  const { removed } = diskDiff(before, after);
  if (removed.length === 0) return [];
  const what = removed.map((i) => {
    const d = obj(before[i]);
    return `extra_disks[${i}] (${num(d?.size_gb) ?? "?"} GiB, ${str(d?.type) ?? "default bus"})`;
  });
  return [
    warningDiag(
      "Data disks will be deleted",
      `Applying this plan detaches and deletes ${what.join(", ")} with their data; disks are removed by position and added at the end, so a disk changed in the middle of the list is replaced together with the disks after it.`,
      ["extra_disks"],
    ),
  ];
}

/** Why a root disk change needs a new VM (a disk does not shrink); null when it can be made in place. */
export function rootShrink(prior: CtyObject, planned: CtyObject): Diagnostic | null {
  const a = num(prior.root_disk_gb);
  const b = num(planned.root_disk_gb);
  if (a === undefined || b === undefined || b >= a) return null;
  return warningDiag(
    "The VM will be replaced",
    `root_disk_gb goes from ${a} to ${b}: a root disk cannot shrink, so this VM is destroyed and a new one created (grow it instead, or keep ${a}).`,
    ["root_disk_gb"] as PathStep[],
  );
}

/** The PATCH body that takes the VM `vm` (as the API shows it now, prior state `prior`) to `planned`. */
export function updateBody(prior: CtyObject, planned: CtyObject, vm: ApiVm): UpdateVmRequest {
  const body: UpdateVmRequest = {};
  const changed = (k: string) => planned[k] !== prior[k] && planned[k] !== null && !isUnknown(planned[k] ?? null);
  if (changed("vcpus")) body.vcpus = num(planned.vcpus);
  if (changed("max_vcpus")) body.max_vcpus = num(planned.max_vcpus);
  if (changed("memory_gb")) body.memory_mb = Math.round((num(planned.memory_gb) ?? 0) * 1024);
  if (changed("max_memory_gb")) body.max_memory_mb = Math.round((num(planned.max_memory_gb) ?? 0) * 1024);
  if (changed("root_disk_gb")) body.root_disk_gb = num(planned.root_disk_gb);
  const before = Array.isArray(prior.extra_disks) ? prior.extra_disks : [];
  const after = Array.isArray(planned.extra_disks) ? planned.extra_disks : [];
  const { kept, removed } = diskDiff(before, after);
  const data = vm.disks.filter((d) => d.type === "data");
  if (removed.length > 0 || kept.includes(null)) {
    if (data.length !== before.length) {
      throw new Error(`VM ${vm.name} has ${data.length} data disks, the Terraform state ${before.length}; run terraform refresh (or apply -refresh-only) first`);
    }
    body.extra_disks = {};
    if (removed.length > 0) body.extra_disks.remove = removed.map((i) => data[i]!.serial ?? `kdevops${i}`);
    const add = after.filter((_, j) => kept[j] === null).map((e) => {
      const d = obj(e) ?? {};
      const t = str(d.type);
      return { size_gb: num(d.size_gb) ?? 0, ...(t !== undefined && isDiskBus(t) ? { type: t as DiskBus } : {}) };
    });
    if (add.length > 0) body.extra_disks.add = add;
  }
  if (["kernel", "initrd", "cmdline"].some((k) => planned[k] !== prior[k])) {
    body.kernel = str(planned.kernel) ?? null;
    body.initrd = str(planned.initrd) ?? null;
    body.cmdline = str(planned.cmdline) ?? null;
    if (body.kernel === null) {
      delete body.initrd;
      delete body.cmdline;
    }
  }
  return body;
}

/** A maximum left out of the configuration: the prior one, raised to a value that outgrows it (as the API does). */
export function planMaximum(configured: CtyValue | undefined, value: CtyValue, prior: CtyObject | null, key: string): CtyValue {
  if (configured !== null && configured !== undefined) return configured;
  if (!prior) return isUnknown(value) || value === null ? UNKNOWN : value;
  const before = num(prior[key]);
  if (isUnknown(value)) return UNKNOWN;
  const v = num(value);
  if (before === undefined) return v ?? UNKNOWN;
  return v === undefined ? before : Math.max(before, v);
}
