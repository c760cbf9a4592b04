/**
 * cloud-init NoCloud seeds: meta-data, user-data and optional network-config on an
 * ISO 9660 volume labelled "cidata", which cloud-init finds by label at first boot.
 *
 * Every document is built as an object and serialised by the `yaml` library; no caller
 * text is ever spliced into YAML source. The reader is cloud-init's PyYAML, a YAML 1.1
 * parser, so the output is written for 1.1: strings are double-quoted (an unquoted
 * `on`, `1_000`, `2001-12-14`, `<<` or `=` means something else to PyYAML), keys stay
 * plain only when they are unambiguous identifiers, long lines are never folded, and
 * characters PyYAML treats as line breaks or refuses (U+0085, U+2028, U+2029, C0/C1
 * controls, non-characters) are rejected up front. Each document is parsed back and
 * compared with its source object before it is used.
 */
import { Document, isSeq, Scalar, parse, visit, type Tags } from "yaml";
import { MAX_KEY_LINE_BYTES, MAX_SSH_KEYS } from "../api-types/values.ts";
import { loginUserProblem } from "../util/login-user.ts";
import { buildIso } from "./iso9660.ts";

export type SeedErrorCode = "BAD_INSTANCE_ID" | "BAD_HOSTNAME" | "BAD_USER" | "BAD_SSH_KEY" | "NO_SSH_KEYS" | "BAD_NETWORK_CONFIG" | "BAD_MOUNT" | "INTERNAL";

export class SeedError extends Error {
  override readonly name = "SeedError";
  constructor(
    readonly code: SeedErrorCode,
    message: string,
  ) {
    super(message);
  }
}

export interface SeedInput {
  /** cloud-init re-runs first-boot modules when this changes; also a directory name under /var/lib/cloud. */
  instanceId: string;
  /** A single DNS label. */
  hostname: string;
  /** Login user to create (passwordless sudo, password locked, key-only SSH). */
  user: string;
  /** OpenSSH public key lines, as in authorized_keys but without options. */
  sshAuthorizedKeys: string[];
  /** Optional network-config version 2 object (netplan schema), written as the network-config file. */
  networkConfig?: unknown | null;
  /** Shared directories to mount (cloud-init `mounts:`); with mounts, the keys may be empty (no user is made). */
  mounts?: SeedMount[];
}

/** One cloud-init `mounts:` item: what, where, file system type and mount options. */
export interface SeedMount {
  /** The share's tag (virtiofs, 9p). */
  spec: string;
  dir: string;
  fstype: "virtiofs" | "9p";
  options: string[];
}

const MOUNT_SPEC_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,35}$/;
const MOUNT_DIR_RE = /^\/mnt\/[A-Za-z0-9][A-Za-z0-9_-]{0,35}$/;
const MOUNT_OPTION_RE = /^[A-Za-z0-9_.=-]{1,64}$/;

const INSTANCE_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const HOSTNAME_RE = /^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$/;
const MAX_NETWORK_DEPTH = 32;

export function renderMetaData(s: SeedInput): string {
  checkIdentity(s);
  return toYaml({ "instance-id": s.instanceId, "local-hostname": s.hostname });
}

export function renderUserData(s: SeedInput): string {
  checkIdentity(s);
  const mounts = checkMounts(s.mounts ?? []);
  // A seed made only for its mounts makes no user: the image's own stay as they are.
  const keys = mounts.length > 0 && s.sshAuthorizedKeys.length === 0 ? [] : checkKeys(s.sshAuthorizedKeys);
  const config: Record<string, unknown> = {
    hostname: s.hostname,
    preserve_hostname: false,
    ...(keys.length > 0
      ? {
          users: [
            {
              name: s.user,
              sudo: "ALL=(ALL) NOPASSWD:ALL",
              shell: "/bin/bash",
              lock_passwd: true,
              ssh_authorized_keys: keys,
            },
          ],
        }
      : {}),
    ssh_pwauth: false,
    disable_root: true,
    // Six fields as in fstab (cloud-init fills missing ones), one flow sequence per mount.
    ...(mounts.length > 0 ? { mounts: mounts.map((m) => [m.spec, m.dir, m.fstype, m.options.join(","), "0", "0"]) } : {}),
  };
  // cloud-init picks the user-data handler from the first line; "#cloud-config" is required.
  return "#cloud-config\n" + toYaml(config);
}

