/**
 * The embedded domain template against libvirt's own schema, in every variant rcloud renders
 * (network modes, direct boot, data disks on each bus, seed ISO, kvm CPU, no console log).
 * The driver defines with schema validation only for operators' templates, so this test is
 * what keeps the embedded one valid.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { allocateDiskSlots, type DiskSlot, type SlotBus } from "../../src/drivers/shared/disk-slots.ts";
import { filesystemTags, loadTemplate, METADATA_NS, missingDiskPlacement, nvmeDisk, parseDomainXml, renderDomainXml, type DomainTemplateVars } from "../../src/drivers/libvirt/domain-xml.ts";
import { LibvirtClient, remoteProcedures as P } from "../../src/libvirt/index.ts";
import { uniqueName, unixUri } from "../helpers/rig.ts";

const DEFINE_VALIDATE = 1;
let lv: LibvirtClient;
beforeAll(async () => {
  lv = await LibvirtClient.connect(unixUri("qemu"));
});
afterAll(async () => {
  await lv?.close();
});

function vars(name: string, over: Partial<DomainTemplateVars> = {}): DomainTemplateVars {
  return {
    domain_type: "qemu",
    name,
    uuid: crypto.randomUUID(),
    id: "vm-schema01",
    image: "debian-13",
    created_at: new Date().toISOString(),
    owner: "team-a",
    placement_group: "group-a",
    ssh_user: "kdevops",
    root_disk_gb: 20,
    memory_mb: 256,
    max_memory_mb: 512,
    vcpus: 2,
    max_vcpus: 4,
    pcie_root_ports: 16,
    metadata_ns: METADATA_NS,
    boot: null,
    disks: [{ device: "disk", format: "qcow2", path: `/var/lib/rcloud/${name}-root.qcow2`, target: "vda", bus: "virtio", readonly: false, serial: null, drive: null }],
    nvme_disks: [],
    network: { mode: "none", bridge: "", interface_type: "network", mac: "52:54:00:12:34:56", ssh_port: "", restrict: false, netdev: "" },
    console_log: `/var/lib/rcloud/${name}-serial.log`,
    on_panic: "preserve",
    on_crash: "preserve",
    gdb: null,
    shares: [],
    ...over,
  };
}

/** The disks the driver renders for this mix of data disk buses, from the same allocator. */
function placedDisks(name: string, buses: SlotBus[], seed: boolean): Pick<DomainTemplateVars, "disks" | "nvme_disks"> {
  const slots = allocateDiskSlots(buses, { seed });
  const disk = (slot: DiskSlot, file: string, serial: string | null) =>
    ({ device: "disk", format: "qcow2", path: `/p/${name}-${file}`, target: slot.target!, bus: slot.bus, readonly: false, serial, drive: slot.drive }) as const;
  return {
    disks: [
      disk(slots.root, "root.qcow2", null),
      ...slots.data.flatMap((s, i) => (s.bus === "nvme" ? [] : [disk(s, `data${i}.qcow2`, `kdevops${i}`)])),
      ...(slots.seed ? [{ ...disk(slots.seed, "seed.iso", null), device: "cdrom" as const, format: "raw", readonly: true }] : []),
    ],
    nvme_disks: slots.data.flatMap((s, i) => (s.bus === "nvme" ? [nvmeDisk(s.ordinal, `kdevops${i}`, `/p/${name}-data${i}.qcow2`, "qcow2")] : [])),
  };
}

