/**
 * The embedded domain template against libvirt's own schema, in every variant rcloud renders
 * (network modes, direct boot, data disks on each bus, seed ISO, kvm CPU, no console log).
 * The driver defines with schema validation only for operators' templates, so this test is
 * what keeps the embedded one valid.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { loadTemplate, METADATA_NS, nvmeDisk, renderDomainXml, type DomainTemplateVars } from "../../src/drivers/libvirt/domain-xml.ts";
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
    ssh_user: "kdevops",
    root_disk_gb: 20,
    memory_mb: 256,
    vcpus: 2,
    metadata_ns: METADATA_NS,
    boot: null,
    disks: [{ device: "disk", format: "qcow2", path: `/var/lib/rcloud/${name}-root.qcow2`, target: "vda", bus: "virtio", readonly: false, serial: null }],
    nvme_disks: [],
    network: { mode: "none", bridge: "", interface_type: "network", mac: "52:54:00:12:34:56", ssh_port: "", restrict: false, netdev: "" },
    console_log: `/var/lib/rcloud/${name}-serial.log`,
    ...over,
  };
}

const dataDisks = (name: string): DomainTemplateVars["disks"] => [
  { device: "disk", format: "qcow2", path: `/p/${name}-root.qcow2`, target: "vda", bus: "virtio", readonly: false, serial: null },
  { device: "disk", format: "qcow2", path: `/p/${name}-data0.qcow2`, target: "vdb", bus: "virtio", readonly: false, serial: "kdevops0" },
  { device: "disk", format: "qcow2", path: `/p/${name}-data1.qcow2`, target: "sda", bus: "scsi", readonly: false, serial: "kdevops1" },
  { device: "disk", format: "qcow2", path: `/p/${name}-data2.qcow2`, target: "sdb", bus: "sata", readonly: false, serial: "kdevops2" },
  { device: "cdrom", format: "raw", path: `/p/${name}-seed.iso`, target: "sdc", bus: "sata", readonly: true, serial: null },
];

const variants: [string, (name: string) => Partial<DomainTemplateVars>][] = [
  ["no network, disk boot", () => ({})],
  [
    "restricted user networking with SSH forwarded, data disks on every bus, seed ISO",
    (name) => ({
      disks: dataDisks(name),
      nvme_disks: [nvmeDisk(3, "kdevops3", `/p/${name}-data3.qcow2`, "qcow2")],
      network: { mode: "user", bridge: "", interface_type: "network", mac: "52:54:00:aa:bb:cc", ssh_port: 2222, restrict: true, netdev: "user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22,restrict=on" },
    }),
  ],
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
];

describe("embedded domain template vs libvirt's schema", () => {
  for (const [label, over] of variants) {
    test(label, async () => {
      const name = uniqueName("schema");
      let xml = renderDomainXml(loadTemplate(null), vars(name, over(name)));
      if (xml.startsWith("<domain type='kvm'")) xml = xml.replace("<domain type='kvm'", "<domain type='qemu'");
      const { dom } = await lv.call(P.domainDefineXmlFlags, { xml, flags: DEFINE_VALIDATE });
      try {
        const back = (await lv.call(P.domainGetXmlDesc, { dom, flags: 0 })).xml;
        expect(back).toContain(`<name>${name}</name>`);
        expect(back).toContain(METADATA_NS);
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
