import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Value } from "@sinclair/typebox/value";
import { parse } from "yaml";
import { ConfigError, defaultConfig, ENV_VARS, loadConfig, type RcloudConfig, resolveExtraVars } from "../../src/config/index.ts";
import { Type } from "@sinclair/typebox";
import { checkKey } from "../../src/config/checks.ts";
import { CONFIG_SCHEMA, LEAVES, List, Num } from "../../src/config/schema.ts";

const REPO = join(import.meta.dir, "../..");
const FIXTURES = join(REPO, "test/fixtures/config");
const KDEVOPS = join(FIXTURES, "kdevops");
const SHIPPED = join(REPO, "config/rcloud.yaml");
const HOME_ENV = { HOME: "/home/tester" };
const isRoot = process.getuid?.() === 0;
const STATE_DIR = isRoot ? "/var/lib/rcloud" : "/home/tester/.local/share/rcloud";

const tmpRoot = mkdtempSync(join(tmpdir(), "rcloud-config-"));
afterAll(() => rmSync(tmpRoot, { recursive: true, force: true }));
let counter = 0;

/** Writes `text` to a fresh file and returns its path. */
function writeTmp(text: string, name = "rcloud.yaml"): string {
  const dir = join(tmpRoot, String(counter++));
  mkdirSync(dir, { recursive: true });
  const file = join(dir, name);
  writeFileSync(file, text);
  return file;
}

function loadYaml(text: string, env: Record<string, string | undefined> = HOME_ENV): RcloudConfig {
  return loadConfig({ file: writeTmp(text), env });
}

function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw e;
  }
  throw new Error("expected a ConfigError");
}

function expectError(fn: () => unknown, key: string, pattern: RegExp): ConfigError {
  const e = configError(fn);
  expect(e.key).toBe(key);
  if (key !== "") expect(e.message.startsWith(`${key}: `)).toBe(true);
  expect(e.message).toMatch(pattern);
  return e;
}

describe("defaults", () => {
  test("built-in values", () => {
    const c = defaultConfig(HOME_ENV);
    expect(c).toEqual({
      server: {
        bind_address: "127.0.0.1:8765",
        workers: 4,
        idle_timeout_s: 30,
        tls: { cert_file: null, key_file: null },
        public_names: [],
        allowed_origins: [],
        max_body_bytes: 1048576,
        state_dir: STATE_DIR,
      },
      kdevops: { config_path: null, extra_vars_file: "extra_vars.yaml" },
      driver: "qemu",
      libvirt: { uri: "qemu:///system", storage_pool_name: "rcloud", storage_pool_path: "/var/lib/libvirt/images/rcloud", domain_type: "auto", console_log_dir: null, busy_poll_us: 0, slow_call_spacing_ms: 10, max_slow_calls: 20, call_timeout_s: 60, slow_call_timeout_s: 0, keepalive_interval_s: 5, keepalive_count: 3 },
      hosts: [],
      placement: { policy: "spread" },
      images: { base_images_dir: "/var/lib/libvirt/images/kdevops/guestfs/base_images" },
      qemu: { binary: "qemu-system-x86_64", state_dir: STATE_DIR, accel: "auto", run_as: "auto" },
      vm_defaults: {
        vcpus: 2,
        memory_mb: 2048,
        root_disk_gb: 20,
        network_mode: "bridge",
        network_bridge: "default",
        user_network_restrict: false,
        on_panic: "preserve",
        disk_format: "qcow2",
        disk_driver: "virtio",
        ssh_user: "kdevops",
        template: null,
        kernel_dir: null,
        max_kernel_bytes: 512 * 1024 * 1024,
        share_dirs: [],
        on_crash: "stop",
        stop_timeout_s: 60,
        pool_reserve_mb: 512,
        max_extra_disks: 8,
        vcpu_overcommit: 16,
        memory_overcommit: 1,
      },
      auth: { enabled: "auto", tokens_file: "/etc/rcloud/tokens.json", metrics_open: false, quotas: {}, default_quota: null },
      events: { buffer: 10000, subscriber_buffer: 1000 },
      logging: { level: "info", format: "json" },
    });
  });

  test("defaultConfig ignores RCLOUD_* overrides", () => {
    expect(defaultConfig({ ...HOME_ENV, RCLOUD_LIBVIRT_URI: "qemu:///session", RCLOUD_WORKERS: "9" })).toEqual(defaultConfig(HOME_ENV));
  });

  test("loadConfig without a file or environment equals the defaults", () => {
    expect(loadConfig({ env: HOME_ENV })).toEqual(defaultConfig(HOME_ENV));
    expect(loadConfig({ file: null, env: {} })).toEqual(defaultConfig({}));
  });

  test("the result is deeply frozen", () => {
    const c = loadConfig({ env: HOME_ENV });
    expect(Object.isFrozen(c)).toBe(true);
    expect(Object.isFrozen(c.server.tls)).toBe(true);
    expect(Object.isFrozen(c.vm_defaults)).toBe(true);
    expect(() => {
      (c.vm_defaults as { vcpus: number }).vcpus = 99;
    }).toThrow(TypeError);
  });
});

