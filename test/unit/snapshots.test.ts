/** Pure snapshot rules and documents: names, the kind a VM's state allows, libvirt's snapshot XML. */
import { describe, expect, test } from "bun:test";
import { XMLParser } from "fast-xml-parser";
import { ServiceError } from "../../src/api-types/errors.ts";
import { parseSnapshotXml, snapshotXml } from "../../src/drivers/libvirt/snapshots.ts";
import type { VmRecord } from "../../src/drivers/types.ts";
import { checkSnapshotName, snapshotKind } from "../../src/vm/snapshots.ts";

const vm = (state: VmRecord["state"]) => ({ name: "v1", state }) as VmRecord;
const code = (f: () => unknown) => {
  try {
    f();
    return "ok";
  } catch (e) {
    return (e as ServiceError).code;
  }
};

describe("snapshot names", () => {
  test("safe identifiers of 1-63 characters pass", () => {
    for (const n of ["a", "A9", "9a", "1.0", "01-base", "before-xfs_test.1", "x".repeat(63), `${"1".repeat(62)}a`, "1_"]) expect(checkSnapshotName(n)).toBe(n);
  });
  test("digits only are refused, saying why: QEMU would take the name for a snapshot ID", () => {
    for (const n of ["1", "2", "0", "007", "1".repeat(63)]) expect(code(() => checkSnapshotName(n))).toBe("validation_error");
    expect(() => checkSnapshotName("1")).toThrow(/not digits only \(QEMU would take an all-digit name for another snapshot's numeric ID\)/);
  });
  test("anything else is a validation error on name", () => {
    for (const n of ["", "-a", ".a", "a b", "a/b", "../x", "x".repeat(64), `${"1".repeat(63)}a`, "_a", "é", "a\n", 5, null]) {
      expect(code(() => checkSnapshotName(n))).toBe("validation_error");
    }
  });
});

describe("the kind follows the VM's state", () => {
  test("defaults: memory when it runs or is paused, disks when stopped", () => {
    expect(snapshotKind(vm("running"), undefined)).toBe(true);
    expect(snapshotKind(vm("paused"), undefined)).toBe(true);
    expect(snapshotKind(vm("stopped"), undefined)).toBe(false);
  });
  test("the other kind, or a VM in between states, is invalid_state", () => {
    expect(code(() => snapshotKind(vm("stopped"), true))).toBe("invalid_state");
    expect(code(() => snapshotKind(vm("running"), false))).toBe("invalid_state");
    for (const s of ["crashed", "stopping", "unknown"] as const) expect(code(() => snapshotKind(vm(s), undefined))).toBe("invalid_state");
  });
});

describe("libvirt snapshot XML", () => {
  const parser = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: "" });
  test("memory internal or none; the seed CD-ROM excluded by its path; values escaped", () => {
    const xml = snapshotXml("a<b", true, [
      { type: "root", path: "/p/vm-1-root.qcow2" },
      { type: "seed", path: "/p/vm-1-seed.iso" },
    ]);
    const doc = parser.parse(xml).domainsnapshot;
    expect(doc.name).toBe("a<b");
    expect(doc.memory).toEqual({ snapshot: "internal" });
    expect(doc.disks.disk).toEqual({ name: "/p/vm-1-seed.iso", snapshot: "no" });
    expect(parser.parse(snapshotXml("s", false, [{ type: "root", path: "/r" }])).domainsnapshot).toEqual({ name: "s", memory: { snapshot: "no" } });
  });
  test("what libvirt answers is read back", () => {
    const running = parseSnapshotXml(
      "<domainsnapshot><name>m1</name><state>running</state><creationTime>1796227200</creationTime><memory snapshot='internal'/><disks/><domain type='qemu'/></domainsnapshot>",
    );
    expect(running).toEqual({ name: "m1", createdAt: "2026-12-02T16:00:00.000Z", memory: true, state: "running", vmStateBytes: null });
    const off = parseSnapshotXml("<domainsnapshot><name>d1</name><state>shutoff</state><creationTime>1796227200</creationTime><memory snapshot='no'/></domainsnapshot>");
    expect([off.memory, off.state]).toEqual([false, "stopped"]);
  });
});
