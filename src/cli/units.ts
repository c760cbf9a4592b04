/** Parsing of sizes (512M, 2G, 2GiB) and durations (30s, 10m, 1h30m) given on the command line. */
import { usageError } from "./errors.ts";

const SIZE_RE = /^(\d+(?:\.\d+)?)\s*(?:([kmgtp])(?:i?b)?)?$/i;
const UNIT_MIB: Record<string, number> = { k: 1 / 1024, m: 1, g: 1024, t: 1024 * 1024, p: 1024 * 1024 * 1024 };

/**
 * Parses a size into MiB. Units are binary whatever the spelling (M = MB = MiB = 2^20
 * bytes, G = GB = GiB, T = TB = TiB); a plain number is in `defaultUnit`.
 */
export function parseSizeMiB(input: string, defaultUnit: "M" | "G", what = "size"): number {
  const m = SIZE_RE.exec(input.trim());
  if (!m) throw usageError(`invalid ${what} '${input}': expected a number with an optional unit, e.g. 512M, 2G, 2GiB or 100`);
  const n = Number(m[1]);
  const unit = (m[2] ?? defaultUnit).toLowerCase();
  const mib = n * (UNIT_MIB[unit] ?? 1);
  if (!Number.isFinite(mib) || mib <= 0) throw usageError(`invalid ${what} '${input}': must be greater than zero`);
  return mib;
}

/** A memory size as whole MiB (plain numbers are MiB). */
export function parseMemoryMiB(input: string): number {
  const mib = parseSizeMiB(input, "M", "memory size");
  if (!Number.isInteger(mib)) throw usageError(`invalid memory size '${input}': must be a whole number of MiB`);
  return mib;
}

/** A disk size as whole GiB (plain numbers are GiB). */
export function parseDiskGiB(input: string, what = "disk size"): number {
  const gib = parseSizeMiB(input, "G", what) / 1024;
  if (!Number.isInteger(gib)) throw usageError(`invalid ${what} '${input}': must be a whole number of GiB`);
  return gib;
}

const DURATION_PART = /(\d+(?:\.\d+)?)(ms|s|m|h)/gy;
const DURATION_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Parses a duration into milliseconds: 90 (seconds), 30s, 10m, 1h30m, 500ms. */
export function parseDurationMs(input: string, what = "duration"): number {
  const s = input.trim();
  let ms: number;
  if (/^\d+(?:\.\d+)?$/.test(s)) {
    ms = Number(s) * 1000;
  } else {
    ms = 0;
    DURATION_PART.lastIndex = 0;
    let consumed = 0;
    for (let m = DURATION_PART.exec(s); m; m = DURATION_PART.exec(s)) {
      ms += Number(m[1]) * (DURATION_MS[m[2] ?? "s"] ?? 1000);
      consumed = DURATION_PART.lastIndex;
    }
    if (consumed === 0 || consumed !== s.length) throw usageError(`invalid ${what} '${input}': expected e.g. 30s, 10m, 1h30m or a number of seconds`);
  }
  if (!Number.isFinite(ms) || ms <= 0) throw usageError(`invalid ${what} '${input}': must be greater than zero`);
  return Math.round(ms);
}

/** 4096 → "4G", 512 → "512M", 1536 → "1.5G". */
export function formatMiB(mib: number): string {
  if (mib >= 1024 && mib % 1024 === 0) return `${mib / 1024}G`;
  if (mib >= 1024 && (mib * 10) % 1024 === 0) return `${(mib / 1024).toFixed(1)}G`;
  return `${mib}M`;
}

/** 3 → "3s", 125 → "2m", 7200 → "2h", 200000 → "2d" (kubectl-style ages). */
export function formatAge(fromIso: string, now = Date.now()): string {
  const t = Date.parse(fromIso);
  if (Number.isNaN(t)) return "-";
  const s = Math.max(0, Math.floor((now - t) / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

/** 600000 → "10m", 90000 → "1m30s", 1500 → "1.5s". */
export function formatDuration(ms: number): string {
  if (ms < 60_000) return `${Number((ms / 1000).toFixed(1))}s`;
  const m = Math.floor(ms / 60_000);
  const s = Math.round((ms % 60_000) / 1000);
  if (m < 60) return s ? `${m}m${s}s` : `${m}m`;
  const h = Math.floor(m / 60);
  return m % 60 ? `${h}h${m % 60}m` : `${h}h`;
}

/** Bytes as GiB with one decimal: 1.5G. */
export function formatGiB(bytes: number): string {
  return `${Number((bytes / 1024 ** 3).toFixed(1))}G`;
}
