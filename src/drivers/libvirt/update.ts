/**
 * Changing a VM on libvirt (PATCH). A running domain is changed live where QEMU can — data
 * disks attached and detached (virtio on a spare PCIe root port, SCSI as a LUN of the
 * virtio-scsi controller), memory through the balloon up to the domain's maximum, more
 * vCPUs up to its maximum, the root disk grown by block resize — each with AFFECT_LIVE; the
 * definition (next start) gets the whole change in one define. What the definition has that
 * the running domain does not is written into the running domain's metadata only
 * (`<rcloud:pending>`), so it is shown until the next start and vanishes with it.
 * Every step has its undo; on failure the steps done are undone in reverse (the old
 * definition defined again, volumes made deleted); the root disk grows last (no undo), and
 * the volumes of removed disks are deleted only once everything else succeeded.
 */
import { isHotPluggable, reportedBus } from "../../api-types/values.ts";
import { CallTimeoutError, ErrorCode, LibvirtError, remoteProcedures as P } from "../../libvirt/index.ts";
import type { RemoteNonnullDomain, RemoteNonnullStorageVol } from "../../libvirt/index.ts";
import { pendingChanges } from "../shared/pending.ts";
import { DriverError, type VmChange, type VmChangeResult } from "../types.ts";
import { DomainState } from "./domain-state.ts";
import { METADATA_NS, nvmeDisk, parseDomainXml, type TemplateDisk, type TemplateNvmeDisk } from "./domain-xml.ts";
import { GiB, type Sessions, type VmStorage } from "./storage.ts";
import {
  diskXml,
  type DomainEdit,
  domainFacts,
  editDomainXml,
  editMetadataXml,
  freeOrdinal,
  freeSataPort,
  freeScsiUnit,
  freeTarget,
  scsiControllerXml,
} from "./update-xml.ts";

const AFFECT_LIVE = 1;
const XML_INACTIVE = 2;
const METADATA_ELEMENT = 2;
const BLOCK_RESIZE_BYTES = 1;
/** How long a guest gets to release a disk being detached. */
const DETACH_TIMEOUT_MS = 30_000;

export interface LibvirtUpdateContext {
  sessions: Sessions;
  storage: VmStorage;
  dom: RemoteNonnullDomain;
  /** Owner for volumes QEMU opens itself (NVMe disks). */
  qemuOwner: { uid: number; gid: number } | null;
}

type Undo = () => Promise<unknown>;

