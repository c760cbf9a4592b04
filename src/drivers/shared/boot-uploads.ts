/**
 * Kernels and initrds uploaded for one VM (PUT /vms/{id}/kernel|initrd), kept in the VM's own
 * storage next to its disks. Each upload is a new file `<kind>-<seq>`; it counts only once it
 * is complete (the QEMU driver renames it into place, libvirt, which cannot rename a volume,
 * gets a zero-length `.complete` marker volume after it), so a failed or interrupted upload
 * never replaces the previous one. The newest complete file of a kind is "the upload".
 */

export const BOOT_UPLOAD_KINDS = ["kernel", "initrd"] as const;
export type BootUploadKind = (typeof BOOT_UPLOAD_KINDS)[number];

/** Marks a libvirt upload volume as complete. */
export const COMPLETE_SUFFIX = ".complete";

let lastSeq = 0;

/** A sequence part that sorts by time as text (fixed width), unique within this process. */
export function nextUploadSeq(): string {
  lastSeq = Math.max(Date.now(), lastSeq + 1);
  return lastSeq.toString(36).padStart(10, "0");
}

/** `kernel-<seq>`: the file (or, after `<id>-`, the volume) name of an upload. */
export function uploadName(kind: BootUploadKind, seq: string): string {
  return `${kind}-${seq}`;
}

const NAME_RE = /^(kernel|initrd)-([0-9a-z]{10})$/;

/** The kind and sequence of an upload's name; null for any other name. */
export function parseUploadName(name: string): { kind: BootUploadKind; seq: string } | null {
  const m = NAME_RE.exec(name);
  return m ? { kind: m[1] as BootUploadKind, seq: m[2]! } : null;
}

/**
 * The current upload of `kind` among `names` (upload names and, when `markers` is set, their
 * `.complete` markers; other names are ignored): the newest complete one, or null. `stale`:
 * every other upload of that kind (older ones, unfinished ones) with their markers.
 */
export function currentUpload(names: readonly string[], kind: BootUploadKind, markers: boolean): { current: string | null; stale: string[] } {
  const all = new Set(names);
  let current: string | null = null;
  const ofKind: string[] = [];
  for (const n of names) {
    const u = parseUploadName(n);
    if (!u || u.kind !== kind) continue;
    ofKind.push(n);
    if (markers && !all.has(n + COMPLETE_SUFFIX)) continue;
    if (current === null || current < n) current = n;
  }
  const stale = ofKind.filter((n) => n !== current).flatMap((n) => (all.has(n + COMPLETE_SUFFIX) ? [n, n + COMPLETE_SUFFIX] : [n]));
  // A marker whose upload is gone is stale too.
  for (const n of names) if (n.endsWith(COMPLETE_SUFFIX) && parseUploadName(n.slice(0, -COMPLETE_SUFFIX.length))?.kind === kind && !all.has(n.slice(0, -COMPLETE_SUFFIX.length))) stale.push(n);
  return { current, stale };
}
