/**
 * The XML side of changing a VM on libvirt (update.ts): edits of a domain definition and of
 * rcloud's metadata element that keep everything else as libvirt wrote it (parsed and rebuilt
 * in document order by fast-xml-parser, never by regex), the device documents hot-plug
 * attaches and detaches, and the facts about a domain a change needs (free disk targets,
 * SCSI units, SATA ports, NVMe ordinals, serials).
 */
import { XMLBuilder, XMLParser } from "fast-xml-parser";
import { diskName, SATA_PORTS_PER_CONTROLLER } from "../shared/disk-slots.ts";
import { optValue } from "../shared/qemu-opts.ts";
import type { PendingChanges, VmBoot } from "../types.ts";
import type { TemplateDisk, TemplateNvmeDisk } from "./domain-xml.ts";

const options = { preserveOrder: true, ignoreAttributes: false, attributeNamePrefix: "@_", parseTagValue: false, parseAttributeValue: false, trimValues: false } as const;
const parser = new XMLParser(options);
const builder = new XMLBuilder({ ...options, suppressEmptyNode: true });

type Node = Record<string, unknown>;
type Attrs = Record<string, string>;

const localName = (tag: string): string => tag.slice(tag.indexOf(":") + 1);
const tagOf = (n: Node): string => Object.keys(n).find((k) => k !== ":@") ?? "";
const kids = (n: Node): Node[] => (Array.isArray(n[tagOf(n)]) ? (n[tagOf(n)] as Node[]) : []);
const attrs = (n: Node): Attrs => ((n[":@"] as Attrs | undefined) ?? {});
const attr = (n: Node, name: string): string | undefined => attrs(n)[`@_${name}`];
const isTag = (n: Node, name: string): boolean => localName(tagOf(n)) === name;
const child = (n: Node, name: string): Node | undefined => kids(n).find((c) => isTag(c, name));
const text = (n: Node | undefined): string => (n ? kids(n).map((c) => (typeof c["#text"] === "string" ? c["#text"] : "")).join("") : "");

function el(tag: string, a: Record<string, string | number> = {}, children: Node[] = []): Node {
  const node: Node = { [tag]: children };
  const at = Object.fromEntries(Object.entries(a).map(([k, v]) => [`@_${k}`, String(v)]));
  if (Object.keys(at).length) node[":@"] = at;
  return node;
}
const textEl = (tag: string, value: string | number, a: Record<string, string | number> = {}): Node => el(tag, a, [{ "#text": String(value) }]);

function setText(n: Node, value: string | number): void {
  n[tagOf(n)] = [{ "#text": String(value) }];
}
function setAttr(n: Node, name: string, value: string | number | null): void {
  const a = { ...attrs(n) };
  if (value === null) delete a[`@_${name}`];
  else a[`@_${name}`] = String(value);
  if (Object.keys(a).length) n[":@"] = a;
  else delete n[":@"];
}
function removeWhere(parent: Node, pred: (c: Node) => boolean): void {
  parent[tagOf(parent)] = kids(parent).filter((c) => !pred(c));
}
/** Inserts `node` after the last child named `after` (or at the end). */
function insertAfterLast(parent: Node, after: string, node: Node): void {
  const list = kids(parent);
  let at = -1;
  list.forEach((c, i) => {
    if (isTag(c, after)) at = i;
  });
  list.splice(at < 0 ? list.length : at + 1, 0, node);
  parent[tagOf(parent)] = list;
}

function parseRoot(xml: string, name: string): { tree: Node[]; root: Node } {
  const tree = parser.parse(xml) as Node[];
  const root = tree.find((n) => isTag(n, name));
  if (!root) throw new Error(`not a <${name}> document`);
  return { tree, root };
}

// ---- reading ----

export interface DomainFacts {
  vcpus: number;
  maxVcpus: number;
  memoryMb: number;
  maxMemoryMb: number;
  /** Disk targets in use (vda, sdb, ...). */
  targets: Set<string>;
  /** Units taken on SCSI controller 0. */
  scsiUnits: Set<number>;
  /** SATA ports taken, as "controller:unit". */
  sataPorts: Set<string>;
  /** NVMe ordinals taken (rcloud-nvme<N>). */
  nvmeOrdinals: Set<number>;
  hasScsiController: boolean;
  /** The numbers of the kdevops<N> serials of every data disk. */
  serials: number[];
  /** Source file → the <disk> element as XML (for detaching it). */
  disks: Map<string, string>;
}