export async function updateDomain(ctx: LibvirtUpdateContext, change: VmChange): Promise<VmChangeResult> {
  const c = ctx.sessions();
  const { dom } = ctx;
  const { state } = await c.call(P.domainGetState, { dom, flags: 0 });
  const running = state === DomainState.RUNNING || state === DomainState.BLOCKED || state === DomainState.PAUSED;
  const config0 = (await c.call(P.domainGetXmlDesc, { dom, flags: XML_INACTIVE })).xml;
  const live0 = running ? (await c.call(P.domainGetXmlDesc, { dom, flags: 0 })).xml : config0;
  const now = parseDomainXml(live0);
  const meta = now.rcloud;
  if (!meta) throw new DriverError("not_found", `${dom.name} is not an rcloud VM`);
  const cf = domainFacts(config0);
  const lf = domainFacts(live0);
  const data = now.disks.filter((d) => d.type === "data");

  // Refusals before anything is touched.
  const removed = (change.removeDisks ?? []).map((serial) => {
    const d = data.find((x) => x.serial === serial);
    if (!d) throw new DriverError("not_found", `${dom.name} has no data disk ${serial}`);
    if (running && !isHotPluggable(d.driver)) throw notHotpluggable(dom.name, d.driver);
    return d;
  });
  for (const d of change.addDisks ?? []) if (running && !isHotPluggable(reportedBus(d.bus))) throw notHotpluggable(dom.name, reportedBus(d.bus));

  const result: VmChangeResult = { live: [], pending: [] };
  const note = (k: keyof VmChange, live: boolean) => (live ? result.live : result.pending).push(k);
  const undo: Undo[] = [];
  const edit: DomainEdit = { metadata: {} };
  const target0 = meta.memoryMb ?? lf.memoryMb;
  let liveTarget = target0;
  let liveVcpus = lf.vcpus;
  try {
    // vCPUs and memory: the definition always; the running domain when within its maxima.
    const vcpus = change.vcpus ?? cf.vcpus;
    const maxVcpus = change.maxVcpus ?? cf.maxVcpus;
    if (change.vcpus !== undefined || change.maxVcpus !== undefined) edit.vcpus = { current: vcpus, max: maxVcpus };
    if (change.maxVcpus !== undefined) note("maxVcpus", false);
    if (change.vcpus !== undefined) {
      // More vCPUs are hot-plugged; fewer wait for the next start (unplug needs the guest's consent).
      const live = running && change.vcpus > lf.vcpus && change.vcpus <= lf.maxVcpus;
      if (live) {
        await c.call(P.domainSetVcpusFlags, { dom, nvcpus: change.vcpus, flags: AFFECT_LIVE });
        undo.push(() => c.call(P.domainSetVcpusFlags, { dom, nvcpus: lf.vcpus, flags: AFFECT_LIVE }));
        liveVcpus = change.vcpus;
      }
      note("vcpus", live);
    }
    const memoryMb = change.memoryMb ?? meta.memoryMb ?? cf.memoryMb;
    const maxMemoryMb = change.maxMemoryMb ?? cf.maxMemoryMb;
    if (change.memoryMb !== undefined || change.maxMemoryMb !== undefined) {
      edit.memory = { currentMb: memoryMb, maxMb: maxMemoryMb };
      edit.metadata!.memoryMb = memoryMb;
    }
    if (change.maxMemoryMb !== undefined) note("maxMemoryMb", false);
    if (change.memoryMb !== undefined) {
      const live = running && change.memoryMb <= lf.maxMemoryMb;
      if (live) {
        await c.call(P.domainSetMemoryFlags, { dom, memory: BigInt(change.memoryMb * 1024), flags: AFFECT_LIVE });
        undo.push(() => c.call(P.domainSetMemoryFlags, { dom, memory: BigInt(target0 * 1024), flags: AFFECT_LIVE }));
        liveTarget = change.memoryMb;
      }
      note("memoryMb", live);
    }
    if (change.boot !== undefined) {
      edit.boot = change.boot;
      note("boot", false);
    }

    // Data disks out: detached from the running domain (the guest lets go), dropped from the definition.
    if (removed.length > 0) {
      for (const d of removed) {
        if (!running) continue;
        const xml = lf.disks.get(d.path);
        if (!xml) throw new DriverError("failed", `${dom.name}: disk ${d.serial} is not in the running domain`);
        await c.call(P.domainDetachDeviceFlags, { dom, xml, flags: AFFECT_LIVE });
        undo.push(() => c.call(P.domainAttachDeviceFlags, { dom, xml, flags: AFFECT_LIVE }));
        await untilDetached(ctx, d.path);
      }
      edit.removePaths = removed.map((d) => d.path);
      edit.metadata!.removePaths = edit.removePaths;
      note("removeDisks", running);
    }

    // Data disks in: a volume each, attached to the running domain, added to the definition.
    if (change.addDisks?.length) {
      const used = {
        targets: new Set([...cf.targets, ...lf.targets]),
        scsi: new Set([...cf.scsiUnits, ...lf.scsiUnits]),
        sata: new Set([...cf.sataPorts, ...lf.sataPorts]),
        nvme: new Set([...cf.nvmeOrdinals, ...lf.nvmeOrdinals]),
      };
      let serialNo = 1 + Math.max(-1, ...cf.serials, ...lf.serials);
      let scsiController = lf.hasScsiController;
      edit.addDisks = [];
      edit.addNvme = [];
      for (const spec of change.addDisks) {
        const bus = reportedBus(spec.bus);
        const serial = `kdevops${serialNo++}`;
        const volName = `${meta.id}-${serial.replace("kdevops", "data")}.qcow2`;
        const vol = await createVolume(ctx, volName, spec.sizeGb, bus === "nvme").catch((e: unknown) => {
          // A create that failed may have left its volume, and one that timed out goes on in
          // libvirtd: removed once libvirt is done with it, or the next add of this disk would
          // be a 409 for good. Not a volume that was there before (the conflict).
          if (!(e instanceof DriverError && e.code === "conflict")) undo.push(() => afterCall(e, () => ctx.storage.deleteNamed(volName)));
          throw e;
        });
        undo.push(() => ctx.storage.delete(vol.vol));
        if (bus === "nvme") {
          const ordinal = freeOrdinal(used.nvme);
          used.nvme.add(ordinal);
          edit.addNvme.push(nvmeDisk(ordinal, serial, vol.path, "qcow2"));
          continue;
        }
        const disk = templateDisk(bus, vol.path, serial, used);
        if (running) {
          if (bus === "scsi" && !scsiController) {
            const xml = scsiControllerXml();
            await c.call(P.domainAttachDeviceFlags, { dom, xml, flags: AFFECT_LIVE });
            undo.push(() => c.call(P.domainDetachDeviceFlags, { dom, xml, flags: AFFECT_LIVE }));
            scsiController = true;
          }
          const xml = diskXml(disk);
          await c.call(P.domainAttachDeviceFlags, { dom, xml, flags: AFFECT_LIVE }).catch((e: unknown) => {
            throw attachError(e, dom.name, serial);
          });
          undo.push(async () => {
            await c.call(P.domainDetachDeviceFlags, { dom, xml, flags: AFFECT_LIVE });
            await untilDetached(ctx, disk.path);
          });
        }
        edit.addDisks.push(disk);
        if (bus === "scsi") edit.scsiController = true;
      }
      edit.metadata!.addNvme = edit.addNvme;
      note("addDisks", running);
    }

    if (change.rootDiskGb !== undefined) edit.metadata!.rootDiskGb = change.rootDiskGb;

    // The definition, in one define; the old one is the undo.
    const config1 = editDomainXml(config0, edit);
    await c.call(P.domainDefineXmlFlags, { xml: config1, flags: 0 });
    undo.push(() => c.call(P.domainDefineXmlFlags, { xml: config0, flags: 0 }));

    // The running domain's own metadata: its memory target, and what waits for the next start.
    if (running) {
      const next = domainFacts(config1);
      const pending = pendingChanges(
        { vcpus: next.vcpus, maxVcpus: next.maxVcpus, memoryMb, maxMemoryMb: next.maxMemoryMb, boot: parseDomainXml(config1).boot },
        { vcpus: liveVcpus, maxVcpus: lf.maxVcpus, memoryMb: liveTarget, maxMemoryMb: lf.maxMemoryMb, boot: now.boot },
      );
      const { metadata } = await c.call(P.domainGetMetadata, { dom, type: METADATA_ELEMENT, uri: METADATA_NS, flags: AFFECT_LIVE });
      await c.call(P.domainSetMetadata, {
        dom,
        type: METADATA_ELEMENT,
        metadata: editMetadataXml(metadata, { memoryMb: liveTarget, pending }),
        key: "rcloud",
        uri: METADATA_NS,
        flags: AFFECT_LIVE,
      });
      undo.push(() => c.call(P.domainSetMetadata, { dom, type: METADATA_ELEMENT, metadata, key: "rcloud", uri: METADATA_NS, flags: AFFECT_LIVE }));
    }

    // The root disk last: growing cannot be undone.
    if (change.rootDiskGb !== undefined) {
      const root = now.disks.find((d) => d.type === "root");
      if (!root) throw new DriverError("failed", `${dom.name} has no root disk`);
      const bytes = BigInt(change.rootDiskGb) * BigInt(GiB);
      if (running) await c.call(P.domainBlockResize, { dom, disk: root.path, size: bytes, flags: BLOCK_RESIZE_BYTES });
      else {
        const { vol } = await c.call(P.storageVolLookupByPath, { path: root.path });
        await c.call(P.storageVolResize, { vol, capacity: bytes, flags: 0 });
      }
      ctx.storage.forgetSizes([root.path]);
      note("rootDiskGb", running);
    }
  } catch (e) {
    for (const u of undo.reverse()) await u().catch(() => {});
    throw e;
  }
  // Removed disks' volumes go last: nothing names them any more.
  for (const d of removed) {
    ctx.storage.forgetSizes([d.path]);
    const vol = await c.call(P.storageVolLookupByPath, { path: d.path }).catch(() => null);
    if (vol) await ctx.storage.delete(vol.vol).catch(() => {});
  }
  return result;
}