/** The network-config file, or null when the seed has none. */
export function renderNetworkConfig(s: SeedInput): string | null {
  const nc = s.networkConfig;
  if (nc === undefined || nc === null) return null;
  if (!isPlainObject(nc) || nc.version !== 2) {
    throw new SeedError("BAD_NETWORK_CONFIG", "networkConfig must be a network-config version 2 object ({ version: 2, ethernets: ... }), without a top-level 'network:' wrapper");
  }
  checkJsonLike(nc, "networkConfig", 0);
  return toYaml(nc);
}

export function buildSeedIso(s: SeedInput, opts: { date?: Date } = {}): Uint8Array {
  const enc = new TextEncoder();
  const files = [
    { name: "meta-data", data: enc.encode(renderMetaData(s)) },
    { name: "user-data", data: enc.encode(renderUserData(s)) },
  ];
  const network = renderNetworkConfig(s);
  if (network !== null) files.push({ name: "network-config", data: enc.encode(network) });
  return buildIso(files, opts.date ? { volumeId: "cidata", date: opts.date } : { volumeId: "cidata" });
}

// ---------------------------------------------------------------------------------------
// SSH public keys

const MIN_RSA_BITS = 2048;
const ECDSA_POINT_BYTES: Record<string, number> = { nistp256: 65, nistp384: 97, nistp521: 133 };
const KEY_TYPES = new Set([
  "ssh-ed25519",
  "ssh-rsa",
  "ecdsa-sha2-nistp256",
  "ecdsa-sha2-nistp384",
  "ecdsa-sha2-nistp521",
  "sk-ssh-ed25519@openssh.com",
  "sk-ecdsa-sha2-nistp256@openssh.com",
]);

export type SshKeyCheck = { ok: true; type: string } | { ok: false; reason: string };

/**
 * Accepts one OpenSSH public key line: "<type> <base64 blob> [comment]". The blob is
 * decoded and its fields checked against the declared type (RFC 4253 §6.6, RFC 5656 §3.1,
 * RFC 8709 §4, OpenSSH PROTOCOL.u2f), so a truncated paste or a type/blob mismatch is
 * caught here rather than as a silent login failure in the guest.
 */
export function validateSshPublicKey(line: string): SshKeyCheck {
  if (typeof line !== "string") return { ok: false, reason: "not a string" };
  if (new TextEncoder().encode(line).length > MAX_KEY_LINE_BYTES) return { ok: false, reason: `longer than ${MAX_KEY_LINE_BYTES} bytes` };
  if (/[\r\n\u0085\u2028\u2029]/.test(line)) return { ok: false, reason: "contains a line break; give one key per entry" };
  const bad = firstUnsafeChar(line, false);
  if (bad !== null) return { ok: false, reason: `contains control or non-printable character U+${bad}` };
  const m = /^(\S+) +(\S+)(?: +(.*))?$/.exec(line);
  if (!m) return { ok: false, reason: "expected '<type> <base64 key> [comment]'" };
  const [, type = "", b64 = ""] = m;
  if (!KEY_TYPES.has(type)) {
    // authorized_keys options (command="...", from=..., no-pty, restrict) precede the type.
    if (/[=",]/.test(type) || line.split(/ +/).some((t) => KEY_TYPES.has(t))) {
      return { ok: false, reason: "authorized_keys options (command=, from=, no-pty, ...) are not allowed" };
    }
    return { ok: false, reason: `unsupported key type ${JSON.stringify(type.slice(0, 64))}` };
  }
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64) || b64.length % 4 !== 0) return { ok: false, reason: "key data is not valid base64 (truncated?)" };
  const blob = new Uint8Array(Buffer.from(b64, "base64"));
  const problem = checkBlob(type, blob);
  return problem === null ? { ok: true, type } : { ok: false, reason: problem };
}

