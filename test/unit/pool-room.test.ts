/** What a create needs from its pool (src/vm/pool-room.ts) and how ENOSPC is recognised (src/drivers/shared/no-space.ts). */
import { describe, expect, test } from "bun:test";
import { ERROR_STATUS, ServiceError } from "../../src/api-types/errors.ts";
import { EXIT, exitCodeForStatus } from "../../src/cli/errors.ts";
import { isNoSpace } from "../../src/drivers/shared/no-space.ts";
import type { HostInfo } from "../../src/drivers/types.ts";
import { LibvirtError } from "../../src/libvirt/index.ts";
import { ApiError } from "../../src/terraform/client.ts";
import { diagFromError } from "../../src/terraform/diagnostics.ts";
import { checkPoolRoom, immediateBytes, qcow2MetadataBytes } from "../../src/vm/pool-room.ts";

const MiB = 1024 ** 2;
const GiB = 1024 ** 3;
const image = { virtualSizeBytes: 21 * MiB } as Parameters<typeof immediateBytes>[0]["image"];
const hostWith = (availableBytes: number): HostInfo =>
  ({ storage: { pool: "rcloud", path: "/srv/pool", capacityBytes: 64 * MiB, allocationBytes: 0, availableBytes } }) as HostInfo;

describe("immediateBytes", () => {
  test("a fresh qcow2 is three clusters plus its L1 table, whatever its virtual size", () => {
    expect(qcow2MetadataBytes(1 * GiB)).toBe(4 * 64 * 1024);
    // 4 TiB: 8,192 L1 entries of 8 bytes = one 64 KiB cluster
    expect(qcow2MetadataBytes(4096 * GiB)).toBe(4 * 64 * 1024);
    expect(qcow2MetadataBytes(8192 * GiB)).toBe(5 * 64 * 1024);
  });

  test("root, data disks and the seed; not the virtual sizes", () => {
    const seed = new Uint8Array(300 * 1024);
    const bytes = immediateBytes({ rootDiskGb: 20, image, dataDisks: [{ sizeGb: 100 }, { sizeGb: 4096 }] as never, seedIso: seed });
    expect(bytes).toBe(3 * 256 * 1024 + seed.byteLength);
    expect(immediateBytes({ rootDiskGb: 20, image, dataDisks: [], seedIso: null })).toBe(256 * 1024);
  });
});

describe("checkPoolRoom", () => {
  const spec = { rootDiskGb: 1, image, dataDisks: [], seedIso: new Uint8Array(100 * 1024) };

  test("fits: needed plus the reserve is free", () => {
    expect(() => checkPoolRoom("h1", hostWith(MiB + immediateBytes(spec)), spec, MiB)).not.toThrow();
    expect(() => checkPoolRoom("h1", { storage: null } as HostInfo, spec, MiB)).not.toThrow();
  });

  test("too little free: 507 insufficient_storage naming the pool, host, free space and need", () => {
    let err: unknown;
    try {
      checkPoolRoom("h1", hostWith(MiB), spec, MiB);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ServiceError);
    const e = err as ServiceError;
    expect([e.status, e.code]).toEqual([507, "insufficient_storage"]);
    expect(e.message).toContain("the storage pool rcloud (/srv/pool) on host h1 has 1.00 MiB free");
    expect(e.message).toContain("writes 0.35 MiB at once (disk metadata and the cloud-init seed)");
    expect(e.details).toMatchObject({ available_bytes: MiB, needed_bytes: immediateBytes(spec), reserve_bytes: MiB });
  });
});

describe("isNoSpace", () => {
  test("errno, libvirt's text and a cause chain", () => {
    expect(isNoSpace(Object.assign(new Error("write failed"), { code: "ENOSPC" }))).toBe(true);
    expect(isNoSpace(new LibvirtError({ code: 38, domain: 18, message: "cannot allocate 372736 bytes in file '/p/x-seed.iso': No space left on device", level: 2 } as never, "REMOTE_PROC_STORAGE_VOL_CREATE_XML"))).toBe(true);
    expect(isNoSpace(new Error("creating x", { cause: new Error("qemu-img: No space left on device") }))).toBe(true);
    expect(isNoSpace(new Error("Permission denied"))).toBe(false);
    expect(isNoSpace("No space left on device")).toBe(false);
  });
});

describe("insufficient_storage in the adapters", () => {
  test("HTTP 507; the CLI exits 5 as for the 422 it was; the provider says the pool is full", () => {
    expect(ERROR_STATUS.insufficient_storage).toBe(507);
    expect(exitCodeForStatus(507)).toBe(EXIT.validation);
    const d = diagFromError(new ApiError("insufficient_storage", "the storage pool rcloud (/p) on host h1 has 1 MiB free", 507, null), "creating x");
    expect([d.severity, d.summary, d.detail]).toEqual(["ERROR", "The storage pool on the rcloud host is full", "creating x: the storage pool rcloud (/p) on host h1 has 1 MiB free"]);
  });
});