describe("config file layer", () => {
  test("file values override defaults, the rest stay default", () => {
    const c = loadYaml(`
server:
  bind_address: "[::1]:9000"
vm_defaults:
  vcpus: 4
  memory_mb: 8192
  disk_format: raw
  template: /etc/rcloud/domain.xml
logging:
  level: debug
`);
    expect(c.server.bind_address).toBe("[::1]:9000");
    expect(c.vm_defaults).toMatchObject({ vcpus: 4, memory_mb: 8192, disk_format: "raw", template: "/etc/rcloud/domain.xml", root_disk_gb: 20 });
    expect(c.logging).toEqual({ level: "debug", format: "json" });
    expect(c.libvirt.uri).toBe("qemu:///system");
  });

  test("the design document's example loads (config_path pointed at a real checkout)", () => {
    const c = loadYaml(`
server:
  bind_address: "0.0.0.0:8765"
  workers: 4
kdevops:
  config_path: "${KDEVOPS}"
  extra_vars_file: "extra_vars.yaml"
libvirt:
  uri: "qemu:///system"
  storage_pool_path: "/xfs1/libvirt/kdevops"
vm_defaults:
  network_bridge: "virbr0"
  disk_format: "raw"
  disk_driver: "virtio"
logging:
  level: "info"
  format: "json"  # or "text"
`);
    expect(c.server.bind_address).toBe("0.0.0.0:8765");
    expect(c.libvirt.storage_pool_path).toBe("/xfs1/libvirt/kdevops"); // file beats extra_vars
    expect(c.images.base_images_dir).toBe("/xfs1/libvirt/kdevops/guestfs/base_images"); // from extra_vars
    expect(c.vm_defaults.network_bridge).toBe("virbr0");
    expect(c.driver).toBe("libvirt");
  });

  test("libvirt.base_images_dir is an alias of images.base_images_dir", () => {
    expect(loadYaml("libvirt:\n  base_images_dir: /srv/images\n").images.base_images_dir).toBe("/srv/images");
    expectError(
      () => loadYaml("libvirt:\n  base_images_dir: /srv/a\nimages:\n  base_images_dir: /srv/b\n"),
      "images.base_images_dir",
      /alias.*set only one/,
    );
  });

  test("relative kdevops.config_path is relative to the file; relative --config to cwd", () => {
    const dir = join(tmpRoot, "rel");
    mkdirSync(join(dir, "etc"), { recursive: true });
    writeFileSync(join(dir, "etc/rcloud.yaml"), "kdevops:\n  config_path: ../kdevops\n");
    mkdirSync(join(dir, "kdevops"));
    writeFileSync(join(dir, "kdevops/extra_vars.yaml"), "guestfs_base_image_dir: /srv/base\n");
    const c = loadConfig({ file: "etc/rcloud.yaml", cwd: dir, env: HOME_ENV });
    expect(c.kdevops.config_path).toBe(join(dir, "kdevops"));
    expect(c.images.base_images_dir).toBe("/srv/base");
  });

  test("empty sections and an empty file are allowed", () => {
    expect(loadYaml("")).toEqual(defaultConfig(HOME_ENV));
    expect(loadYaml("# nothing\nserver:\n  tls:\nvm_defaults:\n")).toEqual(defaultConfig(HOME_ENV));
  });

  test("nullable keys can be set to null explicitly", () => {
    const c = loadYaml("vm_defaults:\n  kernel_dir: null\n  template:\n", { ...HOME_ENV, RCLOUD_KERNEL_DIR: "" });
    expect(c.vm_defaults.kernel_dir).toBeNull();
    expect(c.vm_defaults.template).toBeNull();
  });

  test("a missing config file is an error", () => {
    expectError(() => loadConfig({ file: join(tmpRoot, "nope.yaml"), env: {} }), "", /nope\.yaml: config file not found/);
  });
});

