/** A small strict argument parser: long flags (--x v, --x=v), a few short aliases, `--`. */
import { usageError } from "./errors.ts";

/** Things whose names bash completion asks the server for (`rcloud KIND list -o names`). */
export type NameKind = "vm" | "image" | "host";

export interface FlagSpec {
  /** Long name without dashes, e.g. "memory". */
  name: string;
  /** One-letter alias without the dash, e.g. "o". */
  short?: string;
  /** Placeholder for the value, e.g. "SIZE"; absent for boolean flags. */
  value?: string;
  /** May be given several times (values collect in order). */
  repeat?: boolean;
  help: string;
  /** What bash completion offers for the value. */
  complete?: "file" | NameKind | readonly string[];
}

export interface Parsed {
  /** Flag values: string for value flags, string[] for repeatable ones, true for booleans. */
  flags: Map<string, string | string[] | true>;
  positionals: string[];
  /** Everything after `--`. */
  rest: string[];
}

export function parseArgs(argv: string[], specs: readonly FlagSpec[], command: string): Parsed {
  const byLong = new Map(specs.map((s) => [s.name, s]));
  const byShort = new Map(specs.filter((s) => s.short).map((s) => [s.short as string, s]));
  const flags = new Map<string, string | string[] | true>();
  const positionals: string[] = [];
  let rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a === "--") {
      rest = argv.slice(i + 1);
      break;
    }
    let spec: FlagSpec | undefined;
    let inline: string | undefined;
    let shown = a;
    if (a.startsWith("--")) {
      const eq = a.indexOf("=");
      const name = eq < 0 ? a.slice(2) : a.slice(2, eq);
      shown = `--${name}`;
      if (eq >= 0) inline = a.slice(eq + 1);
      spec = byLong.get(name);
    } else if (a.startsWith("-") && a.length > 1 && !/^-\d/.test(a)) {
      shown = a.slice(0, 2);
      spec = byShort.get(a.slice(1, 2));
      if (a.length > 2) inline = a.slice(a[2] === "=" ? 3 : 2);
    } else {
      positionals.push(a);
      continue;
    }
    if (!spec) throw usageError(`unknown flag '${shown}' for '${command}'; see '${command} --help'`);
    if (!spec.value) {
      if (inline !== undefined) throw usageError(`flag ${shown} takes no value`);
      flags.set(spec.name, true);
      continue;
    }
    let v = inline;
    if (v === undefined) {
      const next = argv[i + 1];
      if (next === undefined || (next.startsWith("-") && next.length > 1 && next !== "-")) {
        throw usageError(`flag ${shown} needs a value (${spec.value})`);
      }
      v = next;
      i++;
    }
    if (spec.repeat) {
      const prev = flags.get(spec.name);
      flags.set(spec.name, [...(Array.isArray(prev) ? prev : []), v]);
    } else {
      flags.set(spec.name, v);
    }
  }
  return { flags, positionals, rest };
}

export function str(p: Parsed, name: string): string | undefined {
  const v = p.flags.get(name);
  return typeof v === "string" ? v : undefined;
}

export function list(p: Parsed, name: string): string[] {
  const v = p.flags.get(name);
  return Array.isArray(v) ? v : typeof v === "string" ? [v] : [];
}

export function bool(p: Parsed, name: string): boolean {
  return p.flags.get(name) === true;
}
