import { randomBytes } from "node:crypto";

/** A random MAC in QEMU's locally administered 52:54:00 range. */
export function randomMac(): string {
  return `52:54:00:${[...randomBytes(3)].map((x) => x.toString(16).padStart(2, "0")).join(":")}`;
}
