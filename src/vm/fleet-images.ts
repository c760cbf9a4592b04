/**
 * The base images of the whole fleet: each host lists its own (a libvirt pool on that host's
 * base_images_dir, or the QEMU driver's directory); an image is the same everywhere its id
 * (file stem) is, so the fleet's list is the union by id with the hosts that hold each.
 */
import type { ImageInfo } from "../drivers/types.ts";

export interface FleetImage {
  /** As the first host (in config order) that holds it reports it. */
  info: ImageInfo;
  hosts: string[];
}

/** Merges the hosts' lists; an alias that names different images on different hosts is dropped. */
export function mergeImages(perHost: { host: string; images: ImageInfo[] }[]): FleetImage[] {
  const byId = new Map<string, FleetImage>();
  for (const { host, images } of perHost) {
    for (const img of images) {
      const seen = byId.get(img.id);
      if (seen) {
        if (!seen.hosts.includes(host)) seen.hosts.push(host);
        if (seen.info.alias !== img.alias) seen.info = { ...seen.info, alias: null };
      } else {
        byId.set(img.id, { info: { ...img }, hosts: [host] });
      }
    }
  }
  const all = [...byId.values()].sort((a, b) => a.info.id.localeCompare(b.info.id));
  const idsByAlias = new Map<string, number>();
  for (const i of all) if (i.info.alias) idsByAlias.set(i.info.alias, (idsByAlias.get(i.info.alias) ?? 0) + 1);
  for (const i of all) if (i.info.alias && idsByAlias.get(i.info.alias)! > 1) i.info = { ...i.info, alias: null };
  return all;
}

/** By id, file name or alias; anything with a path separator is never an image. */
export function findImage(images: FleetImage[], ref: string): FleetImage | null {
  if (!ref || ref.includes("/") || ref.includes("\\") || ref.includes("\0") || ref === "." || ref === "..") return null;
  return images.find((i) => i.info.id === ref) ?? images.find((i) => i.info.fileName === ref) ?? images.find((i) => i.info.alias === ref) ?? null;
}
