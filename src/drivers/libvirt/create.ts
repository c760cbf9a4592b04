/**
 * Making a VM on libvirt: its volumes (root overlay, data disks, cloud-init seed), the domain
 * XML from the template, define and start. What it made is recorded in `made` as it goes, so
 * the driver can roll a failure back (rollbacks.ts).
 */
import { remoteProcedures as P } from "../../libvirt/index.ts";
import type { RemoteNonnullStorageVol } from "../../libvirt/index.ts";
import { faultPoint } from "../../util/fault-points.ts";
import { reportedBus } from "../../api-types/values.ts";
import { allocateDiskSlots, type DiskSlot } from "../shared/disk-slots.ts";
import { randomMac } from "../shared/mac.ts";
import { DriverError, type DiskInfo, type VmRecord, type VmSpec } from "../types.ts";
import { type DomainType, filesystemTags, METADATA_NS, missingDiskPlacement, nvmeDisk, onCrashFor, qemuArgs, renderDomainXml, type TemplateDisk, type TemplateNvmeDisk } from "./domain-xml.ts";
import type { Networks } from "./networks.ts";
import { GiB, type Sessions, type VmStorage } from "./storage.ts";

const DEFINE_VALIDATE = 1;
/** PCI devices of the template libvirt puts behind root ports besides virtio data disks (root disk, SCSI controller, NIC, USB, virtio-serial, balloon, RNG). */
const PCI_DEVICES = 7;
/** Root ports left free for disks plugged in while the VM runs. */
const HOTPLUG_PORTS = 8;

export interface VmBuilder {
  sessions: Sessions;
  storage: VmStorage;
  networks: Networks;
  template: string;
  /** The operator's template file, or null for the embedded one. */
  templatePath: string | null;
  domainType: DomainType;
  /** Owner for volumes QEMU opens itself (NVMe disks are QEMU arguments, unlabelled by libvirt). */
  qemuOwner: { uid: number; gid: number } | null;
  consoleLogDir: string;
  /** The host address user-mode SSH forwards listen on (an IPv4 address; 0.0.0.0 = all). */
  sshForwardBind: string;
}

