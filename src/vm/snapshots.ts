/**
 * The snapshot rules the service applies before a driver is asked: the name's shape, which
 * kind of snapshot a VM in its state can take, and the API's view of one.
 */
import { ServiceError } from "../api-types/errors.ts";
import type { ApiSnapshot } from "../api-types/json.ts";
import { isActiveState, isSnapshotName, SNAPSHOT_NAME_RULE } from "../api-types/values.ts";
import type { SnapshotInfo, VmRecord } from "../drivers/types.ts";
import { invalid } from "./validate-create.ts";


/** A snapshot name as the API accepts it (422 otherwise: it could not exist). */
export function checkSnapshotName(name: unknown): string {
  if (typeof name !== "string" || !isSnapshotName(name)) {
    throw invalid("name", `a snapshot name is ${SNAPSHOT_NAME_RULE}`);
  }
  return name;
}

/**
 * Whether the snapshot holds memory: asked for, or by default when the VM runs. Internal
 * snapshots hold memory exactly when the VM runs (libvirt refuses a disk-only internal
 * snapshot of a running domain; QEMU's snapshot-save always saves it), so a mismatch is 409.
 */
export function snapshotKind(rec: VmRecord, memory: boolean | undefined): boolean {
  const running = isActiveState(rec.state);
  if (!running && rec.state !== "stopped") {
    throw new ServiceError("invalid_state", `${rec.name} is ${rec.state}; take a snapshot of it running, paused or stopped`);
  }
  const withMemory = memory ?? running;
  if (withMemory && !running) {
    throw new ServiceError("invalid_state", `${rec.name} is stopped; a memory snapshot needs it running: start it, or take a disk-only snapshot (memory: false)`);
  }
  if (!withMemory && running) {
    throw new ServiceError("invalid_state", `${rec.name} is ${rec.state}; a disk-only snapshot is taken of a stopped VM: stop it first, or take one with memory (memory: true)`);
  }
  return withMemory;
}

export function toApiSnapshot(s: SnapshotInfo): ApiSnapshot {
  return { name: s.name, created_at: s.createdAt, memory: s.memory, state: s.state, vm_state_bytes: s.vmStateBytes };
}

/** 404 naming what exists. */
export function noSnapshot(vm: string, name: string, list: SnapshotInfo[]): ServiceError {
  const have = list.length ? `its snapshots: ${list.map((s) => s.name).join(", ")}` : "it has none";
  return new ServiceError("not_found", `${vm} has no snapshot named '${name}' (${have})`);
}