describe("environment layer", () => {
  test("every variable sets its key and beats the file", () => {
    const file = writeTmp(`
libvirt:
  uri: "qemu:///system"
  storage_pool_name: filepool
vm_defaults:
  network_mode: bridge
logging:
  level: warn
`);
    const c = loadConfig({
      file,
      env: {
        ...HOME_ENV,
        RCLOUD_LIBVIRT_URI: "qemu:///session",
        RCLOUD_STORAGE_POOL_PATH: "/srv/pool",
        RCLOUD_STORAGE_POOL_NAME: "envpool",
        RCLOUD_BASE_IMAGES_DIR: "/srv/base",
        RCLOUD_NETWORK_BRIDGE: "br0",
        RCLOUD_SERVER_BIND: "0.0.0.0:1234",
        RCLOUD_WORKERS: "8",
        RCLOUD_DRIVER: "qemu",
        RCLOUD_USER_NET_RESTRICT: "yes",
        RCLOUD_NETWORK_MODE: "user",
        RCLOUD_STATE_DIR: "/srv/state",
        RCLOUD_QEMU_BINARY: "/opt/qemu/bin/qemu-system-x86_64",
        RCLOUD_LOG_LEVEL: "error",
        RCLOUD_LOG_FORMAT: "text",
        RCLOUD_KERNEL_DIR: "/srv/kernels",
        RCLOUD_TEMPLATE: "/srv/domain.xml",
        RCLOUD_DOMAIN_TYPE: "qemu",
        RCLOUD_QEMU_ACCEL: "tcg",
        KDEVOPS_ROOT: KDEVOPS,
      },
    });
    expect(c.libvirt).toEqual({ uri: "qemu:///session", storage_pool_name: "envpool", storage_pool_path: "/srv/pool", domain_type: "qemu", console_log_dir: null, busy_poll_us: 0, slow_call_spacing_ms: 10, max_slow_calls: 20, call_timeout_s: 60, slow_call_timeout_s: 0, keepalive_interval_s: 5, keepalive_count: 3 });
    expect(c.images.base_images_dir).toBe("/srv/base");
    expect(c.server).toMatchObject({ bind_address: "0.0.0.0:1234", workers: 8 });
    expect(c.driver).toBe("qemu");
    expect(c.qemu).toEqual({ binary: "/opt/qemu/bin/qemu-system-x86_64", state_dir: "/srv/state", accel: "tcg", run_as: "auto" });
    expect(c.vm_defaults).toMatchObject({
      network_bridge: "br0",
      user_network_restrict: true,
      network_mode: "user",
      kernel_dir: "/srv/kernels",
      template: "/srv/domain.xml",
      vcpus: 8, // from extra_vars
    });
    expect(c.logging).toEqual({ level: "error", format: "text" });
    expect(c.kdevops.config_path).toBe(KDEVOPS);
  });

  test("ENV_VARS lists every supported variable with a key and description", () => {
    const names = Object.keys(ENV_VARS).sort();
    expect(names).toEqual(
      [
        "KDEVOPS_ROOT",
        "RCLOUD_BASE_IMAGES_DIR",
        "RCLOUD_DOMAIN_TYPE",
        "RCLOUD_DRIVER",
        "RCLOUD_KERNEL_DIR",
        "RCLOUD_LIBVIRT_URI",
        "RCLOUD_LOG_FORMAT",
        "RCLOUD_LOG_LEVEL",
        "RCLOUD_NETWORK_BRIDGE",
        "RCLOUD_NETWORK_MODE",
        "RCLOUD_PLACEMENT_POLICY",
        "RCLOUD_QEMU_ACCEL",
        "RCLOUD_QEMU_BINARY",
        "RCLOUD_QEMU_RUN_AS",
        "RCLOUD_SERVER_BIND",
        "RCLOUD_STATE_DIR",
        "RCLOUD_STORAGE_POOL_NAME",
        "RCLOUD_STORAGE_POOL_PATH",
        "RCLOUD_TEMPLATE",
        "RCLOUD_TOKENS_FILE",
        "RCLOUD_USER_NET_RESTRICT",
        "RCLOUD_WORKERS",
      ].sort(),
    );
    for (const spec of Object.values(ENV_VARS)) expect(spec.description.length).toBeGreaterThan(10);
    expect(ENV_VARS.RCLOUD_STORAGE_POOL_PATH.key).toBe("libvirt.storage_pool_path");
  });

  test("boolean spellings for RCLOUD_USER_NET_RESTRICT", () => {
    for (const [v, want] of [["1", true], ["true", true], ["YES", true], ["0", false], ["False", false], ["no", false]] as const) {
      expect(loadConfig({ env: { ...HOME_ENV, RCLOUD_USER_NET_RESTRICT: v } }).vm_defaults.user_network_restrict).toBe(want);
    }
    expectError(() => loadConfig({ env: { RCLOUD_USER_NET_RESTRICT: "maybe" } }), "vm_defaults.user_network_restrict", /RCLOUD_USER_NET_RESTRICT/);
  });

  test("bad environment values name the key and the variable", () => {
    expectError(() => loadConfig({ env: { RCLOUD_WORKERS: "four" } }), "server.workers", /integer.*environment variable RCLOUD_WORKERS/);
    expectError(() => loadConfig({ env: { RCLOUD_WORKERS: "0" } }), "server.workers", /between 1 and 1024/);
    expectError(() => loadConfig({ env: { RCLOUD_DRIVER: "xen" } }), "driver", /libvirt, qemu.*RCLOUD_DRIVER/);
    expectError(() => loadConfig({ env: { RCLOUD_STATE_DIR: "state" } }), "qemu.state_dir", /absolute.*RCLOUD_STATE_DIR/);
    expectError(() => loadConfig({ env: { RCLOUD_SERVER_BIND: "8765" } }), "server.bind_address", /host:port/);
  });

  test("empty variables count as unset", () => {
    expect(loadConfig({ env: { ...HOME_ENV, RCLOUD_LIBVIRT_URI: "", KDEVOPS_ROOT: "" } })).toEqual(defaultConfig(HOME_ENV));
  });
});

