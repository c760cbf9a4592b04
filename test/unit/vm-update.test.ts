/**
 * The pure parts of PATCH /vms/{id}: the service's planning (src/vm/update.ts), the libvirt
 * definition and metadata edits (src/drivers/libvirt/update-xml.ts) and the Terraform
 * provider's data disk diff (src/terraform/vm-update.ts).
 */
import { describe, expect, test } from "bun:test";
import { XMLParser } from "fast-xml-parser";
import { loadTemplate, METADATA_NS, nvmeDisk, parseDomainXml, renderDomainXml } from "../../src/drivers/libvirt/domain-xml.ts";
import { templateVars } from "../helpers/template-vars.ts";
import { domainFacts, editDomainXml, editMetadataXml, freeSataPort, freeTarget } from "../../src/drivers/libvirt/update-xml.ts";
import type { VmRecord } from "../../src/drivers/types.ts";
import { diskDiff, updateBody } from "../../src/terraform/vm-update.ts";
import { ServiceError } from "../../src/api-types/errors.ts";
import type { ApiVm } from "../../src/api-types/json.ts";
import { planUpdate, undoChange } from "../../src/vm/update.ts";
import type { ServiceDefaults } from "../../src/vm/validate-create.ts";

const defaults: ServiceDefaults = {
  vcpus: 1,
  memoryMb: 1024,
  rootDiskGb: 20,
  networkMode: "none",
  networkBridge: "virbr0",
  userNetworkRestrict: true,
  diskDriver: "virtio",
  sshUser: "kdevops",
  stopTimeoutS: 30,
  maxExtraDisks: 4,
  vcpuOvercommit: 4,
  memoryOvercommit: 1,
  onPanic: "preserve",
};

function rec(over: Partial<VmRecord> = {}): VmRecord {
  return {
    shares: [],
    id: "vm-abcd1234",
    name: "web",
    uuid: "u",
    state: "running",
    vcpus: 2,
    maxVcpus: 4,
    memoryMb: 2048,
    maxMemoryMb: 4096,
    image: "debian-13",
    disks: [
      { type: "root", size_gb: 20, driver: "virtio", format: "qcow2", serial: null, path: "/p/root" },
      { type: "data", size_gb: 10, driver: "virtio", format: "qcow2", serial: "kdevops0", path: "/p/d0" },
      { type: "data", size_gb: 10, driver: "nvme", format: "qcow2", serial: "kdevops1", path: "/p/d1" },
      { type: "seed", size_gb: 0, driver: "sata", format: "raw", serial: null, path: "/p/seed" },
    ],
    pending: null,
    network: { mode: "none", bridge: null, mac: null, sshPort: null, restrict: false },
    sshUser: "kdevops",
    boot: null,
    createdAt: "t",
    updatedAt: "t",
    owner: null,
    placementGroup: null,
    cpuTimeNs: 0n,
    gdbPort: null,
    onPanic: "preserve",
    crashReason: null,
    ...over,
  };
}

function refusal(f: () => unknown): { code: string; field: unknown } {
  try {
    f();
  } catch (e) {
    if (e instanceof ServiceError) return { code: e.code, field: e.details?.field };
    throw e;
  }
  throw new Error("no refusal");
}

