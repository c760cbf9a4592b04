import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse } from "yaml";
import { MAX_KEY_LINE_BYTES, MAX_SSH_KEYS } from "../../src/api-types/values.ts";
import { loginUserProblem } from "../../src/util/login-user.ts";
import {
  buildIso,
  buildSeedIso,
  IsoError,
  MAX_ISO_BYTES,
  renderMetaData,
  renderNetworkConfig,
  renderUserData,
  SeedError,
  type SeedInput,
  validateSshPublicKey,
} from "../../src/cloudinit/index.ts";

const work = mkdtempSync(join(tmpdir(), "rcloud-cloudinit-"));
afterAll(() => {
  // xorriso restores the ISO's read-only modes; make the tree removable again.
  Bun.spawnSync(["chmod", "-R", "u+w", work]);
  rmSync(work, { recursive: true, force: true });
});
let seq = 0;
const enc = new TextEncoder();

function tool(name: string, pkg: string): string {
  const bin = Bun.which(name);
  if (!bin) throw new Error(`${name} is required by these tests: apt-get install ${pkg}`);
  return bin;
}

function run(argv: string[]): string {
  const r = Bun.spawnSync(argv, { stdout: "pipe", stderr: "pipe" });
  const out = r.stdout.toString() + r.stderr.toString();
  if (r.exitCode !== 0) throw new Error(`${argv.join(" ")} exited ${r.exitCode}:\n${out}`);
  return out;
}

function xorriso(args: string[]): string {
  return run([tool("xorriso", "xorriso"), ...args]);
}

/** Writes the image, extracts it with xorriso and returns file name -> contents. */
function extract(iso: Uint8Array, readFs: "any" | "ecma119" = "any"): { path: string; files: Map<string, Uint8Array> } {
  const dir = join(work, `x${seq++}`);
  mkdirSync(dir);
  const path = join(dir, "seed.iso");
  writeFileSync(path, iso);
  const out = join(dir, "out");
  xorriso(["-read_fs", readFs, "-osirrox", "on", "-indev", path, "-extract", "/", out]);
  const files = new Map<string, Uint8Array>();
  for (const name of readdirSync(out)) files.set(name, new Uint8Array(readFileSync(join(out, name))));
  return { path, files };
}