describe("kdevops extra_vars.yaml", () => {
  const raw = parse(readFileSync(join(KDEVOPS, "extra_vars.yaml"), "utf8")) as Record<string, unknown>;

  test("the yaml package reads kdevops's True/False as booleans and keeps ~ literal", () => {
    expect(parse("a: True\nb: False\nc: true\nd: yes\n")).toEqual({ a: true, b: false, c: true, d: "yes" });
    expect(raw.kdevops_enable_guestfs).toBe(true);
    expect(raw.guestfs_fedora).toBe(false);
    expect(raw.kdevops_ssh_config_prefix).toBe("~/.ssh/config_kdevops_");
    expect(raw.libvirt_vcpus_count).toBe(8);
  });

  test("resolveExtraVars resolves the three-level chain and passes other values through", () => {
    const r = resolveExtraVars(raw, "extra_vars.yaml");
    expect(r.kdevops_storage_pool_path).toBe("/xfs1/libvirt/kdevops");
    expect(r.guestfs_storage_dir).toBe("/xfs1/libvirt/kdevops/guestfs");
    expect(r.guestfs_base_image_dir).toBe("/xfs1/libvirt/kdevops/guestfs/base_images");
    expect(r.kdevops_ssh_config_prefix).toBe("~/.ssh/config_kdevops_");
    expect(r.guestfs_debian).toBe(true);
    expect(r.libvirt_extra_storage_drive_nvme).toBe(false);
    expect(r.ansible_cfg_ssh_port).toBe(22);
    expect(r.libvirt_uri).toBe("qemu:///system");
    expect(Object.keys(r)).toEqual(Object.keys(raw));
  });

  test("missing names fall back to kdevops role defaults", () => {
    const r = resolveExtraVars({
      kdevops_storage_pool_path: "{{ libvirt_storage_pool_path }}/{{kdevops_storage_pool_user}}",
      guestfs_storage_dir: "{{ kdevops_storage_pool_path }}/guestfs",
      guestfs_base_image_dir: "{{ guestfs_storage_dir }}/base_images",
      bridge: "{{ libvirt_session_public_network_dev }}",
      port: "{{ ansible_cfg_ssh_port }}",
      ansible_cfg_ssh_port: 22,
      label: "port {{ ansible_cfg_ssh_port }} 9p={{ enabled }}",
      enabled: true,
    });
    expect(r.guestfs_base_image_dir).toBe("/var/lib/libvirt/images/kdevops/guestfs/base_images");
    expect(r.bridge).toBe("virbr0");
    expect(r.port).toBe(22); // a lone reference keeps the referenced type
    expect(r.label).toBe("port 22 9p=True");
  });

  test("a cycle is reported with its path", () => {
    expectError(() => resolveExtraVars({ a: "{{ b }}/x", b: "{{ a }}" }, "ev.yaml"), "a", /reference cycle a -> b -> a/);
    expectError(() => resolveExtraVars({ x: "1", a: "{{ b }}", b: "{{ c }}", c: "y{{ b }}" }), "b", /cycle b -> c -> b/);
    expectError(() => resolveExtraVars({ self: "{{ self }}" }), "self", /cycle self -> self/);
  });

  test("unknown names, filters and other Jinja syntax are errors naming the key", () => {
    expectError(() => resolveExtraVars({ pool: "{{ nowhere }}/x" }, "ev.yaml"), "pool", /undefined variable 'nowhere'.*\(ev\.yaml\)/);
    expectError(
      () => resolveExtraVars({ base: "{{ dir }}/base", dir: "{{ missing }}" }),
      "dir",
      /undefined variable 'missing'.*needed by base -> dir/,
    );
    expectError(
      () => resolveExtraVars({ path: "{{ kdevops_storage_pool_path | default(libvirt_storage_pool_path) }}" }),
      "path",
      /Jinja filters are not supported/,
    );
    expectError(() => resolveExtraVars({ uri: "{{ libvirt_uri | default('qemu:///system') }}" }), "uri", /filter/);
    expectError(() => resolveExtraVars({ s: "{% if x %}a{% endif %}" }), "s", /Jinja statements/);
    expectError(() => resolveExtraVars({ s: "{{ a + b }}" }), "s", /unsupported Jinja expression/);
    expectError(() => resolveExtraVars({ s: "{{ a" }), "s", /unterminated/);
  });

  test("KDEVOPS_ROOT layers the fixture's values under rcloud's keys", () => {
    const c = loadConfig({ env: { ...HOME_ENV, KDEVOPS_ROOT: KDEVOPS } });
    expect(c.kdevops.config_path).toBe(KDEVOPS);
    expect(c.images.base_images_dir).toBe("/xfs1/libvirt/kdevops/guestfs/base_images");
    expect(c.libvirt.storage_pool_path).toBe("/xfs1/libvirt/kdevops/rcloud");
    expect(c.libvirt.uri).toBe("qemu:///system");
    expect(c.driver).toBe("libvirt");
    expect(c.vm_defaults.vcpus).toBe(8);
    expect(c.vm_defaults.memory_mb).toBe(4096);
    expect(c.vm_defaults.network_bridge).toBe("default"); // neither bridge variable is in the file
    expect(c.server).toMatchObject({ bind_address: "127.0.0.1:8765", workers: 4 });
  });

  test("rcloud, session-mode and fallback variables", () => {
    const dir = join(tmpRoot, "session");
    mkdirSync(dir);
    writeFileSync(
      join(dir, "vars.yaml"),
      [
        'libvirt_storage_pool_path: "/home/u/kdevops"',
        'rcloud_server_bind: "0.0.0.0:9999"',
        "rcloud_workers: 2",
        "libvirt_system_uri: qemu:///session",
        "libvirt_session_public_network_dev: virbr7",
        'libvirt_vcpus_count: "16"',
        "unrelated: '{{ some_ansible_fact | default(1) }}'",
        "",
      ].join("\n"),
    );
    const file = writeTmp(`kdevops:\n  config_path: ${dir}\n  extra_vars_file: vars.yaml\n`);
    const c = loadConfig({ file, env: HOME_ENV });
    expect(c.libvirt.storage_pool_path).toBe("/home/u/kdevops/rcloud");
    expect(c.libvirt.uri).toBe("qemu:///session");
    expect(c.server).toMatchObject({ bind_address: "0.0.0.0:9999", workers: 2 });
    expect(c.vm_defaults.network_bridge).toBe("virbr7");
    expect(c.vm_defaults.vcpus).toBe(16);
  });

  test("errors in extra_vars name the variable and the file", () => {
    const bad = writeTmp('guestfs_base_image_dir: "{{ guestfs_storage_dir | default(x) }}/base_images"\n', "extra_vars.yaml");
    const dir = join(bad, "..");
    const e = expectError(() => loadConfig({ env: { KDEVOPS_ROOT: dir } }), "guestfs_base_image_dir", /filter/);
    expect(e.message).toContain(`${bad} line 1`);

    const badValue = writeTmp("libvirt_vcpus_count: 1024\n", "extra_vars.yaml");
    expectError(
      () => loadConfig({ env: { KDEVOPS_ROOT: join(badValue, "..") } }),
      "vm_defaults.vcpus",
      /between 1 and 512.*extra_vars variable libvirt_vcpus_count/,
    );

    const relPool = writeTmp("kdevops_storage_pool_path: kdevops\n", "extra_vars.yaml");
    expectError(() => loadConfig({ env: { KDEVOPS_ROOT: join(relPool, "..") } }), "libvirt.storage_pool_path", /absolute.*kdevops_storage_pool_path/);
  });

  test("a missing extra_vars file is an error when the path was given", () => {
    const empty = join(tmpRoot, "empty-kdevops");
    mkdirSync(empty);
    expectError(() => loadConfig({ env: { KDEVOPS_ROOT: empty } }), "kdevops.config_path", /extra_vars file not found.*KDEVOPS_ROOT/);
    const file = writeTmp(`kdevops:\n  config_path: ${empty}\n`);
    expectError(() => loadConfig({ file, env: {} }), "kdevops.config_path", /not found.*line 2/);
  });

  test("invalid YAML in extra_vars is reported with its line", () => {
    const bad = writeTmp("a: 1\nb: [unclosed\n", "extra_vars.yaml");
    expectError(() => loadConfig({ env: { KDEVOPS_ROOT: join(bad, "..") } }), "", /invalid YAML: line \d+/);
  });
});