describe("planUpdate", () => {
  test("only what changes; maxima follow values up; the next sizes for capacity and quota", () => {
    const p = planUpdate({ vcpus: 6, memory_gb: 3, root_disk_gb: 20, extra_disks: { add: [{ size_gb: 5 }] } }, rec(), defaults);
    expect(p.change).toEqual({ vcpus: 6, maxVcpus: 6, memoryMb: 3072, addDisks: [{ sizeGb: 5, bus: "virtio" }] });
    expect(p.next).toEqual({ vcpus: 6, memoryMb: 3072, diskGb: 20 + 10 + 10 + 5 });
    expect({ stop: p.stopFirst, start: p.startAfter }).toEqual({ stop: false, start: false });
    expect(planUpdate({}, rec(), defaults).change).toEqual({});
  });

  test("values are compared with the pending ones: going back to what runs is a change", () => {
    const r = rec({ pending: { vcpus: 8, maxVcpus: 8 } });
    expect(planUpdate({ vcpus: 2 }, r, defaults).change).toEqual({ vcpus: 2 });
    expect(planUpdate({ vcpus: 8 }, r, defaults).change).toEqual({});
  });

  test("restart and running decide stop and start", () => {
    expect(planUpdate({ restart: true }, rec(), defaults)).toMatchObject({ stopFirst: true, startAfter: true });
    expect(planUpdate({ running: false }, rec(), defaults)).toMatchObject({ stopFirst: true, startAfter: false });
    expect(planUpdate({ running: true }, rec({ state: "stopped" }), defaults)).toMatchObject({ stopFirst: false, startAfter: true });
    expect(planUpdate({ restart: true }, rec({ state: "stopped" }), defaults)).toMatchObject({ stopFirst: false, startAfter: false });
  });

  test("disks a running VM cannot take live are refused unless it stops; stopped VMs take any bus", () => {
    expect(refusal(() => planUpdate({ extra_disks: { add: [{ size_gb: 1, type: "ide" }] } }, rec(), defaults))).toEqual({ code: "validation_error", field: "extra_disks.add[0].type" });
    expect(refusal(() => planUpdate({ extra_disks: { remove: ["kdevops1"] } }, rec(), defaults))).toEqual({ code: "validation_error", field: "extra_disks.remove[0]" });
    expect(planUpdate({ extra_disks: { remove: ["kdevops1"] }, restart: true }, rec(), defaults).change).toEqual({ removeDisks: ["kdevops1"] });
    expect(planUpdate({ extra_disks: { add: [{ size_gb: 1, type: "nvme" }] } }, rec({ state: "stopped" }), defaults).change).toEqual({ addDisks: [{ sizeGb: 1, bus: "nvme" }] });
  });

  test("refusals name the field", () => {
    const cases: [Parameters<typeof planUpdate>[0], string, string][] = [
      [{ root_disk_gb: 19 }, "validation_error", "root_disk_gb"],
      [{ vcpus: 5, max_vcpus: 4 }, "validation_error", "max_vcpus"],
      [{ memory_mb: 100, memory_gb: 1 }, "validation_error", "memory_mb"],
      [{ max_memory_mb: 1024 }, "validation_error", "max_memory_mb"],
      [{ extra_disks: { remove: ["kdevops0", "kdevops0"] } }, "validation_error", "extra_disks.remove[1]"],
      [{ extra_disks: { add: [{ size_gb: 1 }, { size_gb: 1 }, { size_gb: 1 }] } }, "validation_error", "extra_disks"],
      [{ cmdline: "quiet" }, "validation_error", "kernel"],
      [{ restart: true, running: false }, "validation_error", "restart"],
    ];
    for (const [req, code, field] of cases) expect(refusal(() => planUpdate(req, rec(), defaults))).toEqual({ code, field });
    expect(refusal(() => planUpdate({ vcpus: 3 }, rec({ state: "crashed" }), defaults)).code).toBe("invalid_state");
  });

  test("undoChange takes sizes and boot back and removes disks that were added", () => {
    const before = rec();
    const after = rec({
      vcpus: 3,
      boot: { kernel: "/k", initrd: null, cmdline: null },
      disks: [...rec().disks, { type: "data", size_gb: 1, driver: "virtio", format: "qcow2", serial: "kdevops2", path: "/p/d2" }],
    });
    expect(undoChange(before, after)).toEqual({ vcpus: 2, boot: null, removeDisks: ["kdevops2"] });
  });
});

