/**
 * The qemu driver's confinement decisions (src/drivers/qemu/confine.ts): which user QEMU runs
 * as, the argv prefixes (systemd-run --scope, setpriv) and the seccomp option. The real
 * processes are checked in test/qemu/ssh.test.ts (user, seccomp, file owners) and
 * test/qemu/systemd.test.ts (a real systemd as PID 1, rcloud restarted by systemctl).
 */
import { describe, expect, test } from "bun:test";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { lookupUser, resolveRunAs, runAsPrefix, sandboxArgs, scopePrefix, systemdBooted, type RunAsUser } from "../../src/drivers/qemu/confine.ts";

const qemuUser: RunAsUser = { name: "rcloud-qemu", uid: 990, gid: 985 };
const lookup = (name: string) => (name === "rcloud-qemu" ? qemuUser : name === "other" ? { name, uid: 991, gid: 991 } : null);

describe("qemu.run_as", () => {
  test("auto: rcloud-qemu when root and it exists", () => {
    expect(resolveRunAs("auto", true, lookup)).toEqual({ user: qemuUser, warning: null });
  });
  test("auto: root without rcloud-qemu keeps running QEMU as root, with a warning", () => {
    const r = resolveRunAs("auto", true, () => null);
    expect(r.user).toBeNull();
    expect(r.warning).toContain("there is no user rcloud-qemu");
  });
  test("auto or null when not root: rcloud's own user, no warning", () => {
    expect(resolveRunAs("auto", false, lookup)).toEqual({ user: null, warning: null });
    expect(resolveRunAs(null, true, lookup)).toEqual({ user: null, warning: null });
  });
  test("a named user must exist", () => {
    expect(() => resolveRunAs("nosuchuser", true, lookup)).toThrow("qemu.run_as: there is no user nosuchuser on this host");
    expect(resolveRunAs("other", true, lookup).user?.uid).toBe(991);
  });
  test("a named user needs rcloud to be root", () => {
    expect(() => resolveRunAs("other", false, lookup)).toThrow("needs rcloud to run as root");
  });
  test("lookupUser reads the real passwd database", () => {
    expect(lookupUser("root")).toEqual({ name: "root", uid: 0, gid: 0 });
    expect(lookupUser("rcloud-no-such-user")).toBeNull();
  });
});

describe("argv", () => {
  test("setpriv drops to the user, its group and supplementary groups", () => {
    expect(runAsPrefix(qemuUser)).toEqual(["setpriv", "--reuid=990", "--regid=985", "--init-groups", "--"]);
    expect(runAsPrefix(null)).toEqual([]);
  });
  test("a transient scope per VM in machine.slice", () => {
    expect(scopePrefix("vm-abcd1234", "web1")).toEqual([
      "systemd-run", "--scope", "--quiet", "--collect", "--unit=rcloud-vm-vm-abcd1234.scope", "--slice=machine.slice", "--description=rcloud VM web1", "--",
    ]);
  });
  test("libvirt's seccomp set; none in bridge mode (the setuid bridge helper)", () => {
    expect(sandboxArgs(false)).toEqual(["-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"]);
    expect(sandboxArgs(true)).toEqual([]);
  });
  test("systemd counts as PID 1 when its runtime unit directory exists", () => {
    const d = mkdtempSync(join(tmpdir(), "rcloud-sd-"));
    try {
      expect(systemdBooted(join(d, "system"))).toBe(false);
      mkdirSync(join(d, "system"));
      expect(systemdBooted(join(d, "system"))).toBe(true);
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });
});
