/**
 * Domain XML in and out: rendering from the Liquid template (values XML-escaped by the
 * engine) and reading back what rcloud needs (metadata, disks, NIC) from libvirt's XML.
 */
import { XMLParser } from "fast-xml-parser";
import { Liquid } from "liquidjs";
import { readFileSync } from "node:fs";
// Embedded in the executable; operators override it with vm_defaults.template.
import builtInTemplate from "../../../templates/vm-q35.xml.liquid" with { type: "text" };
import { optValue } from "../shared/qemu-opts.ts";
import { isOnPanic } from "../../api-types/values.ts";
import type { DiskInfo, NetworkMode, OnPanic, PendingChanges, ReportedDiskBus, ShareSpec } from "../types.ts";

export const METADATA_NS = "https://rcloud.dev/xmlns/vm/1";

const engine = new Liquid({ outputEscape: "escape", strictVariables: true, strictFilters: true });

export interface TemplateDisk {
  device: "disk" | "cdrom";
  format: string;
  path: string;
  target: string;
  bus: string;
  readonly: boolean;
  serial: string | null;
  /** SCSI/SATA drive address from the slot allocator (src/drivers/shared/disk-slots.ts); else null. */
  drive: { controller: number; unit: number } | null;
}

/** An NVMe data disk: QEMU arguments (libvirt 9.0 has no NVMe bus), recorded in metadata. */
export interface TemplateNvmeDisk {
  serial: string;
  format: string;
  path: string;
  /** `-drive` value: the file, with commas doubled as QEMU's option syntax wants. */
  drive_arg: string;
  /** `-device` value: the controller with its one namespace. */
  device_arg: string;
}

/**
 * The QEMU arguments of the `ordinal`-th NVMe data disk (0-based among the NVMe disks), with
 * serial `serial` (kdevops<N>). The controllers get fixed addresses on pcie.0 from slot 0x11
 * on, 8 functions per slot (32 disks fit in 0x11-0x14): QEMU would otherwise give the first
 * free slot to them before libvirt's own devices take theirs. libvirt fills slots from 0x01
 * up, and the user-mode NIC is at 0x10.
 */
export function nvmeDisk(ordinal: number, serial: string, path: string, format: string): TemplateNvmeDisk {
  const id = `rcloud-nvme${ordinal}`;
  const slot = (0x11 + Math.floor(ordinal / 8)).toString(16);
  const fn = ordinal % 8;
  return {
    serial,
    format,
    path,
    drive_arg: `file=${optValue(path)},format=${format},if=none,id=${id},discard=unmap`,
    device_arg: `nvme,id=${id}-ctrl,serial=${serial},drive=${id},bus=pcie.0,addr=0x${slot}.${fn}${fn === 0 ? ",multifunction=on" : ""}`,
  };
}

/** libvirt domain types rcloud renders: kvm, qemu (TCG), and test (libvirt's test driver). */
export type DomainType = "kvm" | "qemu" | "test";

export interface DomainTemplateVars {
  domain_type: DomainType;
  name: string;
  uuid: string;
  id: string;
  image: string;
  created_at: string;
  owner: string;
  placement_group: string;
  ssh_user: string;
  root_disk_gb: number;
  memory_mb: number;
  max_memory_mb: number;
  vcpus: number;
  max_vcpus: number;
  /** PCIe root ports: libvirt puts its PCI devices behind them; the ones left over take hot-plugged disks. */
  pcie_root_ports: number;
  metadata_ns: string;
  boot: { kernel: string; initrd: string | null; cmdline: string | null } | null;
  disks: TemplateDisk[];
  nvme_disks: TemplateNvmeDisk[];
  network: {
    mode: NetworkMode;
    bridge: string;
    interface_type: "network" | "bridge";
    mac: string;
    ssh_port: number | string;
    restrict: boolean;
    netdev: string;
  };
  console_log: string | null;
  /** Shared host directories: <filesystem> devices, and rcloud:share in the metadata. */
  shares: { host_path: string; tag: string; readonly: boolean; transport: string }[];
  on_panic: OnPanic;
  /** libvirt's <on_crash> for on_panic (see onCrashFor). */
  on_crash: "preserve" | "restart" | "destroy";
  /** The gdbstub: its port and QEMU's `-gdb` value; null when off. */
  gdb: { port: number; arg: string } | null;
}

