/**
 * Security warnings the transports raise. src/libvirt logs nothing itself: the caller passes
 * `onWarning` (LibvirtClientOptions) and routes it to its logger.
 */
import { isIP } from "node:net";
import type { LibvirtTarget } from "./uri.ts";

export type WarningSink = (message: string) => void;

/**
 * Forwards each distinct message once: a pool opens many sessions and a client reconnects
 * for ever, and the log needs the warning once, not on every session.
 */
export function oncePerMessage(sink: WarningSink | undefined): WarningSink | undefined {
  if (!sink) return undefined;
  const seen = new Set<string>();
  const wrapped: WarningSink = (message) => {
    if (seen.has(message)) return;
    seen.add(message);
    sink(message);
  };
  return wrapped;
}

/** True for names and addresses that never leave this machine. */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase();
  if (h === "localhost" || h.endsWith(".localhost")) return true;
  if (isIP(h) === 4) return h.startsWith("127.");
  if (isIP(h) === 6) return h === "::1" || /^(0+:){7}0*1$/.test(h) || /^::ffff:127\./.test(h);
  return false;
}

/** qemu+tcp carries everything in clear text and libvirtd asks nothing (auth_tcp = "none"). */
export function warnIfUnprotectedTcp(target: LibvirtTarget, sink: WarningSink | undefined): void {
  if (!sink || !target.host || isLoopbackHost(target.host)) return;
  sink(
    `libvirt connection ${target.uri} uses qemu+tcp to ${target.host}:${target.port}: unauthenticated and unencrypted ` +
      `(anyone who can reach that port controls its libvirtd and sees the traffic); use qemu+tls:// or qemu+ssh:// for another host`,
  );
}
