/**
 * rcloud VMs made behind rcloud's back: domain XML rendered from rcloud's own template (with
 * its metadata), for a bare LibvirtClient to define, as another tool or an operator would.
 */
import { randomUUID } from "node:crypto";
import { loadTemplate, METADATA_NS, renderDomainXml, type DomainType, type TemplateDisk } from "../../src/drivers/libvirt/domain-xml.ts";
import { randomMac } from "../../src/drivers/shared/mac.ts";
import { remoteProcedures as P, type LibvirtClient, type RemoteNonnullDomain } from "../../src/libvirt/index.ts";

export interface RcloudDomain {
  name: string;
  /** rcloud's VM id (vm-xxxxxxxx). */
  id: string;
  uuid: string;
  domainType: DomainType;
  memoryMb: number;
  vcpus: number;
  /** "bridge" attaches to the libvirt network `bridge`. */
  network: { mode: "none" | "bridge" | "user"; bridge: string; sshPort: number | null };
  /** The root disk; null for none (a test-driver domain, or a diskless direct-kernel boot). */
  rootDisk: string | null;
  boot: { kernel: string; initrd: string | null; cmdline: string | null } | null;
  mac: string;
  createdAt: string;
}

/** A random rcloud VM id. */
export function vmId(): string {
  const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
  return `vm-${Array.from({ length: 8 }, () => alphabet[Math.floor(Math.random() * alphabet.length)]).join("")}`;
}

export function rcloudDomain(name: string, over: Partial<RcloudDomain> = {}): RcloudDomain {
  return {
    name,
    id: vmId(),
    uuid: randomUUID(),
    domainType: "test",
    memoryMb: 128,
    vcpus: 1,
    network: { mode: "none", bridge: "", sshPort: null },
    rootDisk: null,
    boot: null,
    mac: randomMac(),
    createdAt: new Date().toISOString(),
    ...over,
  };
}

const template = loadTemplate(null);

export function rcloudDomainXml(d: RcloudDomain): string {
  const disks: TemplateDisk[] = d.rootDisk ? [{ device: "disk", format: "qcow2", path: d.rootDisk, target: "vda", bus: "virtio", readonly: false, serial: null, drive: null }] : [];
  const user = d.network.mode === "user";
  return renderDomainXml(template, {
    domain_type: d.domainType,
    name: d.name,
    uuid: d.uuid,
    id: d.id,
    image: "debian-13-generic-amd64",
    created_at: d.createdAt,
    owner: "",
    placement_group: "",
    ssh_user: "kdevops",
    root_disk_gb: 2,
    memory_mb: d.memoryMb,
    max_memory_mb: d.memoryMb,
    vcpus: d.vcpus,
    max_vcpus: d.vcpus,
    pcie_root_ports: 16,
    metadata_ns: METADATA_NS,
    boot: d.boot,
    disks,
    nvme_disks: [],
    network: {
      mode: d.network.mode,
      bridge: d.network.bridge,
      interface_type: "network",
      mac: d.mac,
      ssh_port: d.network.sshPort ?? "",
      restrict: true,
      netdev: user ? `user,id=net0,hostfwd=tcp:127.0.0.1:${d.network.sshPort}-:22,restrict=on` : "",
    },
    console_log: null,
    on_panic: "preserve",
    on_crash: "preserve",
    gdb: null,
    shares: [],
  });
}

/** Defines (or redefines, same UUID) the domain through a bare client. */
export async function defineRcloudDomain(lv: LibvirtClient, d: RcloudDomain): Promise<RemoteNonnullDomain> {
  return (await lv.call(P.domainDefineXml, { xml: rcloudDomainXml(d) })).dom;
}

/** Destroys (if running) and undefines every domain whose name starts with `prefix`. */
export async function removeDomains(lv: LibvirtClient, prefix: string): Promise<void> {
  const { domains } = await lv.call(P.connectListAllDomains, { need_results: 1, flags: 0 });
  await Promise.all(
    domains
      .filter((d) => d.name.startsWith(prefix))
      .map(async (dom) => {
        await lv.call(P.domainDestroy, { dom }).catch(() => {});
        await lv.call(P.domainUndefine, { dom }).catch(() => {});
      }),
  );
}