/** Makes the VM `spec` with domain UUID `uuid`, pushing each volume it creates onto `made`. */
export async function buildVm(b: VmBuilder, spec: VmSpec, uuid: string, made: RemoteNonnullStorageVol[]): Promise<VmRecord> {
  const c = b.sessions();
  const pool = await b.storage.pool();
  const disks: TemplateDisk[] = [];
  // Targets and drive addresses of every disk, per bus, from one allocator.
  const slots = allocateDiskSlots(spec.dataDisks.map((d) => reportedBus(d.bus)), { seed: spec.seedIso !== null });
  const placed = (slot: DiskSlot) => ({ target: slot.target!, bus: slot.bus, drive: slot.drive });

  // Root disk: a qcow2 overlay on the base image, grown to the requested size.
  const rootBytes = Math.max(spec.rootDiskGb * GiB, spec.image.virtualSizeBytes);
  const root = await b.storage.create({ name: `${spec.id}-root.qcow2`, capacityBytes: rootBytes, format: "qcow2", backing: { path: spec.image.path, format: spec.image.format } }, pool);
  made.push(root.vol);
  await faultPoint("create.after-root-volume");
  disks.push({ device: "disk", format: "qcow2", path: root.path, ...placed(slots.root), readonly: false, serial: null });

  // Data disks with the serials kdevops workflows look for (kdevops0..N).
  const nvmeDisks: TemplateNvmeDisk[] = [];
  const dataInfo: DiskInfo[] = [];
  for (const [i, d] of spec.dataDisks.entries()) {
    const slot = slots.data[i]!;
    const nvme = slot.bus === "nvme";
    const { vol, path } = await b.storage.create({ name: `${spec.id}-data${i}.qcow2`, capacityBytes: d.sizeGb * GiB, format: "qcow2", owner: nvme ? b.qemuOwner : null }, pool);
    made.push(vol);
    await faultPoint("create.after-data-volume");
    const serial = `kdevops${i}`;
    dataInfo.push({ type: "data", size_gb: d.sizeGb, driver: slot.bus, format: "qcow2", serial, path });
    if (nvme) nvmeDisks.push(nvmeDisk(slot.ordinal, serial, path, "qcow2"));
    else disks.push({ device: "disk", format: "qcow2", path, ...placed(slot), readonly: false, serial });
  }

  // cloud-init NoCloud seed, uploaded through a volume stream (works on remote hosts).
  if (spec.seedIso && slots.seed) {
    const { vol, path } = await b.storage.create({ name: `${spec.id}-seed.iso`, capacityBytes: spec.seedIso.byteLength, format: "raw" }, pool);
    made.push(vol);
    await b.storage.upload(vol, spec.seedIso);
    await faultPoint("create.after-seed-upload");
    disks.push({ device: "cdrom", format: "raw", path, ...placed(slots.seed), readonly: true, serial: null });
  }

  const netMode = spec.network.mode;
  const mac = randomMac();
  let interfaceType: "network" | "bridge" = "network";
  if (netMode === "bridge" && spec.network.bridge) interfaceType = await b.networks.interfaceType(spec.network.bridge);
  const sshPort = netMode === "user" ? spec.network.sshPort ?? 0 : "";
  if (netMode === "user" && !sshPort) throw new DriverError("failed", "user networking needs an SSH port");
  const netdev = netMode === "user" ? `user,id=net0,hostfwd=tcp:${b.sshForwardBind}:${sshPort}-:22${spec.network.restrict ? ",restrict=on" : ""}` : "";
  const xml = renderDomainXml(b.template, {
    domain_type: b.domainType,
    name: spec.name,
    uuid,
    id: spec.id,
    image: spec.image.id,
    created_at: spec.createdAt,
    owner: spec.owner ?? "",
    placement_group: spec.placementGroup ?? "",
    ssh_user: spec.ssh.user,
    root_disk_gb: spec.rootDiskGb,
    memory_mb: spec.memoryMb,
    max_memory_mb: spec.maxMemoryMb,
    vcpus: spec.vcpus,
    max_vcpus: spec.maxVcpus,
    pcie_root_ports: PCI_DEVICES + spec.dataDisks.length + spec.shares.length + HOTPLUG_PORTS,
    metadata_ns: METADATA_NS,
    boot: spec.boot,
    disks,
    nvme_disks: nvmeDisks,
    network: { mode: netMode, bridge: spec.network.bridge ?? "", interface_type: interfaceType, mac, ssh_port: sshPort, restrict: spec.network.restrict, netdev },
    console_log: `${b.consoleLogDir}/${spec.id}-serial.log`,
    on_panic: spec.onPanic,
    on_crash: onCrashFor(spec.onPanic),
    // The gdbstub listens where the SSH forwards do: 127.0.0.1 of a local host.
    gdb: spec.gdbPort ? { port: spec.gdbPort, arg: `tcp:${b.sshForwardBind}:${spec.gdbPort}` } : null,
    shares: spec.shares.map((s) => ({ host_path: s.hostPath, tag: s.tag, readonly: s.readonly, transport: s.transport })),
  });
  const tags = filesystemTags(xml);
  const unshared = spec.shares.filter((s) => !tags.includes(s.tag));
  if (unshared.length) throw new DriverError("unsupported", `the domain template ${b.templatePath ?? ""} has no filesystem block: cannot share ${unshared.map((s) => s.tag).join(", ")} (copy the shares blocks from the embedded template)`);
  // An operator's template written before NVMe disks existed would drop them silently.
  const args = qemuArgs(xml);
  const lost = nvmeDisks.filter((d) => !args.includes(d.device_arg));
  if (lost.length) throw new DriverError("unsupported", `the domain template ${b.templatePath ?? ""} has no nvme_disks block: cannot attach ${lost.map((d) => d.serial).join(", ")} as NVMe (copy that block from the embedded template)`);
  if (spec.gdbPort && !args.includes("-gdb")) throw new DriverError("unsupported", `the domain template ${b.templatePath ?? ""} has no gdb block: cannot expose a gdbstub (copy it from the embedded template's qemu:commandline)`);
  const unplaced = missingDiskPlacement(xml, disks);
  if (unplaced.length) throw new DriverError("unsupported", `the domain template ${b.templatePath ?? ""} lacks ${unplaced.join(", ")} (copy the disk block and the scsi controller from the embedded template)`);
  // An operator's own template is checked against libvirt's schema on every define (a
  // clear error instead of a silently ignored element); the embedded one is checked by
  // the test suite in every variant, which saves libvirtd ~6 ms of CPU per create.
  await faultPoint("create.before-define");
  const { dom } = await c.call(P.domainDefineXmlFlags, { xml, flags: b.templatePath ? DEFINE_VALIDATE : 0 });
  await faultPoint("create.after-define");
  if (spec.start) {
    await faultPoint("create.before-start");
    await c.call(P.domainCreate, { dom });
    await faultPoint("create.after-start");
  }
  // Everything is known already: no need to read it back from a host that may be busy
  // starting many guests.
  const gb = (bytes: number) => Math.round((bytes / GiB) * 100) / 100;
  const seed = disks.find((d) => d.device === "cdrom");
  return {
    id: spec.id,
    name: spec.name,
    uuid,
    state: spec.start ? "running" : "stopped",
    vcpus: spec.vcpus,
    maxVcpus: spec.maxVcpus,
    memoryMb: spec.memoryMb,
    maxMemoryMb: spec.maxMemoryMb,
    pending: null,
    image: spec.image.id,
    disks: [
      { type: "root", size_gb: gb(rootBytes), driver: "virtio", format: "qcow2", serial: null, path: root.path },
      ...dataInfo,
      ...(seed ? [{ type: "seed" as const, size_gb: gb(spec.seedIso?.byteLength ?? 0), driver: "sata" as const, format: "raw", serial: null, path: seed.path }] : []),
    ],
    network: { mode: netMode, bridge: spec.network.bridge, mac: netMode === "none" ? null : mac, sshPort: spec.network.sshPort, restrict: spec.network.restrict },
    sshUser: spec.ssh.user,
    boot: spec.boot,
    createdAt: spec.createdAt,
    updatedAt: spec.createdAt,
    owner: spec.owner,
    placementGroup: spec.placementGroup,
    cpuTimeNs: 0n,
    gdbPort: spec.gdbPort,
    onPanic: spec.onPanic,
    crashReason: null,
    shares: spec.shares,
  };
}