/**
 * libvirt's own handling of a guest panic for each on_panic: it holds, resets or powers off
 * the guest without rcloud (also while rcloud is down); `dump` holds it and rcloud saves the
 * memory on the crash event (libvirt's coredump-* actions write outside the VM's pool).
 */
export function onCrashFor(onPanic: OnPanic): DomainTemplateVars["on_crash"] {
  return onPanic === "restart" ? "restart" : onPanic === "stop" ? "destroy" : "preserve";
}

export function loadTemplate(path: string | null): string {
  return path ? readFileSync(path, "utf8") : builtInTemplate;
}

export function renderDomainXml(template: string, vars: DomainTemplateVars): string {
  return engine.parseAndRenderSync(template, vars as unknown as Record<string, unknown>);
}

const parser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: "",
  removeNSPrefix: true,
  parseTagValue: false,
  parseAttributeValue: false,
  htmlEntities: true, // numeric references such as &#39; (liquid escapes quotes that way)
  // Elements only: <address controller='0'> has an attribute of that name too.
  isArray: (name, _path, _leaf, isAttribute) => !isAttribute && ["disk", "interface", "arg", "nvme_disk", "controller", "share", "filesystem"].includes(name),
});

type Node = Record<string, unknown>;
const obj = (v: unknown): Node => (v && typeof v === "object" ? (v as Node) : {});
const str = (v: unknown): string | null => (typeof v === "string" ? v : typeof v === "number" ? String(v) : null);

/** What rcloud reads back from a domain's XML. */
export interface ParsedDomain {
  rcloud: {
    id: string;
    image: string;
    createdAt: string;
    updatedAt: string;
    owner: string | null;
    placementGroup: string | null;
    sshUser: string;
    network: { mode: NetworkMode; bridge: string | null; sshPort: number | null; restrict: boolean };
    rootDiskGb: number | null;
    /** The memory rcloud set (the balloon's target); null for VMs created before it was recorded. */
    memoryMb: number | null;
    /** Changes waiting for the next start (only in a running domain's metadata). */
    pending: PendingChanges | null;
    /** VMs created before panics were handled: preserve. */
    onPanic: OnPanic;
    gdbPort: number | null;
  } | null;
  /** `<memory>`: the most the VM may have. */
  memoryMb: number;
  /** `<vcpu current>`: the vCPUs online now (domainGetInfo's figure). */
  vcpus: number;
  /** `<vcpu>`'s text: the most vCPUs the VM may have (hot-plug up to it). */
  maxVcpus: number;
  disks: Omit<DiskInfo, "size_gb">[];
  mac: string | null;
  boot: { kernel: string; initrd: string | null; cmdline: string | null } | null;
  consoleLog: string | null;
  /** From rcloud's metadata (what was asked for: readonly virtiofs is not in the device XML). */
  shares: ShareSpec[];
}

