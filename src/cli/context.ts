/** What a command gets: parsed flags, the API client, output helpers. */
import { bool, type FlagSpec, type NameKind, type Parsed, str } from "./args.ts";
import { ApiClient, DEFAULT_ENDPOINT, normalizeEndpoint } from "./client.ts";
import { usageError } from "./errors.ts";

export type OutputFormat = "table" | "json" | "yaml" | "names";

export interface Command {
  /** "vm create", "status", ... */
  path: string;
  /** Positional part of the usage line, e.g. "NAME --image IMG". */
  args: string;
  summary: string;
  /** Longer help text (paragraphs). */
  description?: string;
  flags: FlagSpec[];
  minArgs: number;
  maxArgs: number;
  /** Accepts `-o names`. */
  names?: boolean;
  /** What bash completion offers for the first positional. */
  completeArg?: NameKind;
  /** Takes extra words after `--` (vm ssh). */
  passthrough?: boolean;
  run(ctx: Context): Promise<number>;
}

export const GLOBAL_FLAGS: FlagSpec[] = [
  { name: "endpoint", value: "URL", help: `rcloud server (env RCLOUD_ENDPOINT; default ${DEFAULT_ENDPOINT})` },
  { name: "token", value: "TOKEN", help: "API token, sent as 'Authorization: Bearer TOKEN' (env RCLOUD_TOKEN); never printed" },
  { name: "output", short: "o", value: "FORMAT", help: "table (default), json (the API's JSON), yaml; names (one per line) for lists", complete: ["table", "json", "yaml", "names"] },
  { name: "help", short: "h", help: "show help" },
];

export interface Io {
  stdout: (s: string) => void;
  stderr: (s: string) => void;
  env: Record<string, string | undefined>;
  stdoutIsTTY: boolean;
  stdinIsTTY: boolean;
}

export class Context {
  readonly output: OutputFormat;
  private client: ApiClient | null = null;

  constructor(
    readonly command: Command,
    readonly parsed: Parsed,
    readonly io: Io,
  ) {
    const o = str(parsed, "output") ?? "table";
    const allowed: OutputFormat[] = command.names ? ["table", "json", "yaml", "names"] : ["table", "json", "yaml"];
    if (!allowed.includes(o as OutputFormat)) {
      throw usageError(`invalid output format '${o}' for 'rcloud ${command.path}': use ${allowed.join(", ")}`);
    }
    this.output = o as OutputFormat;
  }

  get args(): string[] {
    return this.parsed.positionals;
  }

  flag(name: string): string | undefined {
    return str(this.parsed, name);
  }

  bool(name: string): boolean {
    return bool(this.parsed, name);
  }

  get endpoint(): string {
    return normalizeEndpoint(this.flag("endpoint") ?? (this.io.env.RCLOUD_ENDPOINT || DEFAULT_ENDPOINT));
  }

  get api(): ApiClient {
    if (!this.client) {
      const token = this.flag("token") ?? (this.io.env.RCLOUD_TOKEN || null);
      this.client = new ApiClient(this.endpoint, token);
    }
    return this.client;
  }

  /** Human text to stdout (a trailing newline is added). */
  print(text: string): void {
    if (text !== "") this.io.stdout(text.endsWith("\n") ? text : `${text}\n`);
  }

  /** Notes and progress: stdout for table output, stderr when stdout carries data for scripts. */
  note(text: string): void {
    (this.output === "table" ? this.io.stdout : this.io.stderr)(`${text}\n`);
  }

  /** Prints `data` as JSON/YAML, names, or the human rendering. */
  async emit(data: unknown, human: () => string, names?: () => string[]): Promise<void> {
    switch (this.output) {
      case "json":
        this.print(JSON.stringify(data, null, 2));
        return;
      case "yaml": {
        const { stringify } = await import("yaml");
        this.print(stringify(data));
        return;
      }
      case "names":
        this.print((names ? names() : []).join("\n"));
        return;
      default:
        this.print(human());
    }
  }
}
