/**
 * deploy/rcloud.service passes `systemd-analyze verify`, and a broken unit does not.
 *
 * How the check is made honest (no real /etc, /usr/local/bin or user is needed or touched):
 * - verify runs with --root=<temp dir>, so it resolves the unit, the units it names and the
 *   ExecStart= binary inside that tree instead of on this host. The tree gets a copy of this
 *   host's /usr/lib/systemd/system (verify loads sysinit.target, basic.target, ... for the default
 *   dependencies of a service; without them it fails with "Unit sysinit.target not found"), the
 *   unit under etc/systemd/system, and an executable at usr/local/bin/rcloud. That executable is a
 *   copy of /bin/true: verify only checks that ExecStart= names an executable file, which is the
 *   property we want (the path is right) without building rcloud.
 * - User=rcloud and the groups are not looked up by verify (systemd resolves them only when it
 *   starts the service), so no user has to exist.
 * - verify exits 0 on many mistakes it "ignores" (an unknown key, a bad value: "Failed to parse
 *   ..., ignoring"), which would make a typo in the unit pass. So we also require that it prints
 *   nothing about the unit at all: any line naming rcloud.service fails the test. The negative
 *   tests below prove both paths catch a broken unit.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, copyFileSync, cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const REPO = resolve(import.meta.dir, "../..");
const UNIT = readFileSync(join(REPO, "deploy/rcloud.service"), "utf8");
const QEMU_DROP_IN = readFileSync(join(REPO, "deploy/rcloud-qemu-driver.conf"), "utf8");
const work = mkdtempSync(join(tmpdir(), "rcloud-unit-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

let roots = 0;
function verify(unitText: string, dropIn?: string): { code: number; output: string } {
  const root = join(work, `root${roots++}`);
  mkdirSync(join(root, "usr/lib/systemd"), { recursive: true });
  cpSync("/usr/lib/systemd/system", join(root, "usr/lib/systemd/system"), { recursive: true, verbatimSymlinks: true });
  mkdirSync(join(root, "etc/systemd/system"), { recursive: true });
  writeFileSync(join(root, "etc/systemd/system/rcloud.service"), unitText);
  if (dropIn !== undefined) {
    mkdirSync(join(root, "etc/systemd/system/rcloud.service.d"));
    writeFileSync(join(root, "etc/systemd/system/rcloud.service.d/qemu-driver.conf"), dropIn);
  }
  mkdirSync(join(root, "usr/local/bin"), { recursive: true });
  copyFileSync("/bin/true", join(root, "usr/local/bin/rcloud"));
  chmodSync(join(root, "usr/local/bin/rcloud"), 0o755);
  const p = Bun.spawnSync(["systemd-analyze", "verify", `--root=${root}`, "rcloud.service"], {
    env: { ...process.env, SYSTEMD_LOG_COLOR: "0", SYSTEMD_PAGER: "" },
  });
  return { code: p.exitCode ?? -1, output: `${p.stdout.toString()}${p.stderr.toString()}` };
}

/** Passes only if verify exits 0 and says nothing about our unit. */
function clean(r: { code: number; output: string }): boolean {
  return r.code === 0 && !r.output.split("\n").some((l) => l.includes("rcloud.service"));
}

describe("deploy/rcloud.service", () => {
  test("systemd-analyze is installed (package systemd; scripts/lib/install-deps.sh)", () => {
    expect(Bun.which("systemd-analyze")).not.toBeNull();
  });

  test("systemd-analyze verify passes with no warnings", () => {
    const r = verify(UNIT);
    expect(r.output).toBe("");
    expect(r.code).toBe(0);
  });

  test("with the qemu driver's drop-in (deploy/rcloud-qemu-driver.conf) too", () => {
    const r = verify(UNIT, QEMU_DROP_IN);
    expect(r.output).toBe("");
    expect(r.code).toBe(0);
    // ... and a typo in the drop-in is caught the same way.
    expect(clean(verify(UNIT, QEMU_DROP_IN.replace("CapabilityBoundingSet=", "CapabilityBoundSet=")))).toBe(false);
    const lines = new Set(QEMU_DROP_IN.split("\n").map((l) => l.trim()));
    for (const l of ["User=root", "Group=root", "CapabilityBoundingSet=CAP_SETUID CAP_SETGID CAP_CHOWN CAP_FOWNER CAP_DAC_OVERRIDE CAP_KILL", "StateDirectoryMode=0751"]) {
      expect(lines.has(l)).toBe(true);
    }
  }, 60_000);

  test("a syntax error fails (unknown section: verify exits non-zero)", () => {
    const r = verify(UNIT.replace("[Service]", "[Servce]"));
    expect(r.code).not.toBe(0);
    expect(clean(r)).toBe(false);
  });

  test("a bad value fails (verify exits 0 but warns)", () => {
    const r = verify(UNIT.replace("Restart=on-failure", "Restart=sometimes"));
    expect(r.output).toContain("rcloud.service");
    expect(clean(r)).toBe(false);
  });

  test("an unknown key fails", () => {
    const r = verify(UNIT.replace("UMask=0027", "UMask=0027\nProtectEverything=yes"));
    expect(clean(r)).toBe(false);
  });

  test("a wrong ExecStart path fails", () => {
    const r = verify(UNIT.replace("/usr/local/bin/rcloud serve", "/usr/bin/rcloud serve"));
    expect(clean(r)).toBe(false);
  });

  test("has the settings the deployment relies on", () => {
    const lines = new Set(UNIT.split("\n").map((l) => l.trim()));
    for (const l of [
      "ExecStart=/usr/local/bin/rcloud serve --config /etc/rcloud/rcloud.yaml",
      "User=rcloud",
      "Group=rcloud",
      "SupplementaryGroups=libvirt kvm",
      "Environment=RCLOUD_LOG_FORMAT=json",
      "After=network-online.target libvirtd.service",
      "Wants=network-online.target",
      "Restart=on-failure",
      "RestartSec=2s",
      "TimeoutStopSec=45s",
      "NoNewPrivileges=yes",
      "ProtectSystem=strict",
      "ReadWritePaths=/var/lib/rcloud /var/lib/libvirt/images",
      "ProtectHome=yes",
      "PrivateTmp=yes",
      "CapabilityBoundingSet=",
      "UMask=0027",
      "StateDirectory=rcloud",
    ]) {
      expect(lines.has(l)).toBe(true);
    }
    // /dev/kvm and the JIT: these must stay off.
    expect(UNIT).not.toMatch(/^PrivateDevices=yes/m);
    expect(UNIT).not.toMatch(/^MemoryDenyWriteExecute=yes/m);
  });
});
