/**
 * Whether a new VM fits in its host's storage pool. Disks are thin qcow2 (kdevops hosts
 * routinely give every VM 4 x 100 GiB data disks on smaller pools), so their virtual sizes
 * may exceed the pool. What a create needs is what it writes at once: each disk's qcow2
 * metadata and the cloud-init seed ISO, plus a reserve (vm_defaults.pool_reserve_mb) kept
 * free for the guests' disks to grow into. A create that does not fit is refused with 507.
 */
import { ServiceError } from "../api-types/errors.ts";
import type { HostInfo, VmSpec } from "../drivers/types.ts";

const MiB = 1024 ** 2;
const GiB = 1024 ** 3;
/** vm_defaults.pool_reserve_mb's default. */
export const DEFAULT_POOL_RESERVE_BYTES = 512 * MiB;
/** qcow2's default cluster size: the unit its metadata is written in. */
const CLUSTER = 64 * 1024;
/** One L2 table (a cluster of 8-byte entries) maps this much of the disk. */
const L2_SPAN = (CLUSTER / 8) * CLUSTER;

/** What a fresh qcow2 of `bytes` takes on disk: header, refcount table and block, and its L1 table. */
export function qcow2MetadataBytes(bytes: number): number {
  const l1 = Math.ceil(Math.ceil(bytes / L2_SPAN) * 8 / CLUSTER) * CLUSTER;
  return 3 * CLUSTER + l1;
}

/** The bytes a create writes to the pool before the guest runs: every disk's qcow2 metadata and the seed. */
export function immediateBytes(spec: Pick<VmSpec, "rootDiskGb" | "image" | "dataDisks" | "seedIso">): number {
  const root = qcow2MetadataBytes(Math.max(spec.rootDiskGb * GiB, spec.image.virtualSizeBytes));
  const data = spec.dataDisks.reduce((sum, d) => sum + qcow2MetadataBytes(d.sizeGb * GiB), 0);
  return root + data + (spec.seedIso?.byteLength ?? 0);
}

const mib = (bytes: number) => (bytes / MiB).toFixed(bytes < 10 * MiB ? 2 : 0);

/** 507 insufficient_storage when the pool's free space is below what the create writes plus the reserve. */
export function checkPoolRoom(host: string, info: HostInfo, spec: Parameters<typeof immediateBytes>[0], reserveBytes: number): void {
  const storage = info.storage;
  if (!storage || storage.capacityBytes <= 0) return;
  const needed = immediateBytes(spec);
  if (storage.availableBytes >= needed + reserveBytes) return;
  throw new ServiceError(
    "insufficient_storage",
    `the storage pool ${storage.pool} (${storage.path}) on host ${host} has ${mib(storage.availableBytes)} MiB free; ` +
      `this VM writes ${mib(needed)} MiB at once (disk metadata${spec.seedIso ? " and the cloud-init seed" : ""}) and ${mib(reserveBytes)} MiB are kept free for thin disks to grow; ` +
      `free space in ${storage.path} or grow it`,
    { host, pool: storage.pool, available_bytes: storage.availableBytes, needed_bytes: needed, reserve_bytes: reserveBytes },
  );
}
