/**
 * Choosing a host for a new VM: pure, so it can be reasoned about and tested alone. The
 * service gives it every host as a candidate with what is allocated there (VMs placed and
 * creates still running); it answers one host, or why each host was refused.
 */
import type { HostState, PlacementPolicy } from "../api-types/values.ts";
import { memoryLimitMb } from "./capacity.ts";

export interface PlacementCandidate {
  name: string;
  state: HostState;
  /** The host lists the image (by id). */
  hasImage: boolean;
  /** null while the host's facts are unknown (never answered). */
  cpus: number | null;
  memoryMb: number | null;
  vcpuOvercommit: number;
  memoryOvercommit: number;
  /** vCPUs and memory of the VMs that count on the host (placed and being created). */
  allocated: { vcpus: number; memoryMb: number };
  /** VMs of the request's placement group already on (or going to) this host. */
  groupMembers: number;
}

export interface PlacementRequest {
  vcpus: number;
  memoryMb: number;
  image: string;
  /** A host the request pins the VM to. */
  pinned: string | null;
}

export interface Refusal {
  host: string;
  /** What did not fit, for the error's `field` when every host says the same. */
  resource: "host" | "image" | "vcpus" | "memory_mb";
  reason: string;
  /** The host cannot be asked now (offline, or its facts could not be read): down, not full. */
  down?: boolean;
}

export type Placement = { host: string } | { refusals: Refusal[] };

/** Why `c` cannot take the VM, or null if it can. */
export function refusal(c: PlacementCandidate, req: PlacementRequest): Refusal | null {
  const no = (resource: Refusal["resource"], reason: string): Refusal => ({ host: c.name, resource, reason });
  if (c.state === "offline") return { ...no("host", "offline (not answering)"), down: true };
  if (c.state === "cordoned") return no("host", "cordoned (POST /api/v1/hosts/NAME/uncordon to use it)");
  if (!c.hasImage) return no("image", `does not have image ${req.image} (POST /api/v1/images/${req.image}/copy copies it there)`);
  if (c.cpus === null || c.memoryMb === null) return { ...no("host", "its capacity is not known yet"), down: true };
  const vcpuLimit = c.cpus * c.vcpuOvercommit;
  if (c.allocated.vcpus + req.vcpus > vcpuLimit) {
    return no(
      "vcpus",
      `vcpus: ${req.vcpus} more would make ${c.allocated.vcpus + req.vcpus}, over its ${vcpuLimit} (${c.cpus} CPUs × ${c.vcpuOvercommit}, vm_defaults.vcpu_overcommit)`,
    );
  }
  const memLimit = memoryLimitMb(c.memoryMb, c.memoryOvercommit);
  if (c.allocated.memoryMb + req.memoryMb > memLimit) {
    return no(
      "memory_mb",
      `memory: ${req.memoryMb} MiB more would make ${c.allocated.memoryMb + req.memoryMb} MiB, over its ${memLimit} MiB (${c.memoryMb} MiB × ${c.memoryOvercommit}, vm_defaults.memory_overcommit)`,
    );
  }
  return null;
}

/** Memory allocated as a fraction of what the host may give. */
function memoryFill(c: PlacementCandidate): number {
  return c.memoryMb ? c.allocated.memoryMb / memoryLimitMb(c.memoryMb, c.memoryOvercommit) : 1;
}

/**
 * The host for a VM: among the hosts that fit, those with the fewest members of the
 * request's placement group, then by policy — spread: least memory allocated (as a
 * fraction); pack: most. Ties go to the host listed first (config order).
 */
export function place(candidates: PlacementCandidate[], req: PlacementRequest, policy: PlacementPolicy): Placement {
  const pool = req.pinned === null ? candidates : candidates.filter((c) => c.name === req.pinned);
  const refusals: Refusal[] = [];
  const fit: PlacementCandidate[] = [];
  for (const c of pool) {
    const r = refusal(c, req);
    if (r) refusals.push(r);
    else fit.push(c);
  }
  if (fit.length === 0) return { refusals };
  const fewest = Math.min(...fit.map((c) => c.groupMembers));
  const group = fit.filter((c) => c.groupMembers === fewest);
  let best = group[0]!;
  for (const c of group.slice(1)) {
    const better = policy === "spread" ? memoryFill(c) < memoryFill(best) : memoryFill(c) > memoryFill(best);
    if (better) best = c;
  }
  return { host: best.name };
}
