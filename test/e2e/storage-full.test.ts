/**
 * Storage full (issue #17, fault 4) on the rig's `main` libvirtd: the pool on a 64 MiB ext4
 * loop mount inside the daemon's mount namespace. A write failing with ENOSPC and a pool
 * already too full are both 507 `insufficient_storage` with nothing left behind; a create
 * that fits works after each. The same on the qemu driver, its state directory on such a file
 * system mounted in this process's namespace. The scenario is bench/storage-full.ts (also
 * `bun run chaos`).
 */
import { expect, test } from "bun:test";
import { runStorageFull, runStorageFullQemu } from "../../bench/storage-full.ts";

/** Each step of the scenario and its answer (bench/storage-full.ts says what each does). */
const STEPS = [
  ["write fails (ENOSPC)", 507, "insufficient_storage"],
  ["write fails midway (ENOSPC)", 507, "insufficient_storage"],
  ["fits after ENOSPC", 201, null],
  ["refused up front", 507, "insufficient_storage"],
  ["fits again", 201, null],
];

test("a create that does not fit is 507 insufficient_storage, leaves nothing, and the next that fits works", async () => {
  const result = await runStorageFull();
  console.log(JSON.stringify(result.steps));
  expect(result.detail).toStartWith("5 creates as expected");
  expect(result.orphans).toBe(0);
  expect(result.steps.map((s) => [s.step, s.status, s.code])).toEqual(STEPS);
  expect(result.ok).toBe(true);
}, 300_000);

test("the same on the qemu driver: its state directory on a full file system", async () => {
  const result = await runStorageFullQemu();
  console.log(JSON.stringify(result.steps));
  expect(result.orphans).toBe(0);
  expect(result.steps.map((s) => [s.step, s.status, s.code])).toEqual(STEPS);
  expect(result.detail).toStartWith("5 creates as expected");
  expect(result.ok).toBe(true);
}, 300_000);