const kib = (n: Node | undefined): number => {
  const v = Number(text(n));
  const unit = n ? (attr(n, "unit") ?? "KiB") : "KiB";
  const factor: Record<string, number> = { b: 1 / 1024, bytes: 1 / 1024, KiB: 1, k: 1, MiB: 1024, M: 1024, GiB: 1024 ** 2, G: 1024 ** 2 };
  return v * (factor[unit] ?? 1);
};

export function domainFacts(xml: string): DomainFacts {
  const { root } = parseRoot(xml, "domain");
  const vcpu = child(root, "vcpu");
  const maxVcpus = Number(text(vcpu)) || 1;
  const vcpus = Number(vcpu ? attr(vcpu, "current") : undefined) || maxVcpus;
  const maxMemoryMb = Math.round(kib(child(root, "memory")) / 1024);
  const cur = child(root, "currentMemory");
  const memoryMb = cur ? Math.round(kib(cur) / 1024) : maxMemoryMb;
  const devices = child(root, "devices") ?? el("devices");
  const facts: DomainFacts = {
    vcpus,
    maxVcpus,
    memoryMb,
    maxMemoryMb,
    targets: new Set(),
    scsiUnits: new Set(),
    sataPorts: new Set(),
    nvmeOrdinals: new Set(),
    hasScsiController: false,
    serials: [],
    disks: new Map(),
  };
  for (const d of kids(devices)) {
    if (isTag(d, "controller") && attr(d, "type") === "scsi" && attr(d, "index") === "0") facts.hasScsiController = true;
    if (!isTag(d, "disk")) continue;
    const target = child(d, "target");
    const dev = target ? attr(target, "dev") : undefined;
    if (dev) facts.targets.add(dev);
    const address = child(d, "address");
    if (address && attr(address, "type") === "drive") {
      const bus = target ? attr(target, "bus") : undefined;
      if (bus === "scsi" && (attr(address, "controller") ?? "0") === "0") facts.scsiUnits.add(Number(attr(address, "unit") ?? 0));
      if (bus === "sata") facts.sataPorts.add(`${attr(address, "controller") ?? 0}:${attr(address, "unit") ?? 0}`);
    }
    const serial = /^kdevops(\d+)$/.exec(text(child(d, "serial")))?.[1];
    if (serial !== undefined) facts.serials.push(Number(serial));
    const source = child(d, "source");
    const file = source ? attr(source, "file") : undefined;
    if (file) facts.disks.set(file, builder.build([d]) as string);
  }
  for (const a of kids(child(root, "commandline") ?? el("x"))) {
    const m = /id=rcloud-nvme(\d+)-ctrl,serial=kdevops(\d+)/.exec(attr(a, "value") ?? "");
    if (m) {
      facts.nvmeOrdinals.add(Number(m[1]));
      facts.serials.push(Number(m[2]));
    }
  }
  return facts;
}

/** The first virtio target (vdb, vdc, ...) and SCSI/SATA target (sda, ...) not in use. */
export function freeTarget(prefix: "vd" | "sd", used: Set<string>): string {
  for (let i = prefix === "vd" ? 1 : 0; ; i++) {
    const t = diskName(prefix, i);
    if (!used.has(t)) return t;
  }
}

export function freeScsiUnit(used: Set<number>): number {
  let u = 0;
  while (used.has(u)) u++;
  return u;
}

export function freeSataPort(used: Set<string>): { controller: number; unit: number } {
  for (let i = 0; ; i++) {
    const p = { controller: Math.floor(i / SATA_PORTS_PER_CONTROLLER), unit: i % SATA_PORTS_PER_CONTROLLER };
    if (!used.has(`${p.controller}:${p.unit}`)) return p;
  }
}

export function freeOrdinal(used: Set<number>): number {
  let n = 0;
  while (used.has(n)) n++;
  return n;
}

// ---- device documents ----

/** A `<disk>` element for a data disk, as the template renders it. */
export function diskElement(d: TemplateDisk): Node {
  const children: Node[] = [
    el("driver", { name: "qemu", type: d.format, discard: "unmap" }),
    el("source", { file: d.path }),
    el("target", { dev: d.target, bus: d.bus }),
  ];
  if (d.serial) children.push(textEl("serial", d.serial));
  if (d.drive) children.push(el("address", { type: "drive", controller: d.drive.controller, bus: 0, target: 0, unit: d.drive.unit }));
  return el("disk", { type: "file", device: d.device }, children);
}