function pattern(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

function sectorString(iso: Uint8Array, sector: number, off: number, len: number): string {
  return new TextDecoder("latin1").decode(iso.subarray(sector * 2048 + off, sector * 2048 + off + len));
}

describe("buildIso", () => {
  const files = [
    { name: "user-data", data: enc.encode("#cloud-config\n") },
    { name: "meta-data", data: enc.encode("instance-id: i-1\n") },
    { name: "network-config", data: enc.encode("version: 2\n") },
    { name: "empty", data: new Uint8Array(0) },
    { name: "exact-2048", data: pattern(2048, 1) },
    { name: "over-2049", data: pattern(2049, 2) },
    { name: "big.bin", data: pattern(1024 * 1024 + 17, 3) },
    { name: "user-data2", data: enc.encode("collides with user-data in 8.3") },
  ];
  const iso = buildIso(files, { volumeId: "cidata" });

  test("sector layout and volume descriptors", () => {
    expect(iso.length % 2048).toBe(0);
    expect(iso.subarray(0, 16 * 2048).every((b) => b === 0)).toBe(true);
    expect(iso[16 * 2048]).toBe(1);
    expect(sectorString(iso, 16, 1, 5)).toBe("CD001");
    expect(sectorString(iso, 16, 40, 32)).toBe("CIDATA".padEnd(32, " "));
    const dv = new DataView(iso.buffer, iso.byteOffset);
    // Volume space size, both byte orders.
    expect(dv.getUint32(16 * 2048 + 80, true)).toBe(iso.length / 2048);
    expect(dv.getUint32(16 * 2048 + 84, false)).toBe(iso.length / 2048);
    // Joliet SVD: type 2, escape sequence %/E, UCS-2 BE volume id.
    expect(iso[17 * 2048]).toBe(2);
    expect(sectorString(iso, 17, 1, 5)).toBe("CD001");
    expect(sectorString(iso, 17, 88, 3)).toBe("%/E");
    expect(new TextDecoder("utf-16be").decode(iso.subarray(17 * 2048 + 40, 17 * 2048 + 72))).toBe("cidata".padEnd(16, " "));
    expect(iso[18 * 2048]).toBe(255);
    expect(sectorString(iso, 18, 1, 5)).toBe("CD001");
  });

  test("xorriso extracts the Joliet names and identical bytes", () => {
    const { files: got } = extract(iso);
    expect([...got.keys()].sort()).toEqual(files.map((f) => f.name).sort());
    for (const f of files) {
      const g = got.get(f.name)!;
      expect(g.length).toBe(f.data.length);
      expect(Buffer.compare(Buffer.from(g), Buffer.from(f.data))).toBe(0);
    }
  });

  test("the primary (ISO 9660) tree holds the same data under 8.3 names", () => {
    const { files: got } = extract(iso, "ecma119");
    expect([...got.keys()].sort()).toEqual(["BIG.BIN", "EMPTY", "EXACT_20", "META_DAT", "NETWORK_", "OVER_204", "USER_DA1", "USER_DAT"]);
    expect(Buffer.from(got.get("USER_DAT")!).toString()).toBe("#cloud-config\n");
    expect(Buffer.from(got.get("USER_DA1")!).toString()).toBe("collides with user-data in 8.3");
    expect(Buffer.compare(Buffer.from(got.get("BIG.BIN")!), Buffer.from(files[6]!.data))).toBe(0);
  });

  test("xorriso reports the volume id", () => {
    const { path } = extract(buildIso([], { volumeId: "My_Vol_1" }));
    const info = xorriso(["-indev", path, "-pvd_info"]);
    expect(info).toMatch(/Volume Id\s*:\s*MY_VOL_1\b/);
  });

  test("an image with no files is valid", () => {
    const { files: got } = extract(buildIso([], { volumeId: "EMPTY" }));
    expect(got.size).toBe(0);
  });

  test("deterministic: same input, same bytes; the date is the only clock", () => {
    const again = buildIso(
      files.map((f) => ({ name: f.name, data: f.data.slice() })),
      { volumeId: "cidata" },
    );
    expect(Buffer.compare(Buffer.from(iso), Buffer.from(again))).toBe(0);
    const dated = buildIso(files, { volumeId: "cidata", date: new Date("2024-05-06T07:08:09Z") });
    expect(dated.length).toBe(iso.length);
    expect(Buffer.compare(Buffer.from(iso), Buffer.from(dated))).not.toBe(0);
    expect(sectorString(dated, 16, 813, 16)).toBe("2024050607080900");
  });

  test("invalid input is an IsoError with a code", () => {
    const code = (f: () => unknown): string => {
      try {
        f();
      } catch (e) {
        expect(e).toBeInstanceOf(IsoError);
        return (e as IsoError).code;
      }
      return "no error";
    };
    const one = (name: string) => [{ name, data: new Uint8Array(1) }];
    for (const v of ["", "x".repeat(33), "ci-data", "cid\u00e4ta", "a b"]) expect(code(() => buildIso([], { volumeId: v }))).toBe("BAD_VOLUME_ID");
    for (const n of ["", ".", "..", "x.", "a/b", "a b", "\u00e9", "x".repeat(65)]) expect(code(() => buildIso(one(n), { volumeId: "V" }))).toBe("BAD_FILE_NAME");
    expect(code(() => buildIso([...one("a"), ...one("a")], { volumeId: "V" }))).toBe("DUPLICATE_FILE_NAME");
    expect(code(() => buildIso([...one("user-data"), ...one("USER-DATA")], { volumeId: "V" }))).toBe("DUPLICATE_FILE_NAME");
    expect(code(() => buildIso([{ name: "huge", data: new Uint8Array(16 * 1024 * 1024) }], { volumeId: "V" }))).toBe("TOO_LARGE");
    expect(code(() => buildIso([], { volumeId: "V", date: new Date(Number.NaN) }))).toBe("BAD_DATE");
    expect(code(() => buildIso([], { volumeId: "V", date: new Date("1850-01-01T00:00:00Z") }))).toBe("BAD_DATE");
    expect(buildIso(one("x".repeat(64)), { volumeId: "x".repeat(32) }).length).toBeGreaterThan(0);
  });
});

// ---------------------------------------------------------------------------------------

function keygen(type: string, bits?: number, comment = "test@rcloud"): string {
  const path = join(work, `key${seq++}`);
  run([tool("ssh-keygen", "openssh-client"), "-q", "-t", type, ...(bits ? ["-b", String(bits)] : []), "-N", "", "-C", comment, "-f", path]);
  return readFileSync(`${path}.pub`, "utf8").trimEnd();
}

/** An SSH wire-format blob built from RFC 4251 "string" fields. */
function blob(...fields: (string | Uint8Array)[]): string {
  const parts: number[] = [];
  for (const f of fields) {
    const b = typeof f === "string" ? enc.encode(f) : f;
    parts.push(b.length >>> 24, (b.length >>> 16) & 255, (b.length >>> 8) & 255, b.length & 255, ...b);
  }
  return Buffer.from(parts).toString("base64");
}

const ed25519 = keygen("ed25519");
const [, edBlob = ""] = ed25519.split(" ");

const base: SeedInput = {
  instanceId: "vm-abc123",
  hostname: "kdevops-1",
  user: "kdevops",
  sshAuthorizedKeys: [ed25519],
};

describe("validateSshPublicKey", () => {
  test("accepts real keys of each generatable type", () => {
    expect(validateSshPublicKey(ed25519)).toEqual({ ok: true, type: "ssh-ed25519" });
    expect(validateSshPublicKey(keygen("rsa", 2048))).toEqual({ ok: true, type: "ssh-rsa" });
    for (const bits of [256, 384, 521]) expect(validateSshPublicKey(keygen("ecdsa", bits))).toEqual({ ok: true, type: `ecdsa-sha2-nistp${bits}` });
    // No comment at all, and a comment with spaces.
    expect(validateSshPublicKey(`ssh-ed25519 ${edBlob}`).ok).toBe(true);
    expect(validateSshPublicKey(`ssh-ed25519 ${edBlob} a comment: with # and "quotes"`).ok).toBe(true);
  });

  test("accepts security-key types (synthetic blobs)", () => {
    const sk = `sk-ssh-ed25519@openssh.com ${blob("sk-ssh-ed25519@openssh.com", new Uint8Array(32).fill(7), "ssh:")} yubikey`;
    expect(validateSshPublicKey(sk)).toEqual({ ok: true, type: "sk-ssh-ed25519@openssh.com" });
    const point = new Uint8Array(65).fill(9);
    point[0] = 4;
    const ske = `sk-ecdsa-sha2-nistp256@openssh.com ${blob("sk-ecdsa-sha2-nistp256@openssh.com", "nistp256", point, "ssh:")}`;
    expect(validateSshPublicKey(ske)).toEqual({ ok: true, type: "sk-ecdsa-sha2-nistp256@openssh.com" });
    // The application string is mandatory for sk keys.
    expect(validateSshPublicKey(`sk-ssh-ed25519@openssh.com ${blob("sk-ssh-ed25519@openssh.com", new Uint8Array(32))}`).ok).toBe(false);
  });

  const rejects: [string, () => string, RegExp][] = [
    ["truncated base64", () => `ssh-ed25519 ${edBlob.slice(0, 40)} x`, /base64|truncated/],
    ["truncated blob (valid base64)", () => `ssh-ed25519 ${Buffer.from(edBlob, "base64").subarray(0, 40).toString("base64")}`, /truncated|32 bytes/],
    ["embedded newline", () => `${ed25519}\nssh-ed25519 ${edBlob} second`, /line break/],
    ["trailing newline", () => `${ed25519}\n`, /line break/],
    ["wrong embedded type", () => `ssh-rsa ${edBlob} x`, /ssh-ed25519.*ssh-rsa/],
    ["options prefix", () => `command="x" ${ed25519}`, /options/],
    ["bare option word", () => `restrict ${ed25519}`, /options/],
    ["control character", () => `${ed25519}\u0007`, /control/],
    ["tab separator", () => `ssh-ed25519\t${edBlob}`, /control/],
    ["C1 control", () => `${ed25519} \u0085`, /line break/],
    ["unknown type", () => `ssh-dss ${edBlob}`, /unsupported key type/],
    ["not a key", () => "hello", /expected/],
    ["empty", () => "", /expected/],
    ["over 16 KiB", () => `ssh-ed25519 ${edBlob} ${"c".repeat(16 * 1024)}`, /16384 bytes/],
    ["trailing bytes", () => `ssh-ed25519 ${blob("ssh-ed25519", new Uint8Array(32), "extra")}`, /trailing/],
    ["short ed25519 key", () => `ssh-ed25519 ${blob("ssh-ed25519", new Uint8Array(31))}`, /32 bytes/],
    ["ecdsa curve mismatch", () => `ecdsa-sha2-nistp256 ${blob("ecdsa-sha2-nistp256", "nistp384", new Uint8Array(97).fill(4))}`, /curve/],
    ["1024-bit rsa", () => keygen("rsa", 1024), /1024 bits/],
  ];
  for (const [name, line, reason] of rejects) {
    test(`rejects: ${name}`, () => {
      const r = validateSshPublicKey(line());
      expect(r.ok).toBe(false);
      if (!r.ok) expect(r.reason).toMatch(reason);
    });
  }
});

describe("NoCloud documents", () => {
  test("user-data is #cloud-config and parses to the intended object", () => {
    const text = renderUserData(base);
    expect(text.startsWith("#cloud-config\n")).toBe(true);
    expect(parse(text)).toEqual({
      hostname: "kdevops-1",
      preserve_hostname: false,
      users: [
        {
          name: "kdevops",
          sudo: "ALL=(ALL) NOPASSWD:ALL",
          shell: "/bin/bash",
          lock_passwd: true,
          ssh_authorized_keys: [ed25519],
        },
      ],
      ssh_pwauth: false,
      disable_root: true,
    });
  });

  test("meta-data", () => {
    expect(parse(renderMetaData(base))).toEqual({ "instance-id": "vm-abc123", "local-hostname": "kdevops-1" });
  });

  test("hostile key comments stay data", () => {
    const comments = [
      "a: b",
      "x #not-a-comment",
      "} ] { [ & * ! | > ' \" % @ `",
      "--- ... ",
      "users: [{name: root}]",
      "\u00e9l\u00e8ve@h\u00f4te \u{1F511}",
      "ssh_pwauth: true # ",
    ];
    const keys = comments.map((c) => `ssh-ed25519 ${edBlob} ${c}`);
    const doc = parse(renderUserData({ ...base, sshAuthorizedKeys: keys }));
    expect(doc.users[0].ssh_authorized_keys).toEqual(keys);
    expect(doc.ssh_pwauth).toBe(false);
    expect(Object.keys(doc)).toEqual(["hostname", "preserve_hostname", "users", "ssh_pwauth", "disable_root"]);
    // A newline could start a new YAML line (or a new authorized_keys entry): refused, not escaped.
    expect(() => renderUserData({ ...base, sshAuthorizedKeys: [`${ed25519}\nssh_pwauth: true`] })).toThrow(SeedError);
  });

  test("values that YAML 1.1 would retype stay strings", () => {
    for (const [instanceId, hostname] of [["2001-12-14", "on"], ["1_000", "yes"], ["0x1F", "no"], ["1.5", "null"], ["017", "y"]] as const) {
      const s = { ...base, instanceId, hostname };
      for (const version of ["1.1", "1.2"] as const) {
        expect(parse(renderMetaData(s), { version })).toEqual({ "instance-id": instanceId, "local-hostname": hostname });
        expect(parse(renderUserData(s), { version }).hostname).toBe(hostname);
      }
    }
  });

  test("network-config is written only when given, as plain data", () => {
    expect(renderNetworkConfig(base)).toBeNull();
    expect(renderNetworkConfig({ ...base, networkConfig: null })).toBeNull();
    const shared = { addresses: ["10.0.0.2/24"] };
    const nc = {
      version: 2,
      ethernets: {
        eth0: { match: { macaddress: "52:54:00:12:34:56" }, "set-name": "eth0", dhcp4: false, mtu: 9000, ...shared, routes: [{ to: "default", via: "10.0.0.1" }] },
        eth1: { dhcp4: "yes", "<<": "=", on: "~", ...shared },
      },
    };
    const text = renderNetworkConfig({ ...base, networkConfig: nc })!;
    expect(text).not.toContain("&");
    expect(parse(text, { version: "1.1", merge: false })).toEqual(nc);
  });

  test("invalid seeds are SeedErrors with codes", () => {
    const code = (s: Partial<SeedInput>): string => {
      try {
        buildSeedIso({ ...base, ...s });
      } catch (e) {
        expect(e).toBeInstanceOf(SeedError);
        return (e as SeedError).code;
      }
      return "no error";
    };
    expect(code({ instanceId: "" })).toBe("BAD_INSTANCE_ID");
    expect(code({ instanceId: "../etc" })).toBe("BAD_INSTANCE_ID");
    expect(code({ hostname: "a.b" })).toBe("BAD_HOSTNAME");
    expect(code({ hostname: "-a" })).toBe("BAD_HOSTNAME");
    expect(code({ hostname: "x".repeat(64) })).toBe("BAD_HOSTNAME");
    expect(code({ user: "root" })).toBe("BAD_USER");
    expect(code({ user: "Bad User" })).toBe("BAD_USER");
    expect(code({ sshAuthorizedKeys: [] })).toBe("NO_SSH_KEYS");
    expect(code({ sshAuthorizedKeys: [ed25519, "ssh-ed25519 AAAA"] })).toBe("BAD_SSH_KEY");
    expect(code({ networkConfig: { version: 1, config: [] } })).toBe("BAD_NETWORK_CONFIG");
    expect(code({ networkConfig: { network: { version: 2 } } })).toBe("BAD_NETWORK_CONFIG");
    expect(code({ networkConfig: "version: 2" })).toBe("BAD_NETWORK_CONFIG");
    expect(code({ networkConfig: { version: 2, when: new Date() } })).toBe("BAD_NETWORK_CONFIG");
    expect(code({ networkConfig: { version: 2, mtu: 1e21 } })).toBe("BAD_NETWORK_CONFIG");
    expect(code({ networkConfig: { version: 2, x: "a\u2028b" } })).toBe("BAD_NETWORK_CONFIG");
    const cyclic: Record<string, unknown> = { version: 2 };
    cyclic.self = cyclic;
    expect(code({ networkConfig: cyclic })).toBe("BAD_NETWORK_CONFIG");
    expect(() => buildSeedIso({ ...base, sshAuthorizedKeys: [`command="x" ${ed25519}`] })).toThrow(/SSH key #1: .*options/);
  });
});

describe("buildSeedIso", () => {
  test("the most the VM service lets through (64 keys of the longest line) fits the ISO limit", () => {
    // A comment of 4-byte characters: the widest UTF-8 a key line can carry.
    const keys = Array.from({ length: MAX_SSH_KEYS }, (_, i) => `${ed25519} ${String(i).padStart(2, "0")} ${"\u{1F600}".repeat(Math.floor((MAX_KEY_LINE_BYTES - ed25519.length - 4) / 4))}`);
    for (const k of keys) {
      expect(validateSshPublicKey(k)).toMatchObject({ ok: true });
      expect(Buffer.byteLength(k)).toBeGreaterThan(MAX_KEY_LINE_BYTES - 4);
    }
    const iso = buildSeedIso({ ...base, sshAuthorizedKeys: keys });
    expect(iso.length).toBeLessThan(MAX_ISO_BYTES);
    expect(() => buildSeedIso({ ...base, sshAuthorizedKeys: [...keys, ed25519] })).toThrow(/at most 64 SSH keys/);
  }, 30_000); // a MiB of YAML written and read back: seconds on a loaded machine

  test("loginUserProblem: the user rule the config and the VM service check first", () => {
    expect(loginUserProblem("kdevops")).toBeNull();
    expect(loginUserProblem("_svc-1")).toBeNull();
    expect(loginUserProblem("root")).toMatch(/not be root/);
    for (const bad of ["Admin", "first.last", "1user", "u".repeat(33), "", 7]) expect(loginUserProblem(bad)).toMatch(/Unix user name/);
  });

  test("holds meta-data and user-data, labelled cidata", () => {
    const iso = buildSeedIso(base);
    const { path, files } = extract(iso);
    expect([...files.keys()].sort()).toEqual(["meta-data", "user-data"]);
    expect(Buffer.from(files.get("user-data")!).toString()).toBe(renderUserData(base));
    expect(Buffer.from(files.get("meta-data")!).toString()).toBe(renderMetaData(base));
    expect(xorriso(["-indev", path, "-pvd_info"])).toMatch(/Volume Id\s*:\s*CIDATA\b/);
    expect(Buffer.compare(Buffer.from(iso), Buffer.from(buildSeedIso(base)))).toBe(0);
  });

  test("adds network-config when given", () => {
    const s = { ...base, networkConfig: { version: 2, ethernets: { eth0: { dhcp4: true } } } };
    const { files } = extract(buildSeedIso(s, { date: new Date("2025-01-01T00:00:00Z") }));
    expect([...files.keys()].sort()).toEqual(["meta-data", "network-config", "user-data"]);
    expect(parse(Buffer.from(files.get("network-config")!).toString())).toEqual(s.networkConfig);
  });

  test("blkid (what cloud-init asks) sees LABEL=cidata", () => {
    if (!Bun.which("blkid")) throw new Error("blkid missing: apt-get install util-linux");
    const { path } = extract(buildSeedIso(base));
    const out = run(["blkid", "-p", "-o", "export", path]);
    expect(out).toContain("LABEL=cidata\n");
    expect(out).toContain("TYPE=iso9660\n");
  });

  // cloud-init reads these files with PyYAML (YAML 1.1), not the yaml package.
  test("PyYAML reads the same data", () => {
    if (Bun.spawnSync(["/usr/bin/python3", "-c", "import yaml"]).exitCode !== 0) {
      throw new Error("PyYAML missing: apt-get install python3-yaml (scripts/lib/install-deps.sh does)");
    }
    const weird = ["=", "<<", "on", "1_000", "1:20", "2001-12-14", "0755", "~", "", " x ", "a: b #c", "tab\there", "line\nbreak", "\u00a0", "\u{1F511}"];
    const nc = { version: 2, weird, map: Object.fromEntries(weird.filter((w) => w !== "" && !/[\t\n]/.test(w)).map((w) => [w, w])) };
    const s: SeedInput = { ...base, instanceId: "1_000", hostname: "off", sshAuthorizedKeys: [`ssh-ed25519 ${edBlob} x: y # z`], networkConfig: nc };
    const docs = { meta: renderMetaData(s), user: renderUserData(s), net: renderNetworkConfig(s) };
    const file = join(work, `docs${seq++}.json`);
    writeFileSync(file, JSON.stringify(docs));
    const py = "import json, sys, yaml\nd = json.load(open(sys.argv[1]))\nprint(json.dumps({k: yaml.safe_load(v) for k, v in d.items()}))";
    const back = JSON.parse(run(["/usr/bin/python3", "-c", py, file]));
    expect(back.meta).toEqual({ "instance-id": "1_000", "local-hostname": "off" });
    expect(back.user).toEqual(parse(docs.user));
    expect(back.user.users[0].ssh_authorized_keys).toEqual(s.sshAuthorizedKeys);
    expect(back.net).toEqual(nc);
  });
});
