/**
 * Is a caller-given path inside a directory, judged by where it really leads? Like
 * realpath(3), symbolic links and ".." are followed component by component, but a missing
 * tail does not stop the walk: a path that leads outside the directory is outside whether
 * or not its target exists, so the answer never tells a caller which host paths exist.
 */
import { lstatSync, readlinkSync, realpathSync } from "node:fs";
import { dirname, isAbsolute, join } from "node:path";

/** Linux's limit on symbolic links followed in one lookup (ELOOP beyond it). */
const MAX_LINK_HOPS = 40;

/**
 * The real path `path` (absolute) leads to, following every symbolic link that exists;
 * components after a missing one are taken literally. null when it loops.
 */
export function resolveLoosely(path: string): string | null {
  const hops = { left: MAX_LINK_HOPS };
  return walk("/", path, hops);
}

function walk(from: string, path: string, hops: { left: number }): string | null {
  let at = isAbsolute(path) ? "/" : from;
  for (const part of path.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") {
      at = dirname(at);
      continue;
    }
    const next = join(at, part);
    let target: string | null = null;
    try {
      if (lstatSync(next).isSymbolicLink()) target = readlinkSync(next);
    } catch {
      // Missing (or not a directory on the way): the rest is taken as written.
    }
    if (target === null) {
      at = next;
      continue;
    }
    if (--hops.left < 0) return null;
    const resolved = walk(at, target, hops);
    if (resolved === null) return null;
    at = resolved;
  }
  return at;
}

/**
 * The real path of `path` when it leads inside `dir` (itself resolved), else null. Missing
 * paths inside `dir` are returned too: the caller says "does not exist" only for those.
 */
export function containedPath(dir: string, path: string): string | null {
  if (!isAbsolute(path) || path.includes("\0")) return null;
  let root: string;
  try {
    root = realpathSync(dir);
  } catch {
    return null;
  }
  const real = resolveLoosely(path);
  if (real === null) return null;
  return real.startsWith(root.endsWith("/") ? root : `${root}/`) ? real : null;
}
