/**
 * Project quotas under concurrency: a create (or a change that grows a VM) checks its
 * project's quota and reserves its share atomically (one check at a time per project),
 * counting the project's VMs plus the creates and changes still in flight, and releases the
 * reservation when it has finished either way.
 */
import { checkQuota, type QuotaConfig, quotaFor, type Usage } from "../auth/scope.ts";
import type { VmRecord, VmSpec } from "../drivers/types.ts";
import { KeyedMutex } from "../util/mutex.ts";

export class QuotaReservations {
  private readonly locks = new KeyedMutex();
  /** Creates (by VM id) and changes (by `<id>:change`) past their quota check and not yet finished, by project. */
  private readonly inflight = new Map<string, Map<string, { name: string; usage: Usage }>>();

  constructor(private readonly quotas: QuotaConfig | null) {}

  /** Reserves `spec`'s share of `project`'s quota (or throws quota_exceeded); returns the release. */
  reserve(project: string, spec: VmSpec, listVms: () => Promise<VmRecord[]>): Promise<() => void> {
    const mine: Usage = {
      vms: 1,
      vcpus: spec.vcpus,
      memory_mb: spec.memoryMb,
      disk_gb: spec.rootDiskGb + spec.dataDisks.reduce((n, d) => n + d.sizeGb, 0),
    };
    return this.hold(project, spec.id, spec.name, mine, listVms);
  }

  /**
   * Reserves what a change adds to an existing VM (`add`: the differences, vms 0); the VM
   * itself is counted from the listing as it is now.
   */
  reserveChange(project: string, vm: { id: string; name: string }, add: Usage, listVms: () => Promise<VmRecord[]>): Promise<() => void> {
    return this.hold(project, `${vm.id}:change`, vm.name, add, listVms);
  }

  private async hold(project: string, key: string, name: string, mine: Usage, listVms: () => Promise<VmRecord[]>): Promise<() => void> {
    const quota = quotaFor(this.quotas, project);
    if (quota === null) return () => {};
    return this.locks.run(`quota:${project}`, async () => {
      // Snapshot the creates in flight *before* listing: one that finishes during the list
      // is then either in the list or in the snapshot, never in neither.
      const pending = this.inflight.get(project) ?? new Map<string, { name: string; usage: Usage }>();
      const inFlight = [...pending];
      const records = (await listVms()).filter((r) => r.owner === project);
      const usage: Usage = { vms: 0, vcpus: 0, memory_mb: 0, disk_gb: 0 };
      const add = (u: Usage) => {
        usage.vms += u.vms;
        usage.vcpus += u.vcpus;
        usage.memory_mb += u.memory_mb;
        usage.disk_gb += u.disk_gb;
      };
      const seen = new Set(records.map((r) => r.id));
      for (const r of records) {
        const disk = r.disks.filter((d) => d.type === "root" || d.type === "data").reduce((n, d) => n + d.size_gb, 0);
        add({ vms: 1, vcpus: r.vcpus, memory_mb: r.memoryMb, disk_gb: disk });
      }
      for (const [id, p] of inFlight) if (!seen.has(id)) add(p.usage);
      checkQuota(project, quota, usage, mine);
      pending.set(key, { name, usage: mine });
      this.inflight.set(project, pending);
      return () => {
        pending.delete(key);
        if (pending.size === 0 && this.inflight.get(project) === pending) this.inflight.delete(project);
      };
    });
  }
}
