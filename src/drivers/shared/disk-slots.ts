/**
 * Where each disk of a q35 guest sits, for any mix of buses, decided in one place for both
 * drivers:
 * - virtio: libvirt targets vda (the root disk), vdb, …, vdz, vdaa, … (libvirt's
 *   virDiskNameToIndex order); the PCI addresses are libvirt's (or QEMU's).
 * - scsi and sata share libvirt's sd* names, which must be unique across buses: the seed
 *   CD-ROM first (sda), then the data disks in order. Their drive addresses are explicit:
 *   libvirt would derive them from the name (7 units per SCSI controller, 6 per SATA one), so
 *   a SCSI disk named sdh would land on a second SCSI controller of libvirt's default model
 *   (lsilogic, which needs a PCI bridge and a driver the guest may lack).
 *   All SCSI disks are LUNs of one virtio-scsi controller (index 0, up to 16384 of them);
 *   SATA ports fill q35's built-in AHCI controller (6 ports, the seed on port 0), then
 *   further AHCI controllers.
 * - nvme: an ordinal among the NVMe disks (one controller each; see nvmeDisk).
 */
import type { ReportedDiskBus } from "../types.ts";

/** The guest-side bus of a disk: the API's `ide` is SATA (AHCI) on q35 (values.ts reportedBus maps a requested type to it). */
export type SlotBus = ReportedDiskBus;

export interface DiskSlot {
  bus: SlotBus;
  /** libvirt's target dev (vd*, sd*); null for NVMe (no libvirt disk bus in 9.0). */
  target: string | null;
  /** Position among the disks on the same bus, from 0 (the root disk is virtio 0). */
  ordinal: number;
  /** SCSI and SATA: the drive address (controller index, unit = LUN or port); else null. */
  drive: { controller: number; unit: number } | null;
}

export interface DiskLayout {
  root: DiskSlot;
  seed: DiskSlot | null;
  data: DiskSlot[];
}

export const SATA_PORTS_PER_CONTROLLER = 6;

/** libvirt's disk name for index `n` (0 → a, 25 → z, 26 → aa, 701 → zz, 702 → aaa). */
export function diskName(prefix: string, n: number): string {
  if (!Number.isInteger(n) || n < 0) throw new RangeError(`disk index must be a whole number >= 0, got ${n}`);
  let suffix = "";
  for (let i = n + 1; i > 0; i = Math.floor((i - 1) / 26)) suffix = String.fromCharCode(97 + ((i - 1) % 26)) + suffix;
  return prefix + suffix;
}

/** Slots for a root disk, an optional seed CD-ROM and the data disks in their order. */
export function allocateDiskSlots(data: readonly SlotBus[], opts: { seed: boolean }): DiskLayout {
  const count: Record<SlotBus, number> = { virtio: 0, nvme: 0, scsi: 0, sata: 0 };
  let sdNames = 0; // shared by scsi and sata
  const next = (bus: SlotBus): DiskSlot => {
    const ordinal = count[bus]++;
    switch (bus) {
      case "virtio":
        return { bus, target: diskName("vd", ordinal), ordinal, drive: null };
      case "nvme":
        return { bus, target: null, ordinal, drive: null };
      case "scsi":
        return { bus, target: diskName("sd", sdNames++), ordinal, drive: { controller: 0, unit: ordinal } };
      case "sata":
        return {
          bus,
          target: diskName("sd", sdNames++),
          ordinal,
          drive: { controller: Math.floor(ordinal / SATA_PORTS_PER_CONTROLLER), unit: ordinal % SATA_PORTS_PER_CONTROLLER },
        };
    }
  };
  const root = next("virtio");
  const seed = opts.seed ? next("sata") : null;
  return { root, seed, data: data.map(next) };
}