/** Returns why the wire-format key blob does not fit `type`, or null when it does. */
function checkBlob(type: string, blob: Uint8Array): string | null {
  const r = new SshReader(blob);
  const embedded = r.string();
  if (embedded === null) return "key data is truncated";
  const embeddedType = new TextDecoder("latin1").decode(embedded);
  if (embeddedType !== type) return `key data is a ${JSON.stringify(embeddedType.slice(0, 64))} key but the line says ${type}`;
  switch (type) {
    case "ssh-ed25519":
    case "sk-ssh-ed25519@openssh.com": {
      const pk = r.string();
      if (pk === null) return "key data is truncated";
      if (pk.length !== 32) return `ed25519 public key must be 32 bytes, got ${pk.length}`;
      break;
    }
    case "ssh-rsa": {
      const e = r.string();
      const n = r.string();
      if (e === null || n === null) return "key data is truncated";
      const bits = mpintBits(n);
      if (mpintBits(e) === 0) return "RSA exponent is zero";
      if (bits < MIN_RSA_BITS) return `RSA key is ${bits} bits; at least ${MIN_RSA_BITS} required`;
      break;
    }
    default: {
      // ecdsa-sha2-<curve> and sk-ecdsa-sha2-nistp256@openssh.com: curve name, then SEC1 point.
      const curveName = r.string();
      const q = r.string();
      if (curveName === null || q === null) return "key data is truncated";
      const curve = new TextDecoder("latin1").decode(curveName);
      const expected = /^(?:sk-)?ecdsa-sha2-(nistp\d+)/.exec(type)?.[1];
      if (curve !== expected) return `ECDSA curve ${JSON.stringify(curve.slice(0, 32))} does not match ${type}`;
      if (q.length !== ECDSA_POINT_BYTES[curve] || q[0] !== 4) return "ECDSA public point has the wrong size or is not uncompressed";
    }
  }
  if (type.startsWith("sk-") && r.string() === null) return "key data is truncated (missing security-key application)";
  if (!r.atEnd()) return "key data has trailing bytes";
  return null;
}

/** Significant bits of an SSH mpint (big-endian two's complement, RFC 4251 §5). */
function mpintBits(b: Uint8Array): number {
  let i = 0;
  while (i < b.length && b[i] === 0) i++;
  if (i === b.length) return 0;
  return (b.length - i - 1) * 8 + (32 - Math.clz32(b[i]!));
}

/** Reads RFC 4251 §5 "string" fields: uint32 big-endian length, then the bytes. */
class SshReader {
  private off = 0;
  constructor(private readonly buf: Uint8Array) {}
  string(): Uint8Array | null {
    if (this.buf.length - this.off < 4) return null;
    const len = new DataView(this.buf.buffer, this.buf.byteOffset + this.off, 4).getUint32(0, false);
    if (this.buf.length - this.off - 4 < len) return null;
    const out = this.buf.subarray(this.off + 4, this.off + 4 + len);
    this.off += 4 + len;
    return out;
  }
  atEnd(): boolean {
    return this.off === this.buf.length;
  }
}

// ---------------------------------------------------------------------------------------
// Input checks

function checkIdentity(s: SeedInput): void {
  if (typeof s.instanceId !== "string" || !INSTANCE_ID_RE.test(s.instanceId)) {
    throw new SeedError("BAD_INSTANCE_ID", `instance id must be 1-128 characters of [A-Za-z0-9._-] starting with a letter or digit, got ${JSON.stringify(s.instanceId)}`);
  }
  if (typeof s.hostname !== "string" || !HOSTNAME_RE.test(s.hostname)) {
    throw new SeedError("BAD_HOSTNAME", `hostname must be a DNS label (1-63 of [A-Za-z0-9-], no leading or trailing '-'), got ${JSON.stringify(s.hostname)}`);
  }
  const userProblem = loginUserProblem(s.user);
  if (userProblem !== null) throw new SeedError("BAD_USER", `user ${userProblem}`);
}

function checkKeys(keys: unknown): string[] {
  if (!Array.isArray(keys) || keys.length === 0) {
    // The user's password is locked and SSH password login is off: no key, no way in.
    throw new SeedError("NO_SSH_KEYS", "at least one SSH public key is required");
  }
  if (keys.length > MAX_SSH_KEYS) throw new SeedError("BAD_SSH_KEY", `at most ${MAX_SSH_KEYS} SSH keys, got ${keys.length}`);
  return keys.map((k, i) => {
    const r = validateSshPublicKey(k as string);
    if (!r.ok) throw new SeedError("BAD_SSH_KEY", `SSH key #${i + 1}: ${r.reason}`);
    return k as string;
  });
}

function checkMounts(mounts: SeedMount[]): SeedMount[] {
  if (!Array.isArray(mounts)) throw new SeedError("BAD_MOUNT", "mounts must be a list");
  for (const [i, m] of mounts.entries()) {
    const ok = MOUNT_SPEC_RE.test(m.spec) && MOUNT_DIR_RE.test(m.dir) && (m.fstype === "virtiofs" || m.fstype === "9p") && m.options.length > 0 && m.options.every((o) => MOUNT_OPTION_RE.test(o));
    if (!ok) throw new SeedError("BAD_MOUNT", `mount #${i + 1} must be a tag, /mnt/<tag>, virtiofs or 9p and plain options, got ${JSON.stringify(m).slice(0, 200)}`);
  }
  return mounts;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== "object" || v === null || Array.isArray(v)) return false;
  const proto: unknown = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/** JSON-shaped values only: no Dates, Maps, class instances, bigints, cycles or odd characters. */
