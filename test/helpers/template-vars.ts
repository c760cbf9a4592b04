/** Values for the embedded domain template, for tests that render it without a hypervisor. */
import { METADATA_NS, type DomainTemplateVars } from "../../src/drivers/libvirt/domain-xml.ts";

export function templateVars(over: Partial<DomainTemplateVars> = {}): DomainTemplateVars {
  return {
    domain_type: "qemu",
    name: "web-01",
    uuid: "3e9d1f26-1f0e-4a53-9bd7-2d2a1f0b8c11",
    id: "vm-abcd1234",
    image: "debian-13",
    created_at: "2026-11-25T12:00:00.000Z",
    owner: "",
    placement_group: "",
    ssh_user: "kdevops",
    root_disk_gb: 20,
    memory_mb: 2048,
    max_memory_mb: 2048,
    vcpus: 2,
    max_vcpus: 2,
    pcie_root_ports: 16,
    metadata_ns: METADATA_NS,
    boot: null,
    disks: [
      { device: "disk", format: "qcow2", path: "/p/vm-abcd1234-root.qcow2", target: "vda", bus: "virtio", readonly: false, serial: null, drive: null },
      { device: "disk", format: "qcow2", path: "/p/vm-abcd1234-data0.qcow2", target: "vdb", bus: "virtio", readonly: false, serial: "kdevops0", drive: null },
    ],
    nvme_disks: [],
    network: { mode: "user", bridge: "", interface_type: "network", mac: "52:54:00:aa:bb:cc", ssh_port: 2222, restrict: true, netdev: "user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22,restrict=on" },
    console_log: "/p/vm-abcd1234-serial.log",
    on_panic: "preserve",
    on_crash: "preserve",
    gdb: null,
    shares: [],
    ...over,
  };
}