export function parseDomainXml(xml: string): ParsedDomain {
  const dom = obj(parser.parse(xml).domain);
  const meta = obj(obj(dom.metadata).vm);
  const devices = obj(dom.devices);
  const net = obj(meta.network);
  const mem = obj(dom.memory);
  const memUnit = str(mem.unit) ?? "KiB";
  const memValue = Number(str(mem["#text"]) ?? str(dom.memory) ?? 0);
  const memoryMb = memUnit === "MiB" ? memValue : memUnit === "GiB" ? memValue * 1024 : Math.round(memValue / 1024);
  const vcpuNode = dom.vcpu;
  // <vcpu current='N'>: the vCPUs online now (what domainGetInfo reports), else all of them.
  const maxVcpus = Number(typeof vcpuNode === "object" ? str(obj(vcpuNode)["#text"]) : str(vcpuNode)) || 0;
  const vcpus = Number(typeof vcpuNode === "object" ? str(obj(vcpuNode).current) : null) || maxVcpus;
  const os = obj(dom.os);

  const disks: Omit<DiskInfo, "size_gb">[] = [];
  for (const d of (devices.disk as unknown[] | undefined) ?? []) {
    const disk = obj(d);
    const path = str(obj(disk.source).file);
    if (!path) continue;
    const serial = str(disk.serial);
    const bus = str(obj(disk.target).bus) ?? "virtio";
    const device = str(disk.device);
    disks.push({
      // libvirt lists disks sorted by bus and name, not as defined: the root disk is vda.
      type: device === "cdrom" || path.endsWith("-seed.iso") ? "seed" : str(obj(disk.target).dev) === "vda" ? "root" : "data",
      driver: bus as ReportedDiskBus,
      format: str(obj(disk.driver).type) ?? "raw",
      serial,
      path,
    });
  }
  for (const d of (meta.nvme_disk as unknown[] | undefined) ?? []) {
    const disk = obj(d);
    const path = str(disk.path);
    if (path) disks.push({ type: "data", driver: "nvme", format: str(disk.format) ?? "qcow2", serial: str(disk.serial), path });
  }
  // Root, then data disks in the order of their serials (kdevops0..N) whatever their bus, then the seed.
  const rank = (d: (typeof disks)[number]) =>
    d.type === "root" ? -1 : d.type === "seed" ? Number.MAX_SAFE_INTEGER : Number(/^kdevops(\d+)$/.exec(d.serial ?? "")?.[1] ?? Number.MAX_SAFE_INTEGER - 1);
  disks.sort((a, b) => rank(a) - rank(b));
  const iface = obj(((devices.interface as unknown[] | undefined) ?? [])[0]);
  let mac = str(obj(iface.mac).address);
  if (!mac) {
    // user-mode NIC lives in the qemu:commandline passthrough
    for (const a of (obj(dom.commandline).arg as unknown[] | undefined) ?? []) {
      const m = /mac=([0-9a-f:]{17})/i.exec(str(obj(a).value) ?? "");
      if (m) mac = m[1]!;
    }
  }
  const serialLog = str(obj(obj(devices.serial).log).file);

  const kernel = str(os.kernel);
  const mode = str(net.mode) as NetworkMode | null;
  const port = Number(str(net.ssh_port));
  const id = str(meta.id);
  return {
    rcloud: id
      ? {
          id,
          image: str(meta.image) ?? "",
          createdAt: str(meta.created_at) ?? "",
          updatedAt: str(meta.updated_at) ?? str(meta.created_at) ?? "",
          owner: str(meta.owner) || null,
          placementGroup: str(meta.placement_group) || null,
          sshUser: str(meta.ssh_user) ?? "",
          network: {
            mode: mode === "user" || mode === "bridge" || mode === "none" ? mode : "none",
            bridge: str(net.bridge) || null,
            sshPort: Number.isInteger(port) && port > 0 ? port : null,
            restrict: str(net.restrict) === "true",
          },
          rootDiskGb: Number(str(meta.root_disk_gb)) || null,
          memoryMb: Number(str(meta.memory_mb)) || null,
          pending: parsePending(meta.pending),
          onPanic: isOnPanic(str(meta.on_panic)) ? (str(meta.on_panic) as OnPanic) : "preserve",
          gdbPort: Number(str(obj(meta.gdb).port)) || null,
        }
      : null,
    memoryMb,
    vcpus,
    maxVcpus,
    disks,
    mac,
    boot: kernel ? { kernel, initrd: str(os.initrd), cmdline: str(os.cmdline) } : null,
    consoleLog: serialLog,
    shares: parseShares(meta.share),
  };
}

