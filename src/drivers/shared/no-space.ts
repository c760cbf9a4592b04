import { DriverError } from "../types.ts";

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

/** A create that ran out of space in `dir` (a pool's or the state directory), after its rollback. */
export function createNoSpace(vmName: string, where: string, dir: string, e: unknown): DriverError {
  return new DriverError(
    "no_space",
    `creating ${vmName}: ${where} ran out of space (${(e as Error).message.trim()}); what the create had made was removed; free space in ${dir} or ask for a VM without an SSH key seed or with fewer disks`,
    { cause: e },
  );
}