function notHotpluggable(name: string, bus: string): DriverError {
  return new DriverError("unsupported", `${name}: ${bus} disks cannot be plugged into or out of a running VM; stop it first`);
}

/** Where a new data disk goes: a free target, and a free SCSI unit or SATA port. */
function templateDisk(bus: string, path: string, serial: string, used: { targets: Set<string>; scsi: Set<number>; sata: Set<string> }): TemplateDisk {
  const base = { device: "disk" as const, format: "qcow2", path, readonly: false, serial };
  if (bus === "virtio") {
    const target = freeTarget("vd", used.targets);
    used.targets.add(target);
    return { ...base, target, bus, drive: null };
  }
  const target = freeTarget("sd", used.targets);
  used.targets.add(target);
  if (bus === "scsi") {
    const unit = freeScsiUnit(used.scsi);
    used.scsi.add(unit);
    return { ...base, target, bus, drive: { controller: 0, unit } };
  }
  const port = freeSataPort(used.sata);
  used.sata.add(`${port.controller}:${port.unit}`);
  return { ...base, target, bus: "sata", drive: port };
}

async function createVolume(ctx: LibvirtUpdateContext, name: string, sizeGb: number, nvme: boolean): Promise<{ vol: RemoteNonnullStorageVol; path: string }> {
  try {
    return await ctx.storage.create({ name, capacityBytes: sizeGb * GiB, format: "qcow2", owner: nvme ? ctx.qemuOwner : null });
  } catch (e) {
    if (e instanceof LibvirtError && e.code === ErrorCode.STORAGE_VOL_EXIST) {
      throw new DriverError("conflict", `the volume ${name} exists already in the storage pool ${ctx.storage.name}; remove it (it is not the VM's) and try again`, { cause: e });
    }
    throw e;
  }
}