function checkJsonLike(v: unknown, path: string, depth: number): void {
  const fail = (why: string): never => {
    throw new SeedError("BAD_NETWORK_CONFIG", `${path}: ${why}`);
  };
  if (depth > MAX_NETWORK_DEPTH) fail(`nested deeper than ${MAX_NETWORK_DEPTH} levels`);
  if (v === null || typeof v === "boolean") return;
  if (typeof v === "number") {
    // PyYAML reads "1e+21" as a string (its floats need a "."), so no exponent forms.
    if (!Number.isFinite(v) || /e/i.test(String(v))) fail("numbers must be finite and written without an exponent");
    return;
  }
  if (typeof v === "string") {
    const bad = firstUnsafeChar(v, true);
    if (bad !== null) fail(`string contains unsupported character U+${bad}`);
    return;
  }
  if (Array.isArray(v)) {
    v.forEach((x, i) => checkJsonLike(x, `${path}[${i}]`, depth + 1));
    return;
  }
  if (!isPlainObject(v)) fail(`unsupported value of type ${typeof v === "object" ? (v.constructor?.name ?? "object") : typeof v}`);
  for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
    const bad = firstUnsafeChar(k, false);
    if (bad !== null || k.length === 0) fail(`key ${JSON.stringify(k)} is empty or has unsupported characters`);
    checkJsonLike(x, `${path}.${k}`, depth + 1);
  }
}

/**
 * First character (as hex) that PyYAML would refuse or reinterpret even inside a quoted
 * scalar, or null. TAB and LF are allowed only where `allowTabLf` (the yaml library
 * escapes them; SSH key lines and map keys have no use for them).
 */
function firstUnsafeChar(s: string, allowTabLf: boolean): string | null {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        i++;
        continue;
      }
    }
    const ok =
      (allowTabLf && (c === 0x09 || c === 0x0a)) ||
      (c >= 0x20 && c <= 0x7e) ||
      (c >= 0xa0 && c <= 0xd7ff && c !== 0x2028 && c !== 0x2029) ||
      (c >= 0xe000 && c <= 0xfffd && c !== 0xfeff);
    if (!ok) return c.toString(16).toUpperCase().padStart(4, "0");
  }
  return null;
}

// ---------------------------------------------------------------------------------------
// YAML output

const SAFE_KEY_RE = /^[A-Za-z_][A-Za-z0-9_-]*$/;
// YAML 1.1 booleans and nulls (PyYAML's resolver and the spec's y/n); plain only if not one.
const YAML11_WORD_RE = /^(?:y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF|null|Null|NULL)$/;

// yaml's 1.1 schema treats a "<<" key as a merge key even when it is just data; drop it.
const yaml11Options = {
  version: "1.1",
  customTags: (tags: Tags) => tags.filter((t) => typeof t === "string" || t.tag !== "tag:yaml.org,2002:merge"),
} as const;

function toYaml(value: Record<string, unknown>): string {
  // aliasDuplicateObjects: false writes a shared sub-object out twice instead of as an
  // &anchor/*alias pair.
  const doc = new Document(value, { ...yaml11Options, aliasDuplicateObjects: false });
  visit(doc, {
    // A list directly in a list (a `mounts:` item) is written in flow style, as fstab-like
    // rows are by convention: `- [ "tag", "/mnt/tag", "virtiofs", "rw,nofail", "0", "0" ]`.
    Seq(_key, node, path) {
      if (isSeq(path[path.length - 1])) node.flow = true;
    },
    Scalar(key, node) {
      if (typeof node.value !== "string") return;
      const plainKey = key === "key" && SAFE_KEY_RE.test(node.value) && !YAML11_WORD_RE.test(node.value);
      node.type = plainKey ? Scalar.PLAIN : Scalar.QUOTE_DOUBLE;
    },
  });
  const text = doc.toString({ lineWidth: 0, minContentWidth: 0, blockQuote: false, indentSeq: true });
  // Belt and braces: the text must mean exactly the object it came from.
  let back: unknown;
  try {
    back = parse(text, yaml11Options);
  } catch (e) {
    throw new SeedError("INTERNAL", `YAML output does not parse back: ${(e as Error).message}`);
  }
  if (JSON.stringify(back) !== JSON.stringify(value)) throw new SeedError("INTERNAL", "YAML output does not round-trip");
  return text;
}
