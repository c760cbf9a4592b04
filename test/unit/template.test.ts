/** The domain template: user-controlled values can never become markup. */
import { describe, expect, test } from "bun:test";
import { XMLParser } from "fast-xml-parser";
import { pickDomainType, readCapabilities } from "../../src/drivers/libvirt/capabilities.ts";
import { type DomainTemplateVars, loadTemplate, missingDiskPlacement, nvmeDisk, parseDomainXml, qemuArgs, renderDomainXml } from "../../src/drivers/libvirt/domain-xml.ts";
import { templateVars as vars } from "../helpers/template-vars.ts";

describe("vm-q35 template", () => {
  test("renders well-formed XML that parses back to what went in", () => {
    const xml = renderDomainXml(loadTemplate(null), vars());
    expect(() => new XMLParser().parse(xml)).not.toThrow();
    const p = parseDomainXml(xml);
    expect(p.rcloud).toMatchObject({ id: "vm-abcd1234", image: "debian-13", sshUser: "kdevops", network: { mode: "user", sshPort: 2222, restrict: true } });
    expect(p.vcpus).toBe(2);
    expect(p.memoryMb).toBe(2048);
    expect(p.disks.map((d) => [d.type, d.serial])).toEqual([["root", null], ["data", "kdevops0"]]);
    expect(p.mac).toBe("52:54:00:aa:bb:cc");
    expect(p.consoleLog).toBe("/p/vm-abcd1234-serial.log");
  });

  test("NVMe data disks: QEMU arguments, recorded in metadata, read back in serial order", () => {
    const xml = renderDomainXml(
      loadTemplate(null),
      vars({
        network: { mode: "none", bridge: "", interface_type: "network", mac: "52:54:00:aa:bb:cc", ssh_port: "", restrict: false, netdev: "" },
        // a comma in the pool path must not split QEMU's option list
        nvme_disks: [nvmeDisk(1, "kdevops1", "/p,x/vm-abcd1234-data1.qcow2", "qcow2")],
      }),
    );
    expect(qemuArgs(xml)).toEqual([
      "-drive",
      "file=/p,,x/vm-abcd1234-data1.qcow2,format=qcow2,if=none,id=rcloud-nvme1,discard=unmap",
      "-device",
      "nvme,id=rcloud-nvme1-ctrl,serial=kdevops1,drive=rcloud-nvme1,bus=pcie.0,addr=0x11.1",
    ]);
    // 8 controllers per slot from 0x11 on; function 0 opens the slot for the others
    expect(nvmeDisk(0, "kdevops0", "/p/a", "qcow2").device_arg).toEndWith(",addr=0x11.0,multifunction=on");
    expect(nvmeDisk(31, "kdevops31", "/p/a", "raw").device_arg).toEndWith(",addr=0x14.7");
    const p = parseDomainXml(xml);
    expect(p.disks.map((d) => [d.type, d.driver, d.serial, d.path])).toEqual([
      ["root", "virtio", null, "/p/vm-abcd1234-root.qcow2"],
      ["data", "virtio", "kdevops0", "/p/vm-abcd1234-data0.qcow2"],
      ["data", "nvme", "kdevops1", "/p,x/vm-abcd1234-data1.qcow2"],
    ]);
    // with no NVMe disk and no user networking there is no qemu:commandline at all
    const plain = renderDomainXml(loadTemplate(null), vars({ network: { mode: "none", bridge: "", interface_type: "network", mac: "52:54:00:aa:bb:cc", ssh_port: "", restrict: false, netdev: "" } }));
    expect(plain).not.toContain("qemu:commandline");
  });

  test("the domain type: configured, else kvm, qemu or the host's only kind from its capabilities", () => {
    const caps = (...types: string[]) =>
      `<capabilities><guest><os_type>hvm</os_type><arch name='x86_64'>${types.map((t) => `<domain type='${t}'/>`).join("")}</arch></guest></capabilities>`;
    expect(pickDomainType("auto", readCapabilities(caps("qemu", "kvm")))).toBe("kvm");
    expect(pickDomainType("auto", readCapabilities(caps("qemu")))).toBe("qemu");
    expect(pickDomainType("auto", readCapabilities(caps("test")))).toBe("test"); // libvirt's test driver
    expect(pickDomainType("qemu", readCapabilities(caps("qemu", "kvm")))).toBe("qemu");
    expect(pickDomainType("kvm", readCapabilities(caps("qemu")))).toBe("kvm"); // libvirt says no at define, clearly
  });

  test("an operator's template without drive addresses or the virtio-scsi controller is caught", () => {
    const disks: DomainTemplateVars["disks"] = [
      { device: "disk", format: "qcow2", path: "/p/root", target: "vda", bus: "virtio", readonly: false, serial: null, drive: null },
      { device: "disk", format: "qcow2", path: "/p/data0", target: "sda", bus: "scsi", readonly: false, serial: "kdevops0", drive: { controller: 0, unit: 0 } },
    ];
    expect(missingDiskPlacement(renderDomainXml(loadTemplate(null), vars({ disks })), disks)).toEqual([]);
    const old = loadTemplate(null)
      .replace(/\{%- if disk.drive %\}[\s\S]*?\{%- endif %\}\n/, "")
      .replace("<controller type='scsi' index='0' model='virtio-scsi'/>", "");
    expect(missingDiskPlacement(renderDomainXml(old, vars({ disks })), disks)).toEqual([
      "the drive address of kdevops0 (scsi controller 0 unit 0)",
      "the virtio-scsi controller (index 0)",
    ]);
  });

  test("markup in values is escaped, not interpreted", () => {
    const hostile = `x'/><devices><hostdev mode='subsystem'/></devices><name>pwn`;
    const xml = renderDomainXml(
      loadTemplate(null),
      vars({ image: hostile, owner: hostile, boot: { kernel: "/k/vmlinuz", initrd: null, cmdline: `console=ttyS0 ${hostile}` } }),
    );
    expect(xml).not.toContain("<hostdev");
    expect(xml).toContain("&lt;hostdev");
    const p = parseDomainXml(xml);
    expect(p.rcloud!.image).toBe(hostile);
    expect(p.boot!.cmdline).toBe(`console=ttyS0 ${hostile}`);
  });

  test("bridge mode renders an interface on the network, direct boot renders kernel/initrd/cmdline", () => {
    const xml = renderDomainXml(
      loadTemplate(null),
      vars({
        network: { mode: "bridge", bridge: "default", interface_type: "network", mac: "52:54:00:01:02:03", ssh_port: "", restrict: false, netdev: "" },
        boot: { kernel: "/k/vmlinuz", initrd: "/k/initrd.img", cmdline: "console=ttyS0" },
      }),
    );
    expect(xml).toContain("<source network='default'/>");
    expect(xml).not.toContain("qemu:commandline");
    expect(parseDomainXml(xml).boot).toEqual({ kernel: "/k/vmlinuz", initrd: "/k/initrd.img", cmdline: "console=ttyS0" });
  });
});
