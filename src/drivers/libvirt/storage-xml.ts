/**
 * Storage pool and volume XML for libvirt, built with fast-xml-parser's builder (every text
 * node and attribute value is escaped by the library, so no input can become markup) and
 * read with its parser.
 */
import { XMLBuilder, XMLParser } from "fast-xml-parser";

const builder = new XMLBuilder({ ignoreAttributes: false, attributeNamePrefix: "@_", suppressEmptyNode: true });
const parser = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: "", parseTagValue: false, parseAttributeValue: false, htmlEntities: true });

/** A directory pool at `path`. */
export function poolXml(name: string, path: string): string {
  return builder.build({ pool: { "@_type": "dir", name, target: { path } } });
}

export interface VolumeXmlOptions {
  name: string;
  capacityBytes: number;
  format: "qcow2" | "raw";
  /** Bytes allocated up front; default 0 for qcow2, all of it (libvirt's default) for raw. */
  allocationBytes?: number;
  /** A qcow2 overlay's base image. */
  backing?: { path: string; format: string };
  /** Owner of the file (disks QEMU opens itself, outside libvirt's labelling); default: libvirt's. */
  owner?: { uid: number; gid: number } | null;
}

export function volumeXml(o: VolumeXmlOptions): string {
  const permissions = o.owner ? { mode: "0660", owner: o.owner.uid, group: o.owner.gid } : { mode: "0640" };
  return builder.build({
    volume: {
      name: o.name,
      capacity: { "@_unit": "bytes", "#text": o.capacityBytes },
      // Thin: without an explicit allocation libvirt assumes allocation = capacity and
      // refuses a disk larger than the pool's free space, even for qcow2.
      ...(o.allocationBytes !== undefined || o.format === "qcow2" ? { allocation: { "@_unit": "bytes", "#text": o.allocationBytes ?? 0 } } : {}),
      target: { format: { "@_type": o.format }, permissions },
      ...(o.backing ? { backingStore: { path: o.backing.path, format: { "@_type": o.backing.format } } } : {}),
    },
  });
}

type Node = Record<string, unknown>;

const node = (v: unknown): Node => (v !== null && typeof v === "object" && !Array.isArray(v) ? (v as Node) : {});
const text = (v: unknown): string | null => (typeof v === "string" ? v : typeof v === "object" && v !== null && typeof (v as Node)["#text"] === "string" ? ((v as Node)["#text"] as string) : null);

/** A size element such as `<capacity unit='bytes'>1024</capacity>` (libvirt reports bytes); null when absent. */
function bytes(v: unknown, what: string): number | null {
  if (v === undefined) return null;
  const unit = node(v).unit;
  const t = text(v);
  if ((unit !== undefined && unit !== "bytes" && unit !== "B") || t === null || !/^\d+$/.test(t.trim())) {
    throw new Error(`volume XML: unexpected ${what} ${JSON.stringify(v)}`);
  }
  return Number(t.trim());
}

/** What rcloud reads from a volume's XML (storageVolGetXmlDesc). */
export interface ParsedVolume {
  /** file, dir, block, ... */
  type: string;
  name: string;
  path: string;
  /** The format libvirt found (raw, qcow2, iso, ...); null when it says none. */
  format: string | null;
  capacityBytes: number;
  allocationBytes: number;
  /** The file's length (what a download delivers); null when libvirt does not say. */
  physicalBytes: number | null;
}

export function parseVolumeXml(xml: string): ParsedVolume {
  const vol = node(parser.parse(xml).volume);
  const target = node(vol.target);
  const name = text(vol.name);
  const path = text(target.path);
  if (name === null || path === null) throw new Error("volume XML without name or target path");
  const format = node(target.format).type;
  return {
    type: typeof vol.type === "string" ? vol.type : "file",
    name,
    path,
    format: typeof format === "string" ? format : null,
    capacityBytes: bytes(vol.capacity, "capacity") ?? 0,
    allocationBytes: bytes(vol.allocation, "allocation") ?? 0,
    physicalBytes: bytes(vol.physical, "physical"),
  };
}

/** A pool's target directory (storagePoolGetXmlDesc); null when it has none. */
export function poolTargetPath(xml: string): string | null {
  return text(node(node(parser.parse(xml).pool).target).path);
}