/** Runs `fn` now, or (a call that timed out, still running in libvirtd) once libvirt is done with it. */
async function afterCall(e: unknown, fn: () => Promise<void>): Promise<void> {
  if (e instanceof CallTimeoutError) void e.finished.then(fn).catch(() => {});
  else await fn();
}

function attachError(e: unknown, name: string, serial: string): unknown {
  if (e instanceof LibvirtError && /PCI|slot|bus/i.test(e.message)) {
    return new DriverError("unsupported", `${name}: cannot plug in ${serial} while it runs (${e.message}); stop it and change it then`, { cause: e });
  }
  return e;
}

/** Waits until the running domain no longer has the disk `path` (the guest acknowledged the unplug). */
async function untilDetached(ctx: LibvirtUpdateContext, path: string): Promise<void> {
  const deadline = Date.now() + DETACH_TIMEOUT_MS;
  for (;;) {
    const { xml } = await ctx.sessions().call(P.domainGetXmlDesc, { dom: ctx.dom, flags: 0 });
    if (!domainFacts(xml).disks.has(path)) return;
    if (Date.now() > deadline) throw new DriverError("failed", `${ctx.dom.name}: the guest did not release ${path} within ${DETACH_TIMEOUT_MS / 1000} s`);
    await Bun.sleep(250);
  }
}
