/** The domain template: user-controlled values can never become markup. */
import { describe, expect, test } from "bun:test";
import { XMLParser } from "fast-xml-parser";
import { loadTemplate, METADATA_NS, parseDomainXml, renderDomainXml, type DomainTemplateVars } from "../../src/drivers/libvirt/domain-xml.ts";

function vars(over: Partial<DomainTemplateVars> = {}): DomainTemplateVars {
  return {
    domain_type: "qemu",
    name: "web-01",
    uuid: "3e9d1f26-1f0e-4a53-9bd7-2d2a1f0b8c11",
    id: "vm-abcd1234",
    image: "debian-13",
    created_at: "2026-11-25T12:00:00.000Z",
    owner: "",
    ssh_user: "kdevops",
    root_disk_gb: 20,
    memory_mb: 2048,
    vcpus: 2,
    metadata_ns: METADATA_NS,
    boot: null,
    disks: [
      { device: "disk", format: "qcow2", path: "/p/vm-abcd1234-root.qcow2", target: "vda", bus: "virtio", readonly: false, serial: null },
      { device: "disk", format: "qcow2", path: "/p/vm-abcd1234-data0.qcow2", target: "vdb", bus: "virtio", readonly: false, serial: "kdevops0" },
    ],
    network: { mode: "user", bridge: "", interface_type: "network", mac: "52:54:00:aa:bb:cc", ssh_port: 2222, restrict: true, netdev: "user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22,restrict=on" },
    console_log: "/p/vm-abcd1234-serial.log",
    ...over,
  };
}

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
