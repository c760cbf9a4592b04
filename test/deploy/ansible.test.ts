/**
 * deploy/ansible: the playbook passes --syntax-check, and the rcloud role runs for real against
 * localhost into a temporary prefix (rcloud_root), placing the binary, the config, the tokens file
 * and the unit with the right modes; the config it renders loads with rcloud's own loadConfig().
 *
 * User creation: the real run uses rcloud_create_user=false and rcloud_group=nogroup, so the test
 * adds no account to the machine it runs on (the ansible user/group modules have no prefix
 * option: with rcloud_create_user=true they would create a real system user `rcloud` in the host's
 * /etc/passwd, which a test should not leave behind, and removing it afterwards could delete a
 * real deployment's user). The user and group tasks are still exercised, in a --check run with
 * rcloud_create_user=true, which validates their arguments and reports "changed" without creating
 * anything. The service is not enabled or started (rcloud_manage_service=false; and in a container
 * systemd is not PID 1 anyway).
 */
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parse } from "yaml";
import { loadConfig } from "../../src/config/index.ts";

const REPO = resolve(import.meta.dir, "../..");
const PLAYBOOK = join(REPO, "deploy/ansible/playbook.yml");
const work = mkdtempSync(join(tmpdir(), "rcloud-ansible-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));
// No ~/.ansible.cfg, /etc/ansible/ansible.cfg or ./ansible.cfg of the machine may change what runs.
const CFG = join(work, "ansible.cfg");
writeFileSync(CFG, "[defaults]\n");

function ansible(args: string[], cwd = REPO): { code: number; output: string } {
  const p = Bun.spawnSync(["ansible-playbook", ...args], {
    cwd,
    env: {
      ...process.env,
      // The role resolves a relative rcloud_binary_src against $PWD, as a shell sets it.
      PWD: cwd,
      ANSIBLE_NOCOLOR: "1",
      ANSIBLE_RETRY_FILES_ENABLED: "0",
      ANSIBLE_CONFIG: CFG,
      ANSIBLE_LOCAL_TEMP: join(work, "ansible-tmp"),
    },
  });
  return { code: p.exitCode ?? -1, output: `${p.stdout.toString()}${p.stderr.toString()}` };
}

const LOCAL = ["-i", "localhost,", "--connection=local", PLAYBOOK, "-e", "rcloud_become=false", "-e", "rcloud_manage_service=false"];

describe("deploy/ansible", () => {
  test("ansible-playbook is installed (package ansible-core; scripts/lib/install-deps.sh)", () => {
    expect(Bun.which("ansible-playbook")).not.toBeNull();
  });

  test("playbook passes --syntax-check", () => {
    const r = ansible(["--syntax-check", "-i", "localhost,", PLAYBOOK]);
    if (r.code !== 0) console.error(r.output);
    expect(r.code).toBe(0);
  });

  test("the role refuses to run without rcloud_binary_src", () => {
    const r = ansible([...LOCAL, "-e", `rcloud_root=${join(work, "none")}`]);
    expect(r.code).not.toBe(0);
    expect(r.output).toContain("rcloud_binary_src");
  });

  test("user and group tasks in --check mode (creates nothing)", () => {
    const root = join(work, "check");
    const r = ansible(["--check", ...LOCAL, "-e", "rcloud_binary_src=/bin/true", "-e", `rcloud_root=${root}`, "-e", "rcloud_create_user=true", "-e", "rcloud_driver=qemu"]);
    if (r.code !== 0) console.error(r.output);
    expect(r.code).toBe(0);
    expect(r.output).toMatch(/TASK \[rcloud : Create the rcloud user\][^\n]*\n(changed|ok): \[localhost\]/);
    expect(r.output).toMatch(/TASK \[rcloud : Create the rcloud-qemu user \(the qemu driver runs QEMU as it\)\][^\n]*\n(changed|ok): \[localhost\]/);
  });

  test(
    "the role installs binary, config, tokens and unit under rcloud_root",
    () => {
      const root = join(work, "root");
      // A stand-in executable: the role copies whatever it is given (building rcloud takes a while
      // and is scripts/build.sh's business). Relative, as in the documented command line.
      const bin = join(work, "rcloud-bin");
      writeFileSync(bin, "#!/bin/sh\necho rcloud test binary\n", { mode: 0o644 });
      const tokens = join(work, "tokens.json");
      writeFileSync(tokens, "{}\n");
      const vars = [
        "-e", "rcloud_binary_src=rcloud-bin",
        "-e", `rcloud_root=${root}`,
        "-e", "rcloud_create_user=false",
        "-e", "rcloud_group=nogroup",
        "-e", `rcloud_tokens_file_src=${tokens}`,
        "-e", "rcloud_bind_address=0.0.0.0:9876",
        "-e", "rcloud_libvirt_uri=qemu+ssh://hv1/system",
        "-e", "rcloud_storage_pool_path=/srv/pool/rcloud",
        // JSON, because key=value splits at spaces; the space checks the template's quoting.
        "-e", JSON.stringify({ rcloud_base_images_dir: "/srv/base images" }),
        "-e",
        JSON.stringify({
          rcloud_hosts: [
            { name: "hv1", uri: "qemu+ssh://hv1/system", labels: { rack: "a" } },
            { name: "hv2", uri: "qemu+tls://hv2/system", memory_overcommit: 1.5 },
          ],
          rcloud_placement_policy: "pack",
          rcloud_public_names: ["rcloud.lab.example"],
        }),
      ];
      const r = ansible([...LOCAL, ...vars], work);
      if (r.code !== 0) console.error(r.output);
      expect(r.code).toBe(0);
      expect(r.output).toMatch(/TASK \[rcloud : Enable and start rcloud\]\s*\*+\s*\nskipping/);

      const mode = (p: string) => statSync(join(root, p)).mode & 0o7777;
      const gid = (p: string) => statSync(join(root, p)).gid;
      const nogroup = 65534;
      expect(mode("usr/local/bin/rcloud")).toBe(0o755);
      expect(statSync(join(root, "usr/local/bin/rcloud")).uid).toBe(0);
      expect(readFileSync(join(root, "usr/local/bin/rcloud"), "utf8")).toContain("rcloud test binary");
      expect(mode("etc/rcloud")).toBe(0o750);
      expect(gid("etc/rcloud")).toBe(nogroup);
      expect(mode("etc/rcloud/rcloud.yaml")).toBe(0o640);
      expect(gid("etc/rcloud/rcloud.yaml")).toBe(nogroup);
      expect(mode("etc/rcloud/tokens.json")).toBe(0o640);
      expect(gid("etc/rcloud/tokens.json")).toBe(nogroup);
      expect(mode("etc/systemd/system/rcloud.service")).toBe(0o644);
      expect(readFileSync(join(root, "etc/systemd/system/rcloud.service"), "utf8")).toBe(
        readFileSync(join(REPO, "deploy/rcloud.service"), "utf8"),
      );
      expect(existsSync(join(root, "etc/systemd/system/rcloud.service.d/qemu-driver.conf"))).toBe(false); // libvirt driver

      const file = join(root, "etc/rcloud/rcloud.yaml");
      const yaml = parse(readFileSync(file, "utf8")) as Record<string, Record<string, unknown>>;
      expect(yaml.server?.bind_address).toBe("0.0.0.0:9876");
      const cfg = loadConfig({ file, env: {} });
      expect(cfg.server.bind_address).toBe("0.0.0.0:9876");
      expect(cfg.driver).toBe("libvirt");
      expect(cfg.libvirt.uri).toBe("qemu+ssh://hv1/system");
      expect(cfg.libvirt.storage_pool_path).toBe("/srv/pool/rcloud");
      expect(cfg.images.base_images_dir).toBe("/srv/base images");
      expect(cfg.kdevops.config_path).toBeNull();
      expect(cfg.hosts).toEqual([
        { name: "hv1", uri: "qemu+ssh://hv1/system", labels: { rack: "a" } },
        { name: "hv2", uri: "qemu+tls://hv2/system", memory_overcommit: 1.5 },
      ]);
      expect(cfg.placement.policy).toBe("pack");
      expect(cfg.server.public_names).toEqual(["rcloud.lab.example"]);

      // Run again: nothing changes (idempotent).
      const again = ansible([...LOCAL, ...vars], work);
      expect(again.code).toBe(0);
      expect(again.output).toMatch(/localhost\s*:\s*ok=\d+\s+changed=0/);
    },
    120_000,
  );

  test(
    "with rcloud_kdevops_root the config defers to kdevops's extra_vars.yaml",
    () => {
      const root = join(work, "kdevops-root");
      const kdevops = join(work, "kdevops");
      Bun.spawnSync(["mkdir", "-p", kdevops]);
      writeFileSync(
        join(kdevops, "extra_vars.yaml"),
        "libvirt_uri: qemu:///system\nkdevops_storage_pool_path: /data/kdevops\nguestfs_base_image_dir: /data/kdevops/guestfs/base_images\n",
      );
      const r = ansible([
        ...LOCAL,
        "-e", "rcloud_binary_src=/bin/true",
        "-e", `rcloud_root=${root}`,
        "-e", "rcloud_create_user=false",
        "-e", "rcloud_group=nogroup",
        "-e", `rcloud_kdevops_root=${kdevops}`,
      ]);
      if (r.code !== 0) console.error(r.output);
      expect(r.code).toBe(0);
      const cfg = loadConfig({ file: join(root, "etc/rcloud/rcloud.yaml"), env: {} });
      expect(cfg.kdevops.config_path).toBe(kdevops);
      expect(cfg.libvirt.storage_pool_path).toBe("/data/kdevops/rcloud");
      expect(cfg.images.base_images_dir).toBe("/data/kdevops/guestfs/base_images");
      expect(cfg.server.bind_address).toBe("127.0.0.1:8765");
    },
    120_000,
  );

  test(
    "with rcloud_driver=qemu the unit gets the qemu driver's drop-in; switching back removes it",
    () => {
      const root = join(work, "qemu-root");
      const vars = (driver: string) => [...LOCAL, "-e", "rcloud_binary_src=/bin/true", "-e", `rcloud_root=${root}`, "-e", "rcloud_create_user=false", "-e", "rcloud_group=nogroup", "-e", `rcloud_driver=${driver}`];
      const r = ansible(vars("qemu"));
      if (r.code !== 0) console.error(r.output);
      expect(r.code).toBe(0);
      const dropIn = join(root, "etc/systemd/system/rcloud.service.d/qemu-driver.conf");
      expect(readFileSync(dropIn, "utf8")).toBe(readFileSync(join(REPO, "deploy/rcloud-qemu-driver.conf"), "utf8"));
      expect(statSync(dropIn).mode & 0o7777).toBe(0o644);
      expect(loadConfig({ file: join(root, "etc/rcloud/rcloud.yaml"), env: {} }).driver).toBe("qemu");
      expect(ansible(vars("libvirt")).code).toBe(0);
      expect(existsSync(dropIn)).toBe(false);
    },
    120_000,
  );
});
