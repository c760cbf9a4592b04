/**
 * Checks for `bridge` networking, which QEMU does through qemu-bridge-helper: it needs an
 * existing Linux bridge, an `allow` line in /etc/qemu/bridge.conf and privileges (root, or
 * a setuid helper). Anything missing is a clear DriverError before any disk is made.
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import { dirname, isAbsolute, join } from "node:path";
import { DriverError } from "../types.ts";
import { BRIDGE_HELPER } from "./process.ts";

/** Names allowed by a bridge.conf (following `include` lines, one level deep is plenty). */
function allowed(file: string, depth = 0): Set<string> {
  const out = new Set<string>();
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch {
    return out;
  }
  for (const raw of text.split("\n")) {
    const line = raw.replace(/#.*/, "").trim();
    const m = /^(allow|include)\s+(\S+)$/.exec(line);
    if (!m) continue;
    if (m[1] === "allow") out.add(m[2]!);
    else if (depth < 3) for (const a of allowed(isAbsolute(m[2]!) ? m[2]! : join(dirname(file), m[2]!), depth + 1)) out.add(a);
  }
  return out;
}

export function checkBridge(bridge: string | null, opts: { confFile?: string; sysNet?: string } = {}): void {
  const conf = opts.confFile ?? "/etc/qemu/bridge.conf";
  const sysNet = opts.sysNet ?? "/sys/class/net";
  const hint = "; use network mode user (or none) with the qemu driver, or the libvirt driver for libvirt networks";
  if (!bridge) throw new DriverError("unsupported", `network mode bridge needs a bridge name${hint}`);
  if (!existsSync(join(sysNet, bridge, "bridge"))) {
    throw new DriverError("unsupported", `network mode bridge: '${bridge}' is not a Linux bridge on this host (the qemu driver attaches a tap to an existing bridge)${hint}`);
  }
  let st;
  try {
    st = statSync(BRIDGE_HELPER);
  } catch {
    throw new DriverError("unsupported", `network mode bridge: ${BRIDGE_HELPER} is missing (install qemu-system-common)${hint}`);
  }
  if (process.getuid?.() !== 0 && (st.mode & 0o4000) === 0) {
    throw new DriverError("unsupported", `network mode bridge: ${BRIDGE_HELPER} is not setuid root and rcloud does not run as root${hint}`);
  }
  const names = allowed(conf);
  if (!names.has(bridge) && !names.has("all")) {
    throw new DriverError("unsupported", `network mode bridge: ${conf} does not allow bridge '${bridge}'; add the line 'allow ${bridge}' to it${hint}`);
  }
}