export function diskXml(d: TemplateDisk): string {
  return builder.build([diskElement(d)]) as string;
}

export function scsiControllerXml(): string {
  return builder.build([el("controller", { type: "scsi", index: 0, model: "virtio-scsi" })]) as string;
}

// ---- editing a definition ----

export interface DomainEdit {
  vcpus?: { current: number; max: number };
  memory?: { currentMb: number; maxMb: number };
  /** undefined: unchanged; null: direct kernel boot off. */
  boot?: VmBoot | null;
  addDisks?: TemplateDisk[];
  addNvme?: TemplateNvmeDisk[];
  /** Disks (and NVMe disks) to drop, by source file. */
  removePaths?: string[];
  /** Adds the virtio-scsi controller (index 0) when the domain has no SCSI controller. */
  scsiController?: boolean;
  /** rcloud's metadata: the memory target, the root disk's size. */
  metadata?: MetadataEdit;
}

export interface MetadataEdit {
  memoryMb?: number;
  rootDiskGb?: number;
  addNvme?: TemplateNvmeDisk[];
  removePaths?: string[];
  /** undefined: unchanged; null: removed. Kept in the running domain's metadata only. */
  pending?: PendingChanges | null;
}

/** `xml` (a domain definition) with `e` applied; everything else as it was. */
export function editDomainXml(xml: string, e: DomainEdit): string {
  const { tree, root } = parseRoot(xml, "domain");
  if (e.vcpus) {
    const vcpu = child(root, "vcpu") ?? textEl("vcpu", 1, { placement: "static" });
    if (!child(root, "vcpu")) insertAfterLast(root, "currentMemory", vcpu);
    setText(vcpu, e.vcpus.max);
    setAttr(vcpu, "current", e.vcpus.current < e.vcpus.max ? e.vcpus.current : null);
    removeWhere(root, (c) => isTag(c, "vcpus")); // per-vCPU states of the old count
  }
  if (e.memory) {
    for (const [name, mb] of [["memory", e.memory.maxMb], ["currentMemory", e.memory.currentMb]] as const) {
      const n = child(root, name);
      if (!n) {
        insertAfterLast(root, name === "memory" ? "metadata" : "memory", textEl(name, mb * 1024, { unit: "KiB" }));
        continue;
      }
      setText(n, mb * 1024);
      setAttr(n, "unit", "KiB");
    }
  }
  if (e.boot !== undefined) editBoot(root, e.boot);
  const devices = child(root, "devices");
  if (devices) {
    if (e.removePaths?.length) {
      const gone = new Set(e.removePaths);
      removeWhere(devices, (c) => isTag(c, "disk") && gone.has(attr(child(c, "source") ?? el("x"), "file") ?? ""));
    }
    for (const d of e.addDisks ?? []) insertAfterLast(devices, "disk", diskElement(d));
    if (e.scsiController && !kids(devices).some((c) => isTag(c, "controller") && attr(c, "type") === "scsi")) {
      insertAfterLast(devices, "disk", el("controller", { type: "scsi", index: 0, model: "virtio-scsi" }));
    }
  }
  if (e.addNvme?.length || e.removePaths?.length) editCommandline(root, e.addNvme ?? [], e.removePaths ?? []);
  if (e.metadata) {
    const vm = kids(child(root, "metadata") ?? el("x")).find((c) => isTag(c, "vm"));
    if (vm) editVmMetadata(vm, e.metadata);
  }
  return builder.build(tree) as string;
}

/** rcloud's metadata element (as DOMAIN_GET_METADATA returns it) with `m` applied. */
export function editMetadataXml(metadataXml: string, m: MetadataEdit): string {
  const { tree, root } = parseRoot(metadataXml, "vm");
  editVmMetadata(root, m);
  return builder.build(tree) as string;
}

function editBoot(root: Node, boot: VmBoot | null): void {
  const os = child(root, "os");
  if (!os) return;
  removeWhere(os, (c) => ["kernel", "initrd", "cmdline", "boot"].includes(localName(tagOf(c))));
  if (boot === null) {
    insertAfterLast(os, "type", el("boot", { dev: "hd" }));
    return;
  }
  const add = [textEl("kernel", boot.kernel), ...(boot.initrd ? [textEl("initrd", boot.initrd)] : []), ...(boot.cmdline ? [textEl("cmdline", boot.cmdline)] : [])];
  for (const n of add.reverse()) insertAfterLast(os, "type", n);
}

