/**
 * Where and as whom a VM's QEMU runs, as libvirt does it:
 * - its own systemd scope (rcloud-vm-<id>.scope in machine.slice) when systemd is PID 1, so
 *   `systemctl restart/stop rcloud` (KillMode=control-group) does not kill the VMs;
 * - an unprivileged user (qemu.run_as, default rcloud-qemu) when rcloud runs as root;
 * - QEMU's seccomp sandbox.
 * Each is an argv prefix or option; every program in the chain (systemd-run --scope, setpriv)
 * execs the next in place, so the PID rcloud spawns is QEMU's.
 */
import { existsSync } from "node:fs";
import { DriverError } from "../types.ts";

export const DEFAULT_RUN_AS = "rcloud-qemu";

export interface RunAsUser {
  name: string;
  uid: number;
  gid: number;
}

/** systemd is the service manager (sd_booted(3): /run/systemd/system exists). */
export function systemdBooted(runDir = "/run/systemd/system"): boolean {
  return existsSync(runDir);
}

/** A user from the passwd database (getent, so NSS sources count), or null when there is none. */
export function lookupUser(name: string): RunAsUser | null {
  const p = Bun.spawnSync(["getent", "passwd", name], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  if (p.exitCode === 2) return null; // "key not found"
  if (p.exitCode !== 0) throw new DriverError("unavailable", `cannot look up user ${name}: getent exited with ${p.exitCode}: ${p.stderr.toString().trim()}`);
  const f = p.stdout.toString().split("\n")[0]!.split(":");
  const uid = Number(f[2]);
  const gid = Number(f[3]);
  if (!Number.isInteger(uid) || !Number.isInteger(gid)) throw new DriverError("unavailable", `cannot look up user ${name}: unexpected passwd entry`);
  return { name: f[0]!, uid, gid };
}

/**
 * The user QEMU runs as, from qemu.run_as: null = rcloud's own. "auto" switches only when rcloud
 * is root and rcloud-qemu exists (else a warning); a name must exist and needs rcloud to be root.
 */
export function resolveRunAs(
  setting: string | null,
  isRoot: boolean,
  lookup: (name: string) => RunAsUser | null = lookupUser,
): { user: RunAsUser | null; warning: string | null } {
  if (setting === null) return { user: null, warning: null };
  if (setting === "auto") {
    if (!isRoot) return { user: null, warning: null };
    const user = lookup(DEFAULT_RUN_AS);
    if (user) return { user, warning: null };
    return {
      user: null,
      warning: `rcloud runs as root and there is no user ${DEFAULT_RUN_AS}: QEMU runs as root too; create it (useradd --system --no-create-home --shell /usr/sbin/nologin ${DEFAULT_RUN_AS}) or set qemu.run_as`,
    };
  }
  const user = lookup(setting);
  if (!user) throw new DriverError("unavailable", `qemu.run_as: there is no user ${setting} on this host; create it or change qemu.run_as (auto, a user name, or null)`);
  if (!isRoot && user.uid !== process.getuid?.()) {
    throw new DriverError("unavailable", `qemu.run_as: ${setting} needs rcloud to run as root (it runs as UID ${process.getuid?.()}); set qemu.run_as to null or auto`);
  }
  return { user: isRoot ? user : null, warning: null };
}

/** setpriv drops to the user, its group and its supplementary groups (kvm), then execs. */
export function runAsPrefix(user: RunAsUser | null): string[] {
  if (!user) return [];
  return ["setpriv", `--reuid=${user.uid}`, `--regid=${user.gid}`, "--init-groups", "--"];
}

export const scopeUnit = (vmId: string) => `rcloud-vm-${vmId}.scope`;

/** systemd-run moves itself into a new scope (outside rcloud's cgroup), then execs the command. */
export function scopePrefix(vmId: string, vmName: string): string[] {
  return ["systemd-run", "--scope", "--quiet", "--collect", `--unit=${scopeUnit(vmId)}`, "--slice=machine.slice", `--description=rcloud VM ${vmName}`, "--"];
}

/**
 * QEMU's seccomp filter, libvirt's set; none in bridge mode. There QEMU runs the setuid
 * qemu-bridge-helper to get its tap device, and any -sandbox sets no_new_privs, under which a
 * setuid program gains nothing. (libvirt opens the tap itself and passes the descriptor; rcloud
 * does not do that yet.)
 */
export function sandboxArgs(bridge: boolean): string[] {
  return bridge ? [] : ["-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"];
}
