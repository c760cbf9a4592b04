/**
 * Shares without a hypervisor: the cloud-init `mounts:` rows (flow style, as the test disk's
 * /init and PyYAML read them), the create request's share rules, the CLI's --share, the local
 * share-directory check (real paths, symbolic links out of the directory), and the QEMU
 * driver's command lines (virtiofsd, QEMU's devices and shared memory).
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, realpathSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { renderUserData } from "../../src/cloudinit/index.ts";
import { parseShare } from "../../src/cli/flags.ts";
import { CliError } from "../../src/cli/errors.ts";
import { localShareDir } from "../../src/drivers/shared/share-dir.ts";
import { DriverError } from "../../src/drivers/types.ts";
import { qemuArgs } from "../../src/drivers/qemu/process.ts";
import { vmPaths, type StoredVm } from "../../src/drivers/qemu/state.ts";
import { fuseOptValue, virtiofsdArgv } from "../../src/drivers/qemu/virtiofsd.ts";
import { shareMount, validateShares } from "../../src/vm/validate-create.ts";
import { ServiceError } from "../../src/api-types/errors.ts";

const work = mkdtempSync(join(tmpdir(), "rcloud-shares-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const shares = validateShares([
  { host_path: "/srv/linux", tag: "linux" },
  { host_path: "/srv/ref", tag: "ref", readonly: true, transport: "9p" },
]);

describe("cloud-init mounts", () => {
  test("one flow-style row per share, read the same by PyYAML", () => {
    const ud = renderUserData({ instanceId: "vm-abcd1234", hostname: "kt", user: "kdevops", sshAuthorizedKeys: [], mounts: shares.map(shareMount) });
    expect(ud).toContain('mounts:\n  - [ "linux", "/mnt/linux", "virtiofs", "rw,nofail", "0", "0" ]\n  - [ "ref", "/mnt/ref", "9p", "trans=virtio,version=9p2000.L,msize=262144,ro,nofail", "0", "0" ]\n');
    // Mounts alone make no user (no keys): the image's users stay.
    expect(ud).not.toContain("users:");
    const file = join(work, "user-data");
    writeFileSync(file, ud);
    const py = "import json, sys, yaml\nprint(json.dumps(yaml.safe_load(open(sys.argv[1]))))";
    const r = Bun.spawnSync(["/usr/bin/python3", "-c", py, file]);
    if (r.exitCode !== 0) throw new Error(`PyYAML (python3-yaml) failed: ${r.stderr.toString()}`);
    expect(JSON.parse(r.stdout.toString()).mounts).toEqual([
      ["linux", "/mnt/linux", "virtiofs", "rw,nofail", "0", "0"],
      ["ref", "/mnt/ref", "9p", "trans=virtio,version=9p2000.L,msize=262144,ro,nofail", "0", "0"],
    ]);
  });

  test("without mounts and keys the seed is still refused", () => {
    expect(() => renderUserData({ instanceId: "vm-abcd1234", hostname: "kt", user: "kdevops", sshAuthorizedKeys: [] })).toThrow(/SSH public key/);
  });
});

describe("create request", () => {
  test("defaults: read-write virtiofs", () => {
    expect(shares).toEqual([
      { hostPath: "/srv/linux", tag: "linux", readonly: false, transport: "virtiofs" },
      { hostPath: "/srv/ref", tag: "ref", readonly: true, transport: "9p" },
    ]);
  });

  const refused: [string, unknown, string][] = [
    ["relative path", [{ host_path: "srv/x", tag: "x" }], "shares[0].host_path"],
    ["'..'", [{ host_path: "/srv/../etc", tag: "x" }], "shares[0].host_path"],
    ["'.'", [{ host_path: "/srv/./x", tag: "x" }], "shares[0].host_path"],
    ["tag with a slash", [{ host_path: "/srv/x", tag: "a/b" }], "shares[0].tag"],
    ["tag '..'", [{ host_path: "/srv/x", tag: ".." }], "shares[0].tag"],
    ["37-byte virtiofs tag", [{ host_path: "/srv/x", tag: "a".repeat(37) }], "shares[0].tag"],
    ["32-byte 9p tag", [{ host_path: "/srv/x", tag: "a".repeat(32), transport: "9p" }], "shares[0].tag"],
    ["duplicate tag", [{ host_path: "/srv/x", tag: "a" }, { host_path: "/srv/y", tag: "a" }], "shares[1].tag"],
    ["unknown transport", [{ host_path: "/srv/x", tag: "a", transport: "nfs" }], "shares[0].transport"],
    ["17 shares", Array.from({ length: 17 }, (_, i) => ({ host_path: "/srv/x", tag: `t${i}` })), "shares"],
  ];
  for (const [label, given, field] of refused) {
    test(`refused: ${label}`, () => {
      let err: unknown;
      try {
        validateShares(given as never);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(ServiceError);
      expect({ code: (err as ServiceError).code, field: (err as ServiceError).details?.field }).toEqual({ code: "validation_error", field });
    });
  }
  test("36-byte virtiofs and 31-byte 9p tags are accepted", () => {
    expect(validateShares([{ host_path: "/a", tag: "a".repeat(36) }, { host_path: "/b", tag: "b".repeat(31), transport: "9p" }])).toHaveLength(2);
  });
});

describe("--share", () => {
  test("options from the end; a path may hold ':'", () => {
    expect(parseShare("/srv/linux:linux")).toEqual({ host_path: "/srv/linux", tag: "linux" });
    expect(parseShare("/srv/ref:ref:ro:9p")).toEqual({ host_path: "/srv/ref", tag: "ref", readonly: true, transport: "9p" });
    expect(parseShare("/srv/ref:ref:9p:ro")).toEqual({ host_path: "/srv/ref", tag: "ref", readonly: true, transport: "9p" });
    expect(parseShare("/srv/a:b:c:rw")).toEqual({ host_path: "/srv/a:b", tag: "c", readonly: false });
  });
  test("usage errors", () => {
    for (const bad of ["linux", "srv/linux:linux", "/srv/linux:", "/srv/linux:a/b", "/srv/linux:a.b"]) expect(() => parseShare(bad)).toThrow(CliError);
  });
});

describe("local share directories", () => {
  const root = join(work, "shared");
  const outside = join(work, "outside");
  mkdirSync(join(root, "linux", "sub"), { recursive: true });
  mkdirSync(outside, { recursive: true });
  writeFileSync(join(root, "file"), "x");
  symlinkSync(outside, join(root, "escape"));
  symlinkSync(join(root, "linux"), join(work, "into"));
  const code = (path: string, dirs = [root]) => {
    try {
      return localShareDir(dirs, path);
    } catch (e) {
      return (e as DriverError).code;
    }
  };
  test("inside by real path, the directory itself included", () => {
    expect(code(join(root, "linux", "sub"))).toBe(realpathSync(join(root, "linux", "sub")));
    expect(code(root)).toBe(realpathSync(root));
    expect(code(join(work, "into"))).toBe(realpathSync(join(root, "linux"))); // a link from outside into it
  });
  test("outside (through a link too), none configured: not_found; missing or a file: invalid_state", () => {
    expect(code(outside)).toBe("not_found");
    expect(code(join(root, "escape"))).toBe("not_found");
    expect(code(join(root, "escape", "deeper"))).toBe("not_found");
    expect(code(join(root, "linux"), [])).toBe("not_found");
    expect(code(join(root, "missing"))).toBe("invalid_state");
    expect(code(join(root, "file"))).toBe("invalid_state");
  });
});

describe("QEMU driver command lines", () => {
  const vm = {
    version: 1, id: "vm-abcd1234", name: "kt", uuid: "3e9d1f26-1f0e-4a53-9bd7-2d2a1f0b8c11", vcpus: 1, memory_mb: 256, max_memory_mb: 512,
    image: "i", image_path: "/i", root_disk_gb: 1, disks: [{ type: "root", file: "root.qcow2", size_gb: 1, driver: "virtio", format: "qcow2", serial: null }],
    network: { mode: "none", bridge: null, mac: null, ssh_port: null, restrict: false }, ssh_user: "kdevops", boot: null, created_at: "t", updated_at: "t", owner: null,
    shares: [
      { host_path: "/srv/a,b", tag: "linux", readonly: false, transport: "virtiofs" },
      { host_path: "/srv/ref", tag: "ref", readonly: true, transport: "9p" },
    ],
  } satisfies StoredVm;
  const p = vmPaths("/s", vm.id);
  test("virtiofs: shared memfd memory of the maximum size, vhost-user-fs on the share's socket; 9p: read-only fsdev", () => {
    const args = qemuArgs("qemu", "tcg", vm, p);
    expect(args.slice(args.indexOf("-machine"), args.indexOf("-machine") + 2)).toEqual(["-machine", "q35,memory-backend=mem"]);
    expect(args).toContain("memory-backend-memfd,id=mem,size=512M,share=on");
    expect(args).toContain(`socket,id=fs0,path=${p.share(0).socket}`);
    expect(args).toContain("vhost-user-fs-pci,chardev=fs0,tag=linux,queue-size=1024");
    expect(args).toContain("local,id=fs1,path=/srv/ref,security_model=none,readonly=on");
    expect(args).toContain("virtio-9p-pci,fsdev=fs1,mount_tag=ref");
  });
  test("no virtiofs share: no shared memory", () => {
    const args = qemuArgs("qemu", "tcg", { ...vm, shares: [vm.shares[1]!] }, p);
    expect(args).toContain("q35");
    expect(args.some((a) => a.startsWith("memory-backend"))).toBe(false);
  });
  test("virtiofsd: fuse option escaping; read-only through a bind mount, the path an argument of sh", () => {
    expect(fuseOptValue("/a,b\\c")).toBe("/a\\,b\\\\c");
    expect(virtiofsdArgv(vm.shares[0]!, "/s/fs0.sock", "/v")).toEqual(["/v", "--socket-path=/s/fs0.sock", "-o", "source=/srv/a\\,b", "-o", "cache=auto", "-o", "sandbox=namespace"]);
    const ro = virtiofsdArgv({ ...vm.shares[0]!, host_path: "/srv/$(x) 'y'", readonly: true }, "/s/fs0.sock", "/v");
    expect(ro.slice(0, 6)).toEqual(["unshare", "--mount", "--propagation", "private", "--", "sh"]);
    expect(ro[7]).not.toContain("/srv");
    expect(ro.slice(8, 11)).toEqual(["rcloud-virtiofsd-ro", "/srv/$(x) 'y'", "/v"]);
  });
});