/** NVMe disks are QEMU arguments (libvirt 9.0 has no NVMe bus): `-drive VALUE -device VALUE` pairs. */
function editCommandline(root: Node, add: TemplateNvmeDisk[], removePaths: string[]): void {
  let cmd = child(root, "commandline");
  if (!cmd) {
    if (add.length === 0) return;
    cmd = el("qemu:commandline");
    kids(root).push(cmd);
    root[tagOf(root)] = kids(root);
    setAttr(root, "xmlns:qemu", "http://libvirt.org/schemas/domain/qemu/1.0");
  }
  const prefix = tagOf(cmd).includes(":") ? tagOf(cmd).slice(0, tagOf(cmd).indexOf(":") + 1) : "";
  const args = kids(cmd).filter((c) => isTag(c, "arg"));
  // Which controller ids belong to removed files: `-drive file=PATH,...,id=rcloud-nvmeN`.
  const ids = new Set<string>();
  for (const a of args) {
    const v = attr(a, "value") ?? "";
    for (const p of removePaths) {
      const id = /,id=(rcloud-nvme\d+),/.exec(v)?.[1];
      if (id && v.startsWith(`file=${optValue(p)},`)) ids.add(id);
    }
  }
  const kept: Node[] = [];
  for (let i = 0; i < args.length; i++) {
    const v = attr(args[i + 1] ?? el("x"), "value") ?? "";
    const flag = attr(args[i]!, "value");
    const owner = (flag === "-drive" ? /,id=(rcloud-nvme\d+),/.exec(v)?.[1] : flag === "-device" ? /,drive=(rcloud-nvme\d+),/.exec(v)?.[1] : undefined) ?? null;
    if (owner !== null && ids.has(owner)) {
      i++; // the flag and its value
      continue;
    }
    kept.push(args[i]!);
  }
  for (const d of add) for (const v of ["-drive", d.drive_arg, "-device", d.device_arg]) kept.push(el(`${prefix}arg`, { value: v }));
  cmd[tagOf(cmd)] = [...kids(cmd).filter((c) => !isTag(c, "arg")), ...kept];
}

function editVmMetadata(vm: Node, m: MetadataEdit): void {
  const prefix = tagOf(vm).includes(":") ? tagOf(vm).slice(0, tagOf(vm).indexOf(":") + 1) : "";
  const put = (name: string, value: number) => {
    const n = child(vm, name);
    if (n) setText(n, value);
    else kids(vm).push(textEl(prefix + name, value));
  };
  if (m.memoryMb !== undefined) put("memory_mb", m.memoryMb);
  if (m.rootDiskGb !== undefined) put("root_disk_gb", m.rootDiskGb);
  if (m.removePaths?.length) {
    const gone = new Set(m.removePaths);
    removeWhere(vm, (c) => isTag(c, "nvme_disk") && gone.has(attr(c, "path") ?? ""));
  }
  for (const d of m.addNvme ?? []) kids(vm).push(el(`${prefix}nvme_disk`, { serial: d.serial, format: d.format, path: d.path }));
  if (m.pending !== undefined) {
    removeWhere(vm, (c) => isTag(c, "pending"));
    if (m.pending !== null) kids(vm).push(pendingElement(prefix, m.pending));
  }
}

function pendingElement(prefix: string, p: PendingChanges): Node {
  const a: Record<string, number> = {};
  if (p.vcpus !== undefined) a.vcpus = p.vcpus;
  if (p.maxVcpus !== undefined) a.max_vcpus = p.maxVcpus;
  if (p.memoryMb !== undefined) a.memory_mb = p.memoryMb;
  if (p.maxMemoryMb !== undefined) a.max_memory_mb = p.maxMemoryMb;
  const boot = p.boot === undefined ? [] : [el(`${prefix}boot`, p.boot === null ? { off: "true" } : { kernel: p.boot.kernel, ...(p.boot.initrd ? { initrd: p.boot.initrd } : {}), ...(p.boot.cmdline ? { cmdline: p.boot.cmdline } : {}) })];
  return el(`${prefix}pending`, a, boot);
}