describe("validation", () => {
  const cases: [string, string, string, RegExp][] = [
    ["unknown key with suggestion", "vm_defaults:\n  vcpu: 2\n", "vm_defaults.vcpu", /unknown key \(did you mean vcpus\?\)/],
    ["unknown top-level key", "loging:\n  level: info\n", "loging", /did you mean logging\?/],
    ["unknown nested key", "server:\n  tls:\n    cert: /a\n", "server.tls.cert", /did you mean cert_file\?/],
    ["key in the wrong section", "vm_defaults:\n  uri: qemu:///system\n", "vm_defaults.uri", /did you mean libvirt\.uri\?/],
    ["unknown key without a near match", "vm_defaults:\n  zzzzzzzz: 1\n", "vm_defaults.zzzzzzzz", /unknown key \(known keys: vcpus/],
    ["section given a scalar", "server: 8765\n", "server", /must be a section/],
    ["string for an integer", "vm_defaults:\n  vcpus: two\n", "vm_defaults.vcpus", /integer between 1 and 512, got "two"/],
    ["float for an integer", "vm_defaults:\n  memory_mb: 1.5\n", "vm_defaults.memory_mb", /integer/],
    ["number for a string", "server:\n  bind_address: 8765\n", "server.bind_address", /must be a string, got 8765/],
    ["string for a boolean", "vm_defaults:\n  user_network_restrict: yes\n", "vm_defaults.user_network_restrict", /true or false, got "yes"/],
    ["null for a required key", "vm_defaults:\n  ssh_user:\n", "vm_defaults.ssh_user", /got no value/],
    ["ssh_user root (cloud-init would lock it)", "vm_defaults:\n  ssh_user: root\n", "vm_defaults.ssh_user", /must not be root/],
    ["ssh_user with a dot", "vm_defaults:\n  ssh_user: first.last\n", "vm_defaults.ssh_user", /Unix user name/],
    ["upper-case ssh_user", "vm_defaults:\n  ssh_user: Admin\n", "vm_defaults.ssh_user", /Unix user name/],
    ["bind without port", "server:\n  bind_address: localhost\n", "server.bind_address", /host:port/],
    ["bind port 0", "server:\n  bind_address: 127.0.0.1:0\n", "server.bind_address", /between 1 and 65535/],
    ["bind port 65536", "server:\n  bind_address: 127.0.0.1:65536\n", "server.bind_address", /between 1 and 65535/],
    ["bind port not a number", "server:\n  bind_address: 127.0.0.1:http\n", "server.bind_address", /port must be a number/],
    ["bind bare IPv6", 'server:\n  bind_address: "::1:8765"\n', "server.bind_address", /IPv6 host must be in brackets/],
    ["bind empty host", 'server:\n  bind_address: ":8765"\n', "server.bind_address", /host is missing/],
    ["vcpus 0", "vm_defaults:\n  vcpus: 0\n", "vm_defaults.vcpus", /between 1 and 512, got 0/],
    ["vcpus 513", "vm_defaults:\n  vcpus: 513\n", "vm_defaults.vcpus", /between 1 and 512/],
    ["memory 63", "vm_defaults:\n  memory_mb: 63\n", "vm_defaults.memory_mb", /between 64 and 4194304/],
    ["memory too large", "vm_defaults:\n  memory_mb: 4194305\n", "vm_defaults.memory_mb", /between 64 and 4194304/],
    ["root disk 0", "vm_defaults:\n  root_disk_gb: 0\n", "vm_defaults.root_disk_gb", /between 1 and 65536/],
    ["root disk too large", "vm_defaults:\n  root_disk_gb: 65537\n", "vm_defaults.root_disk_gb", /between 1 and 65536/],
    ["stop timeout 0", "vm_defaults:\n  stop_timeout_s: 0\n", "vm_defaults.stop_timeout_s", /between 1 and 3600/],
    ["stop timeout 3601", "vm_defaults:\n  stop_timeout_s: 3601\n", "vm_defaults.stop_timeout_s", /between 1 and 3600/],
    ["extra disks -1", "vm_defaults:\n  max_extra_disks: -1\n", "vm_defaults.max_extra_disks", /between 0 and 32/],
    ["extra disks 33", "vm_defaults:\n  max_extra_disks: 33\n", "vm_defaults.max_extra_disks", /between 0 and 32/],
    ["workers 0", "server:\n  workers: 0\n", "server.workers", /between 1 and 1024/],
    ["public_names not a list", "server:\n  public_names: rcloud.example\n", "server.public_names", /must be a list/],
    ["public name with port", "server:\n  public_names: [\"rcloud.example:8765\"]\n", "server.public_names", /without port/],
    ["origin with a path", "server:\n  allowed_origins: [\"https://ci.example/app\"]\n", "server.allowed_origins", /just scheme:\/\/host\[:port\].*https:\/\/ci\.example/],
    ["origin null", "server:\n  allowed_origins: [\"null\"]\n", "server.allowed_origins", /must be an origin/],
    ["origin wildcard", "server:\n  allowed_origins: [\"*\"]\n", "server.allowed_origins", /must be an origin/],
    ["body limit too small", "server:\n  max_body_bytes: 10\n", "server.max_body_bytes", /between 1024 and 134217728/],
    ["driver enum", "driver: xen\n", "driver", /one of libvirt, qemu, got "xen"/],
    ["network_mode enum", "vm_defaults:\n  network_mode: nat\n", "vm_defaults.network_mode", /one of bridge, user/],
    ["disk_format enum", "vm_defaults:\n  disk_format: vmdk\n", "vm_defaults.disk_format", /one of qcow2, raw/],
    ["disk_driver enum", "vm_defaults:\n  disk_driver: sata\n", "vm_defaults.disk_driver", /one of virtio, nvme, scsi, ide/],
    ["log level enum", "logging:\n  level: trace\n", "logging.level", /debug, info, warn, error/],
    ["log format enum", "logging:\n  format: xml\n", "logging.format", /json, text/],
    ["relative pool path", "libvirt:\n  storage_pool_path: pool\n", "libvirt.storage_pool_path", /absolute path/],
    ["tilde base images", 'images:\n  base_images_dir: "~/images"\n', "images.base_images_dir", /~ is not expanded/],
    ["relative state dir", "qemu:\n  state_dir: state\n", "qemu.state_dir", /absolute/],
    ["relative template", "vm_defaults:\n  template: domain.xml\n", "vm_defaults.template", /absolute/],
    ["relative kernel dir", "vm_defaults:\n  kernel_dir: kernels\n", "vm_defaults.kernel_dir", /absolute/],
    ["relative tls cert", "server:\n  tls:\n    cert_file: c.pem\n    key_file: /k.pem\n", "server.tls.cert_file", /absolute/],
    ["relative tls key", "server:\n  tls:\n    cert_file: /c.pem\n    key_file: k.pem\n", "server.tls.key_file", /absolute/],
    ["tls cert without key", "server:\n  tls:\n    cert_file: /c.pem\n", "server.tls.key_file", /must be set when server\.tls\.cert_file is set/],
    ["tls key without cert", "server:\n  tls:\n    key_file: /k.pem\n", "server.tls.cert_file", /must be set when server\.tls\.key_file is set/],
    ["libvirt uri", "libvirt:\n  uri: /var/run/libvirt/libvirt-sock\n", "libvirt.uri", /libvirt URI/],
    ["libvirt uri upper case scheme", "libvirt:\n  uri: QEMU:///system\n", "libvirt.uri", /libvirt URI/],
    ["pool name characters", "libvirt:\n  storage_pool_name: my pool\n", "libvirt.storage_pool_name", /1-64 characters/],
    ["pool name length", `libvirt:\n  storage_pool_name: ${"p".repeat(65)}\n`, "libvirt.storage_pool_name", /1-64 characters/],
    ["empty qemu binary", 'qemu:\n  binary: ""\n', "qemu.binary", /must not be empty/],
    ["memory_overcommit a string", 'vm_defaults:\n  memory_overcommit: "1.5"\n', "vm_defaults.memory_overcommit", /a number between 0\.1 and 64, got "1\.5"/],
    ["memory_overcommit 0", "vm_defaults:\n  memory_overcommit: 0\n", "vm_defaults.memory_overcommit", /between 0\.1 and 64, got 0/],
    ["memory_overcommit 65", "vm_defaults:\n  memory_overcommit: 65\n", "vm_defaults.memory_overcommit", /between 0\.1 and 64, got 65/],
    ["memory_overcommit .nan", "vm_defaults:\n  memory_overcommit: .nan\n", "vm_defaults.memory_overcommit", /a number between/],
  ];
  for (const [name, yaml, key, pattern] of cases) {
    test(name, () => {
      const e = expectError(() => loadYaml(yaml), key, pattern);
      expect(e.message).toMatch(/rcloud\.yaml line \d+\)$/);
    });
  }

  test("the line of the offending key is reported", () => {
    const e = expectError(() => loadYaml("server:\n  workers: 2\nvm_defaults:\n  vcpus: 0\n"), "vm_defaults.vcpus", /./);
    expect(e.message).toMatch(/line 4\)$/);
  });

  test("accepted edge values", () => {
    const c = loadYaml(`
server:
  bind_address: "[::]:65535"
  tls: { cert_file: /etc/rcloud/cert.pem, key_file: /etc/rcloud/key.pem }
libvirt:
  uri: qemu+ssh://root@host/system
  storage_pool_name: rcloud.pool-1_x
vm_defaults:
  vcpus: 512
  memory_mb: 64
  max_extra_disks: 0
  stop_timeout_s: 3600
  memory_overcommit: 1.5
`);
    expect(c.server.tls).toEqual({ cert_file: "/etc/rcloud/cert.pem", key_file: "/etc/rcloud/key.pem" });
    expect(c.vm_defaults).toMatchObject({ vcpus: 512, memory_mb: 64, max_extra_disks: 0, stop_timeout_s: 3600, memory_overcommit: 1.5 });
    expect(loadYaml("server:\n  bind_address: localhost:1\n").server.bind_address).toBe("localhost:1");
  });

  test("invalid YAML is reported with its line", () => {
    const e = expectError(() => loadYaml("server:\n  bind_address: 1\n  bind_address: 2\n"), "", /invalid YAML: line 3, column \d+: Map keys must be unique/);
    expect(e.message).toContain("rcloud.yaml");
    expectError(() => loadYaml("server:\n  tls: [\n"), "", /invalid YAML: line \d+/);
  });

  test("the top level must be a mapping", () => {
    expectError(() => loadYaml("- a\n- b\n"), "", /must be a mapping/);
    expectError(() => loadYaml("just a string\n"), "", /must be a mapping/);
  });

  test("ConfigError carries key and source", () => {
    const e = configError(() => loadYaml("vm_defaults:\n  vcpus: 0\n"));
    expect(e).toBeInstanceOf(Error);
    expect(e.name).toBe("ConfigError");
    expect(e.source).toMatch(/rcloud\.yaml line 2$/);
  });
});

