/**
 * API tokens: `rc_<id>_<secret>` where id is 8 hex characters (so a lookup needs no scan) and
 * secret is 32 random bytes (base64url). Only sha-256(secret) is stored, in a JSON file edited
 * atomically (temp file + rename, mode 0600) by `rcloud token ...`; the server re-reads it when
 * its mtime changes (checked at most once per second). Secrets are never logged.
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, statSync } from "node:fs";
import { dirname } from "node:path";
import { PROJECT_PATTERN } from "../api-types/values.ts";
import { writeAtomic } from "../util/atomic-file.ts";

export type Role = "admin" | "user";

export interface Caller {
  role: Role;
  /** The project a user token is confined to; null for admins (every project). */
  project: string | null;
  tokenId: string;
}

export interface TokenEntry {
  id: string;
  name: string;
  role: Role;
  project: string | null;
  /** hex sha-256 of the secret part. */
  hash: string;
  created_at: string;
}

export interface TokensFile {
  version: 1;
  tokens: TokenEntry[];
}

/** auth.tokens_file's default, also where `rcloud token` looks without --tokens-file or RCLOUD_TOKENS_FILE. */
export const DEFAULT_TOKENS_FILE = "/etc/rcloud/tokens.json";

export const PROJECT_RE = new RegExp(PROJECT_PATTERN);
const TOKEN_RE = /^rc_([0-9a-f]{8})_([A-Za-z0-9_-]{43})$/;

export function hashSecret(secret: string): string {
  return createHash("sha256").update(secret).digest("hex");
}

export function readTokensFile(path: string): TokensFile {
  if (!existsSync(path)) return { version: 1, tokens: [] };
  const raw = JSON.parse(readFileSync(path, "utf8")) as Partial<TokensFile>;
  if (!raw || !Array.isArray(raw.tokens)) throw new Error(`${path}: not an rcloud tokens file (no "tokens" list)`);
  return { version: 1, tokens: raw.tokens };
}

/**
 * Atomic replace: write a temp file next to it, fsync, rename. A new file is 0600; an
 * existing one keeps its mode and group (e.g. 0640 root:rcloud so the service can read it),
 * but never anything readable by others.
 */
export function writeTokensFile(path: string, data: TokensFile): void {
  const before = existsSync(path) ? statSync(path) : null;
  mkdirSync(dirname(path), { recursive: true });
  writeAtomic(path, `${JSON.stringify(data, null, 2)}\n`, {
    mode: 0o600,
    chmod: before ? before.mode & 0o660 : 0o600,
    ...(before ? { owner: { uid: before.uid, gid: before.gid } } : {}),
  });
}

/** Adds a token to the file; returns the entry and the full token (shown once). */
export function createToken(path: string, opts: { name: string; role: Role; project: string | null }): { entry: TokenEntry; token: string } {
  if (opts.role !== "admin" && opts.role !== "user") throw new Error(`role must be admin or user, got '${opts.role}'`);
  if (opts.role === "user" && !opts.project) throw new Error("a user token needs --project");
  if (opts.project !== null && !PROJECT_RE.test(opts.project)) {
    throw new Error(`project must be 1-64 lower-case letters, digits, '-' or '_' (starting and ending with a letter or digit), got '${opts.project}'`);
  }
  if (!opts.name.trim()) throw new Error("--name must not be empty");
  const data = readTokensFile(path);
  let id: string;
  do id = randomBytes(4).toString("hex");
  while (data.tokens.some((t) => t.id === id));
  const secret = randomBytes(32).toString("base64url");
  const entry: TokenEntry = { id, name: opts.name, role: opts.role, project: opts.project, hash: hashSecret(secret), created_at: new Date().toISOString() };
  data.tokens.push(entry);
  writeTokensFile(path, data);
  return { entry, token: `rc_${id}_${secret}` };
}

/** Removes a token; false when there was none with that id. */
export function revokeToken(path: string, id: string): boolean {
  const data = readTokensFile(path);
  const kept = data.tokens.filter((t) => t.id !== id);
  if (kept.length === data.tokens.length) return false;
  writeTokensFile(path, { version: 1, tokens: kept });
  return true;
}

/** The server's view of the tokens file: cached, reloaded when the mtime changes (checked ≤ 1/s). */
export class TokenStore {
  private byId = new Map<string, TokenEntry>();
  private mtimeMs = -1;
  private size = -1;
  private ino = -1;
  private checkedAt = 0;

  constructor(
    readonly path: string,
    private readonly log: (level: "warn" | "error", msg: string, fields?: Record<string, unknown>) => void = () => {},
    private readonly checkIntervalMs = 1000,
  ) {
    this.refresh(true);
  }

  private refresh(force = false): void {
    const now = Date.now();
    if (!force && now - this.checkedAt < this.checkIntervalMs) return;
    this.checkedAt = now;
    let st: { mtimeMs: number; size: number; ino: number } | null = null;
    try {
      st = statSync(this.path);
    } catch {
      st = null;
    }
    if (st === null) {
      if (this.mtimeMs !== 0 || this.byId.size > 0) {
        if (!force) this.log("warn", "tokens file missing; no token is accepted", { path: this.path });
        this.byId = new Map();
        this.mtimeMs = 0;
        this.size = -1;
      }
      return;
    }
    if (st.mtimeMs === this.mtimeMs && st.size === this.size && st.ino === this.ino) return;
    try {
      const data = readTokensFile(this.path);
      this.byId = new Map(data.tokens.filter((t) => typeof t.id === "string" && typeof t.hash === "string").map((t) => [t.id, t]));
      this.mtimeMs = st.mtimeMs;
      this.size = st.size;
      this.ino = st.ino;
    } catch (e) {
      // Keep the previous tokens on a broken file rather than locking everybody out (or in).
      this.log("error", "cannot read the tokens file; keeping the previous tokens", { path: this.path, error: (e as Error).message });
    }
  }

  /** The caller a bearer token stands for, or null. */
  verify(token: string): Caller | null {
    this.refresh();
    const m = TOKEN_RE.exec(token);
    if (!m) return null;
    const entry = this.byId.get(m[1] as string);
    if (!entry) return null;
    const given = Buffer.from(hashSecret(m[2] as string), "hex");
    const want = Buffer.from(entry.hash, "hex");
    if (given.length !== want.length || !timingSafeEqual(given, want)) return null;
    if (entry.role !== "admin" && entry.role !== "user") return null;
    if (entry.role === "user" && !entry.project) return null;
    return { role: entry.role, project: entry.role === "admin" ? null : entry.project, tokenId: entry.id };
  }
}
