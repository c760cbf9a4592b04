/**
 * Project scoping and per-project quotas, given a Caller (see tokens.ts). The VM service calls
 * these; the HTTP layer only resolves the caller. A null caller means authentication is off:
 * full access, like an admin.
 */
import { ServiceError } from "../api-types/errors.ts";
import { type Caller, PROJECT_RE } from "./tokens.ts";

export type { Caller, Role } from "./tokens.ts";

/** Limits of one project; a missing (or null) limit is unlimited. */
export interface Quota {
  vms?: number | null;
  vcpus?: number | null;
  memory_mb?: number | null;
  disk_gb?: number | null;
}

export interface Usage {
  vms: number;
  vcpus: number;
  memory_mb: number;
  disk_gb: number;
}

export interface QuotaConfig {
  quotas: Readonly<Record<string, Quota>>;
  default_quota: Quota | null;
}

export function quotaFor(cfg: QuotaConfig | null, project: string): Quota | null {
  if (!cfg) return null;
  return cfg.quotas[project] ?? cfg.default_quota ?? null;
}

/** May `caller` see or touch a VM owned by `owner`? */
export function canAccess(caller: Caller | null, owner: string | null): boolean {
  if (caller === null || caller.role === "admin") return true;
  return caller.project !== null && owner === caller.project;
}

/** Throws 403 unless the caller may touch the VM. */
export function assertAccess(caller: Caller | null, owner: string | null, vmName: string): void {
  if (!canAccess(caller, owner)) {
    throw new ServiceError("forbidden", `VM '${vmName}' belongs to another project; your token is for project '${caller?.project ?? ""}'`);
  }
}

/** The project a new VM goes to: a user's own project; whatever an admin asks for (or none). */
export function projectForCreate(caller: Caller | null, requested: string | undefined): string | null {
  if (caller !== null && caller.role === "user") {
    if (requested !== undefined && requested !== caller.project) {
      throw new ServiceError("forbidden", `project: your token is for project '${caller.project}' and may not create VMs in '${requested}'`, { field: "project" });
    }
    return caller.project;
  }
  if (requested !== undefined && !PROJECT_RE.test(requested)) {
    throw new ServiceError("validation_error", "project: must be 1-64 lower-case letters, digits, '-' or '_', starting and ending with a letter or digit", { field: "project" });
  }
  return requested ?? null;
}

/** Throws 403 quota_exceeded naming every limit `usage + add` goes over. */
export function checkQuota(project: string, quota: Quota | null, usage: Usage, add: Usage): void {
  if (!quota) return;
  const over: string[] = [];
  const fields: Record<string, { limit: number; used: number; requested: number }> = {};
  const units: Record<keyof Usage, string> = { vms: "VMs", vcpus: "vCPUs", memory_mb: "MiB of memory", disk_gb: "GiB of disk" };
  for (const k of ["vms", "vcpus", "memory_mb", "disk_gb"] as const) {
    const limit = quota[k];
    if (limit === undefined || limit === null) continue;
    if (usage[k] + add[k] > limit) {
      over.push(`${k}: ${usage[k]} + ${add[k]} ${units[k]} would exceed the quota of ${limit}`);
      fields[k] = { limit, used: usage[k], requested: add[k] };
    }
  }
  if (over.length > 0) {
    throw new ServiceError("quota_exceeded", `project '${project}' is over its quota: ${over.join("; ")}`, {
      field: Object.keys(fields)[0],
      project,
      over: fields,
    });
  }
}