describe("driver default", () => {
  test("qemu when no libvirt URI is configured", () => {
    expect(loadConfig({ env: {} }).driver).toBe("qemu");
  });
  test("libvirt when the file configures a URI", () => {
    expect(loadYaml("libvirt:\n  uri: qemu:///system\n").driver).toBe("libvirt");
  });
  test("libvirt when the environment configures a URI", () => {
    expect(loadConfig({ env: { RCLOUD_LIBVIRT_URI: "qemu:///session" } }).driver).toBe("libvirt");
  });
  test("libvirt when extra_vars configures a URI", () => {
    const f = writeTmp("libvirt_uri: qemu:///system\n", "extra_vars.yaml");
    expect(loadConfig({ env: { KDEVOPS_ROOT: join(f, "..") } }).driver).toBe("libvirt");
    const g = writeTmp("guestfs_base_image_dir: /srv/b\n", "extra_vars.yaml");
    expect(loadConfig({ env: { KDEVOPS_ROOT: join(g, "..") } }).driver).toBe("qemu");
  });
  test("an explicit driver wins", () => {
    expect(loadYaml("driver: qemu\nlibvirt:\n  uri: qemu:///system\n").driver).toBe("qemu");
    expect(loadConfig({ env: { RCLOUD_DRIVER: "libvirt" } }).driver).toBe("libvirt");
    expect(loadYaml("driver: libvirt\n", { RCLOUD_DRIVER: "qemu" }).driver).toBe("qemu");
  });
});