describe("libvirt definition edits", () => {
  const xml = renderDomainXml(
    loadTemplate(null),
    templateVars({
      memory_mb: 1024,
      max_memory_mb: 2048,
      max_vcpus: 4,
      pcie_root_ports: 4,
      disks: [
        { device: "disk", format: "qcow2", path: "/p/root.qcow2", target: "vda", bus: "virtio", readonly: false, serial: null, drive: null },
        { device: "disk", format: "qcow2", path: "/p/data0.qcow2", target: "vdb", bus: "virtio", readonly: false, serial: "kdevops0", drive: null },
        { device: "disk", format: "qcow2", path: "/p/data1.qcow2", target: "sda", bus: "scsi", readonly: false, serial: "kdevops1", drive: { controller: 0, unit: 0 } },
      ],
      nvme_disks: [nvmeDisk(0, "kdevops2", "/p/da,ta2.qcow2", "qcow2")],
      network: { mode: "none", bridge: "", interface_type: "network", mac: "52:54:00:aa:bb:cc", ssh_port: "", restrict: false, netdev: "" },
      console_log: null,
    }),
  );

  test("facts: sizes, targets, units, NVMe ordinals and serials", () => {
    const f = domainFacts(xml);
    expect({ vcpus: f.vcpus, max: f.maxVcpus, mem: f.memoryMb, maxMem: f.maxMemoryMb, scsi: f.hasScsiController }).toEqual({ vcpus: 2, max: 4, mem: 1024, maxMem: 2048, scsi: true });
    expect([...f.targets].sort()).toEqual(["sda", "vda", "vdb"]);
    expect([...f.scsiUnits]).toEqual([0]);
    expect([...f.nvmeOrdinals]).toEqual([0]);
    expect(f.serials.sort()).toEqual([0, 1, 2]);
    expect(freeTarget("vd", f.targets)).toBe("vdc");
    expect(freeTarget("sd", f.targets)).toBe("sdb");
    expect(freeSataPort(new Set(["0:0", "0:1"]))).toEqual({ controller: 0, unit: 2 });
  });

  test("sizes, boot, disks and NVMe arguments change; everything else stays", () => {
    const edited = editDomainXml(xml, {
      vcpus: { current: 6, max: 6 },
      memory: { currentMb: 3072, maxMb: 4096 },
      boot: { kernel: "/k/vmlinuz", initrd: null, cmdline: "console=ttyS0 a<b" },
      removePaths: ["/p/data0.qcow2", "/p/da,ta2.qcow2"],
      addDisks: [{ device: "disk", format: "qcow2", path: "/p/data3.qcow2", target: "vdc", bus: "virtio", readonly: false, serial: "kdevops3", drive: null }],
      addNvme: [nvmeDisk(1, "kdevops4", "/p/data4.qcow2", "qcow2")],
      metadata: { memoryMb: 3072, rootDiskGb: 30, removePaths: ["/p/da,ta2.qcow2"], addNvme: [nvmeDisk(1, "kdevops4", "/p/data4.qcow2", "qcow2")] },
    });
    expect(() => new XMLParser().parse(edited)).not.toThrow();
    const p = parseDomainXml(edited);
    const f = domainFacts(edited);
    expect({ vcpus: f.vcpus, max: f.maxVcpus, mem: f.memoryMb, maxMem: f.maxMemoryMb }).toEqual({ vcpus: 6, max: 6, mem: 3072, maxMem: 4096 });
    expect(p.boot).toEqual({ kernel: "/k/vmlinuz", initrd: null, cmdline: "console=ttyS0 a<b" });
    expect(p.disks.map((d) => [d.serial, d.driver, d.path])).toEqual([
      [null, "virtio", "/p/root.qcow2"],
      ["kdevops1", "scsi", "/p/data1.qcow2"],
      ["kdevops3", "virtio", "/p/data3.qcow2"],
      ["kdevops4", "nvme", "/p/data4.qcow2"],
    ]);
    expect(p.rcloud).toMatchObject({ id: "vm-abcd1234", memoryMb: 3072, rootDiskGb: 30, pending: null });
    expect([...f.nvmeOrdinals]).toEqual([1]);
    expect(parseDomainXml(editDomainXml(edited, { boot: null })).boot).toBeNull();
  });

  test("pending changes in the metadata element, read back; removed again", () => {
    const meta = `<rcloud:vm xmlns:rcloud="${METADATA_NS}"><rcloud:id>vm-abcd1234</rcloud:id><rcloud:memory_mb>1024</rcloud:memory_mb></rcloud:vm>`;
    const withPending = editMetadataXml(meta, { memoryMb: 1536, pending: { vcpus: 8, maxVcpus: 8, boot: { kernel: "/k/'x\"", initrd: null, cmdline: "a&b" } } });
    const domain = (m: string) => `<domain type='qemu'><name>x</name><metadata>${m}</metadata><memory unit='KiB'>1048576</memory></domain>`;
    expect(parseDomainXml(domain(withPending)).rcloud).toMatchObject({
      memoryMb: 1536,
      pending: { vcpus: 8, maxVcpus: 8, boot: { kernel: "/k/'x\"", initrd: null, cmdline: "a&b" } },
    });
    const off = editMetadataXml(withPending, { pending: { boot: null } });
    expect(parseDomainXml(domain(off)).rcloud?.pending).toEqual({ boot: null });
    expect(parseDomainXml(domain(editMetadataXml(off, { pending: null }))).rcloud?.pending).toBeNull();
  });
});

describe("Terraform data disk diff", () => {
  const d = (size_gb: number, type: string | null = "virtio") => ({ size_gb, type });
  test("kept disks in order, then new ones; a changed disk in the middle takes the ones after it", () => {
    expect(diskDiff([d(1), d(2), d(3)], [d(1), d(3)])).toEqual({ kept: [0, 2], removed: [1] });
    expect(diskDiff([d(1), d(2)], [d(1), d(2), d(4, null)])).toEqual({ kept: [0, 1, null], removed: [] });
    expect(diskDiff([d(1), d(2), d(3)], [d(1), d(5), d(3)])).toEqual({ kept: [0, null, null], removed: [1, 2] });
    expect(diskDiff([d(1, "ide")], [d(1, "sata")])).toEqual({ kept: [0], removed: [] });
    expect(diskDiff([d(1, "nvme")], [d(1, "virtio")])).toEqual({ kept: [null], removed: [0] });
  });

  test("the PATCH body removes by serial and adds at the end", () => {
    const vm = { name: "web", disks: [{ type: "root", serial: null }, { type: "data", serial: "kdevops0" }, { type: "data", serial: "kdevops3" }] } as unknown as ApiVm;
    const prior = { vcpus: 2, memory_gb: 1, extra_disks: [d(1), d(2)], kernel: null, initrd: null, cmdline: null };
    const planned = { ...prior, memory_gb: 1.5, extra_disks: [d(2), d(8, "nvme")] };
    expect(updateBody(prior, planned, vm)).toEqual({ memory_mb: 1536, extra_disks: { remove: ["kdevops0"], add: [{ size_gb: 8, type: "nvme" }] } });
  });
});