/** `<rcloud:share host_path=… tag=… readonly=… transport=…/>`, in order. */
function parseShares(v: unknown): ShareSpec[] {
  const out: ShareSpec[] = [];
  for (const s of (v as unknown[] | undefined) ?? []) {
    const n = obj(s);
    const hostPath = str(n.host_path);
    const tag = str(n.tag);
    if (!hostPath || !tag) continue;
    out.push({ hostPath, tag, readonly: str(n.readonly) === "true", transport: str(n.transport) === "9p" ? "9p" : "virtiofs" });
  }
  return out;
}

/** The tags of the domain's `<filesystem>` devices (an operator's template may lack the block). */
export function filesystemTags(xml: string): string[] {
  const devices = obj(obj(parser.parse(xml).domain).devices);
  return ((devices.filesystem as unknown[] | undefined) ?? []).map((f) => str(obj(obj(f).target).dir) ?? "");
}

/** `<rcloud:pending vcpus=… memory_mb=…><rcloud:boot kernel=… | off='true'/></rcloud:pending>`. */
function parsePending(v: unknown): PendingChanges | null {
  if (v === undefined || v === null) return null;
  const p = obj(v);
  const out: PendingChanges = {};
  const num = (k: string) => {
    const n = Number(str(p[k]));
    return Number.isInteger(n) && n > 0 ? n : undefined;
  };
  const vcpus = num("vcpus");
  if (vcpus !== undefined) out.vcpus = vcpus;
  const maxVcpus = num("max_vcpus");
  if (maxVcpus !== undefined) out.maxVcpus = maxVcpus;
  const memoryMb = num("memory_mb");
  if (memoryMb !== undefined) out.memoryMb = memoryMb;
  const maxMemoryMb = num("max_memory_mb");
  if (maxMemoryMb !== undefined) out.maxMemoryMb = maxMemoryMb;
  if (p.boot !== undefined) {
    const b = obj(p.boot);
    const kernel = str(b.kernel);
    out.boot = str(b.off) === "true" || !kernel ? null : { kernel, initrd: str(b.initrd), cmdline: str(b.cmdline) };
  }
  return Object.keys(out).length > 0 ? out : null;
}

/**
 * What a rendered domain lacks of the disk placement rcloud asked for: an operator's template
 * written before drive addresses or the virtio-scsi controller existed would leave libvirt to
 * derive them (7 units per SCSI controller, further ones of its default model, lsilogic).
 */
/** The values of the domain's `<qemu:commandline>` arguments, in order. */
export function qemuArgs(xml: string): string[] {
  const cmd = obj(obj(parser.parse(xml).domain).commandline);
  return ((cmd.arg as unknown[] | undefined) ?? []).map((a) => str(obj(a).value) ?? "");
}

export function missingDiskPlacement(xml: string, wanted: readonly TemplateDisk[]): string[] {
  const devices = obj(obj(parser.parse(xml).domain).devices);
  const rendered = new Map<string, Node>();
  for (const d of (devices.disk as unknown[] | undefined) ?? []) {
    const path = str(obj(obj(d).source).file);
    if (path) rendered.set(path, obj(d));
  }
  const missing: string[] = [];
  for (const w of wanted) {
    if (!w.drive) continue;
    const a = obj(rendered.get(w.path)?.address);
    if (str(a.type) !== "drive" || str(a.controller) !== String(w.drive.controller) || str(a.unit) !== String(w.drive.unit)) {
      missing.push(`the drive address of ${w.serial ?? w.path} (${w.bus} controller ${w.drive.controller} unit ${w.drive.unit})`);
    }
  }
  const virtioScsi = ((devices.controller as unknown[] | undefined) ?? []).some((c) => {
    const n = obj(c);
    return str(n.type) === "scsi" && str(n.index) === "0" && str(n.model) === "virtio-scsi";
  });
  if (wanted.some((w) => w.bus === "scsi") && !virtioScsi) missing.push("the virtio-scsi controller (index 0)");
  return missing;
}