describe("shipped config/rcloud.yaml", () => {
  const text = readFileSync(SHIPPED, "utf8");

  test("loads and equals the defaults", () => {
    expect(loadConfig({ file: SHIPPED, env: HOME_ENV })).toEqual(defaultConfig(HOME_ENV));
    expect(loadConfig({ file: "config/rcloud.yaml", cwd: REPO, env: {} })).toEqual(defaultConfig({}));
  });

  test("every documented setting is valid, and uncommented they still equal the defaults", () => {
    const uncommented = text
      .split("\n")
      .map((l) => (/^\s*##/.test(l) ? l : l.replace(/^(\s*)# /, "$1")))
      .join("\n");
    const c = loadYaml(uncommented);
    const d = defaultConfig(HOME_ENV);
    expect({ ...c, driver: d.driver, qemu: { ...c.qemu, state_dir: d.qemu.state_dir } }).toEqual(d);
    // Documents every key: each leaf of the defaults appears as a setting line.
    const leaves: string[] = [];
    const walk = (o: object, prefix: string): void => {
      for (const [k, v] of Object.entries(o)) {
        if (v !== null && typeof v === "object") walk(v, `${prefix}${k}.`);
        else leaves.push(k);
      }
    };
    walk(d, "");
    for (const k of leaves) expect(text).toMatch(new RegExp(`^\\s*# ${k}:`, "m"));
  });
});

describe("schema (src/config/schema.ts)", () => {
  test("every key has a one-line description and a default", () => {
    for (const [key, schema] of LEAVES) {
      expect({ key, ok: schema.description.length > 5 && !schema.description.includes("\n") }).toEqual({ key, ok: true });
      expect({ key, has: schema.default !== undefined || schema.defaultFrom !== undefined }).toEqual({ key, has: true });
    }
  });

  test("the loaded configuration matches the schema its type is derived from", () => {
    expect(Value.Check(CONFIG_SCHEMA, defaultConfig(HOME_ENV))).toBe(true);
    const loaded = loadYaml("auth:\n  quotas:\n    kernel-ci: { vms: 10, disk_gb: null }\n  default_quota: { vcpus: 4 }\n");
    expect(loaded.auth.quotas).toEqual({ "kernel-ci": { vms: 10, disk_gb: null } });
    expect(Value.Check(CONFIG_SCHEMA, loaded)).toBe(true);
    // The schema is strict: an unknown key or a value out of range does not match.
    expect(Value.Check(CONFIG_SCHEMA, { ...loaded, extra: 1 })).toBe(false);
    expect(Value.Check(CONFIG_SCHEMA, { ...loaded, vm_defaults: { ...loaded.vm_defaults, vcpus: 0 } })).toBe(false);
  });

  test("ENV_VARS is the schema's env options", () => {
    const declared = [...LEAVES].flatMap(([key, s]) => (s.env === undefined ? [] : [[s.env, key]]));
    expect(Object.entries(ENV_VARS).map(([name, spec]) => [name, spec.key])).toEqual(declared);
  });

  test("kinds no key uses yet: fractional numbers and lists", () => {
    const ratio = Num(0.5, 8, { default: 1, description: "a ratio for the test" });
    expect([checkKey(ratio, 1.5), checkKey(ratio, 8)]).toEqual([null, null]);
    expect(checkKey(ratio, 9)).toBe("must be between 0.5 and 8, got 9");
    expect(checkKey(ratio, "x")).toBe('must be a number between 0.5 and 8, got "x"');
    const names = List(Type.String(), { default: [], description: "names for the test" });
    expect([checkKey(names, []), checkKey(names, ["a", "b"])]).toEqual([null, null]);
    expect(checkKey(names, "a")).toBe('must be a list, each a string, got "a"');
    expect(checkKey(names, ["a", 1])).toBe("must be a list, each a string, got a list");
  });

  const cases: [string, string, string, RegExp][] = [
    ["null for a pattern key says what it expects", "libvirt:\n  uri:\n", "libvirt.uri", /must be a libvirt URI .*got no value/],
    ["null for the bind address says host:port", "server:\n  bind_address:\n", "server.bind_address", /must be host:port.*got no value/],
    ["alias suggested for a typo", "libvirt:\n  base_image_dir: /x\n", "libvirt.base_image_dir", /did you mean base_images_dir\?/],
    ["quota project name", "auth:\n  quotas:\n    Kernel: { vms: 1 }\n", "auth.quotas", /project name "Kernel" must be lower-case/],
    ["quota unknown limit", "auth:\n  quotas:\n    ci: { cpus: 1 }\n", "auth.quotas", /ci: unknown quota key "cpus" \(known: vms, vcpus, memory_mb, disk_gb\)/],
    ["quota negative limit", "auth:\n  quotas:\n    ci: { vms: -1 }\n", "auth.quotas", /ci: vms must be a non-negative integer, got -1/],
    ["quotas not a mapping", "auth:\n  quotas: [ci]\n", "auth.quotas", /must be a mapping of project names to quotas, got a list/],
    ["default quota not a mapping", "auth:\n  default_quota: 5\n", "auth.default_quota", /must be a mapping with any of vms/],
    ["auth.enabled", "auth:\n  enabled: sometimes\n", "auth.enabled", /must be auto, true or false, got "sometimes"/],
    ["path given a number", "qemu:\n  state_dir: 5\n", "qemu.state_dir", /must be an absolute path \(string\), got 5/],
  ];
  for (const [name, yaml, key, pattern] of cases) test(name, () => void expectError(() => loadYaml(yaml), key, pattern));
});
