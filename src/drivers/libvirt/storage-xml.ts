/**
 * Storage pool and volume XML for libvirt, built with fast-xml-parser's builder: every
 * text node and attribute value is escaped by the library, so no input can become markup.
 */
import { XMLBuilder } from "fast-xml-parser";

const builder = new XMLBuilder({ ignoreAttributes: false, attributeNamePrefix: "@_", suppressEmptyNode: true });

/** A directory pool at `path`. */
export function poolXml(name: string, path: string): string {
  return builder.build({ pool: { "@_type": "dir", name, target: { path } } });
}

export interface VolumeXmlOptions {
  name: string;
  capacityBytes: number;
  format: "qcow2" | "raw";
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
      ...(o.format === "qcow2" ? { allocation: { "@_unit": "bytes", "#text": 0 } } : {}),
      target: { format: { "@_type": o.format }, permissions },
      ...(o.backing ? { backingStore: { path: o.backing.path, format: { "@_type": o.backing.format } } } : {}),
    },
  });
}
