/**
 * A write that failed because the disk is full (ENOSPC), however it reached us: a Node error
 * with its errno code, libvirt's or qemu-img's message text ("No space left on device"), or
 * either of those as the cause of another error.
 */
const ENOSPC_TEXT = "No space left on device";

export function isNoSpace(e: unknown): boolean {
  for (let x: unknown = e, depth = 0; x instanceof Error && depth < 8; x = x.cause, depth++) {
    if ((x as NodeJS.ErrnoException).code === "ENOSPC" || x.message.includes(ENOSPC_TEXT)) return true;
  }
  return false;
}