const variants: [string, (name: string) => Partial<DomainTemplateVars>][] = [
  ["no network, disk boot", () => ({})],
  [
    "restricted user networking with SSH forwarded, data disks on every bus, seed ISO",
    (name) => ({
      ...placedDisks(name, ["virtio", "scsi", "sata", "nvme"], true),
      network: { mode: "user", bridge: "", interface_type: "network", mac: "52:54:00:aa:bb:cc", ssh_port: 2222, restrict: true, netdev: "user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22,restrict=on" },
    }),
  ],
  // Past 26 names per prefix (vdaa, sdaa), SCSI past libvirt's 7 units per controller, SATA
  // past the 6 ports of the built-in AHCI controller.
  ["32 data disks of every bus and a seed", (name) => placedDisks(name, Array.from({ length: 32 }, (_, i): SlotBus => (["virtio", "scsi", "sata", "nvme"] as const)[i % 4]!), true)],
  ["28 virtio data disks (vdaa and on)", (name) => placedDisks(name, Array.from({ length: 28 }, (): SlotBus => "virtio"), false)],
  ["SCSI data disks without a seed (the first one is sda)", (name) => placedDisks(name, ["scsi", "scsi"], false)],
  ["NVMe data disks without user networking", (name) => ({ nvme_disks: [nvmeDisk(0, "kdevops0", `/p/${name}-data0.qcow2`, "qcow2"), nvmeDisk(1, "kdevops1", `/p/${name}-data1.qcow2`, "qcow2")] })],
  [
    "libvirt network, direct kernel boot",
    () => ({
      network: { mode: "bridge", bridge: "default", interface_type: "network", mac: "52:54:00:01:02:03", ssh_port: "", restrict: false, netdev: "" },
      boot: { kernel: "/boot/vmlinuz", initrd: "/boot/initrd.img", cmdline: "console=ttyS0 root=/dev/vda1" },
    }),
  ],
  [
    "host bridge, kernel without initrd, no console log",
    () => ({
      network: { mode: "bridge", bridge: "br0", interface_type: "bridge", mac: "52:54:00:01:02:04", ssh_port: "", restrict: false, netdev: "" },
      boot: { kernel: "/boot/vmlinuz", initrd: null, cmdline: null },
      console_log: null,
    }),
  ],
  // The kvm variant adds host-passthrough CPU; the schema is the same for both types, and a
  // TCG-only host cannot define type='kvm', so it is validated as qemu.
  ["kvm CPU model (validated as qemu)", () => ({ domain_type: "kvm" })],
  ["gdbstub alone in qemu:commandline, on_panic stop (<on_crash>destroy)", () => ({ gdb: { port: 40123, arg: "tcp:127.0.0.1:40123" }, on_panic: "stop", on_crash: "destroy" })],
  [
    "gdbstub after the user NIC, on_panic restart",
    () => ({
      network: { mode: "user", bridge: "", interface_type: "network", mac: "52:54:00:aa:bb:cd", ssh_port: 2223, restrict: false, netdev: "user,id=net0,hostfwd=tcp:127.0.0.1:2223-:22" },
      gdb: { port: 40124, arg: "tcp:127.0.0.1:40124" },
      on_panic: "restart",
      on_crash: "restart",
    }),
  ],
  // virtiofs needs the guest's memory shared (memfd backing); libvirt refuses it without.
  [
    "virtiofs shares (read-write and read-only) with user networking and a seed",
    (name) => ({
      ...placedDisks(name, ["virtio"], true),
      network: { mode: "user", bridge: "", interface_type: "network", mac: "52:54:00:aa:bb:cd", ssh_port: 2223, restrict: true, netdev: "user,id=net0,hostfwd=tcp:127.0.0.1:2223-:22,restrict=on" },
      shares: [
        { host_path: "/srv/linux", tag: "linux", readonly: false, transport: "virtiofs" },
        { host_path: "/srv/ref, with comma & 'quote'", tag: "ref-tree_2", readonly: true, transport: "virtiofs" },
      ],
    }),
  ],
  [
    "9p shares (read-write and read-only), no virtiofs: no shared memory",
    () => ({
      shares: [
        { host_path: "/srv/linux", tag: "linux", readonly: false, transport: "9p" },
        { host_path: "/srv/modules", tag: "modules", readonly: true, transport: "9p" },
      ],
    }),
  ],
  [
    "virtiofs and 9p shares together, direct kernel boot",
    () => ({
      boot: { kernel: "/boot/vmlinuz", initrd: "/boot/initrd.img", cmdline: "console=ttyS0" },
      shares: [
        { host_path: "/srv/a", tag: "a", readonly: false, transport: "virtiofs" },
        { host_path: "/srv/b", tag: "b", readonly: true, transport: "9p" },
      ],
    }),
  ],
];

describe("embedded domain template vs libvirt's schema", () => {
  for (const [label, over] of variants) {
    test(label, async () => {
      const name = uniqueName("schema");
      const v = vars(name, over(name));
      let xml = renderDomainXml(loadTemplate(null), v);
      if (xml.startsWith("<domain type='kvm'")) xml = xml.replace("<domain type='kvm'", "<domain type='qemu'");
      const { dom } = await lv.call(P.domainDefineXmlFlags, { xml, flags: DEFINE_VALIDATE });
      try {
        const back = (await lv.call(P.domainGetXmlDesc, { dom, flags: 0 })).xml;
        expect(back).toContain(`<name>${name}</name>`);
        expect(back).toContain(METADATA_NS);
        // libvirt kept every drive address, added no SCSI controller of its own (lsilogic)…
        expect(missingDiskPlacement(back, v.disks)).toEqual([]);
        expect(back).not.toContain("lsilogic");
        // …and each disk reads back with its bus and serial: root, data in serial order, seed.
        const want = [
          ...v.disks.map((d) => ({ type: d.device === "cdrom" ? "seed" : d.serial ? "data" : "root", driver: d.bus, serial: d.serial })),
          ...v.nvme_disks.map((d) => ({ type: "data", driver: "nvme", serial: d.serial })),
        ];
        const rank = (d: { type: string; serial: string | null }) => (d.type === "root" ? -1 : d.type === "seed" ? 1e9 : Number(d.serial!.slice("kdevops".length)));
        // Shares read back from the metadata as given, one <filesystem> each, shared memory iff virtiofs.
        const parsed = parseDomainXml(back);
        expect(parsed.shares).toEqual(v.shares.map((x) => ({ hostPath: x.host_path, tag: x.tag, readonly: x.readonly, transport: x.transport as "virtiofs" | "9p" })));
        expect(filesystemTags(back)).toEqual(v.shares.map((x) => x.tag));
        expect(back.includes("<access mode='shared'/>")).toBe(v.shares.some((x) => x.transport === "virtiofs"));
        expect(parseDomainXml(back).disks.map((d): { type: string; driver: string; serial: string | null } => ({ type: d.type, driver: d.driver, serial: d.serial }))).toEqual(want.sort((a, b) => rank(a) - rank(b)));
      } finally {
        await lv.call(P.domainUndefineFlags, { dom, flags: 0 });
      }
    });
  }

  test("schema validation is live: an unknown element is refused", async () => {
    const name = uniqueName("schema");
    const xml = renderDomainXml(loadTemplate(null), vars(name)).replace("<memballoon model='virtio'/>", "<memballoon model='virtio'/><no-such-device/>");
    const err = await lv.call(P.domainDefineXmlFlags, { xml, flags: DEFINE_VALIDATE }).then(
      ({ dom }) => lv.call(P.domainUndefineFlags, { dom, flags: 0 }).then(() => null),
      (e: Error) => e,
    );
    expect(err?.message).toMatch(/schema|Extra element|no-such-device/i);
  });
});
