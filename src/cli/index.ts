/**
 * The rcloud command-line client: `rcloud vm|image|host|status|completion ...`. It talks to an
 * rcloud server's REST API only (--endpoint / RCLOUD_ENDPOINT) and never loads server or
 * libvirt code, so it starts fast. Returns the process exit code (see EXIT).
 */
import { type FlagSpec, parseArgs } from "./args.ts";
import { DEFAULT_TOKENS_FILE } from "../auth/tokens.ts";
import { DEFAULT_ENDPOINT } from "./client.ts";
import { COMMANDS } from "./commands.ts";
import { bashCompletion } from "./completion.ts";
import { type Command, Context, GLOBAL_FLAGS, type Io } from "./context.ts";
import { CliError, EXIT, EXIT_CODE_HELP, usageError } from "./errors.ts";

const GROUPS: Record<string, string> = {
  vm: "Manage virtual machines",
  image: "Base images",
  host: "Hypervisor hosts of the fleet (admin token)",
  token: "API tokens (edits the server's tokens file; no server needed)",
};

function flagLines(flags: FlagSpec[]): string {
  const left = flags.map((f) => `${f.short ? `-${f.short}, ` : "    "}--${f.name}${f.value ? ` ${f.value}` : ""}`);
  const w = Math.max(...left.map((l) => l.length));
  return flags.map((f, i) => `  ${(left[i] ?? "").padEnd(w)}  ${f.help}`).join("\n");
}

function wrap(text: string, width = 88): string {
  const out: string[] = [];
  let line = "";
  for (const word of text.split(/\s+/)) {
    if (line && line.length + 1 + word.length > width) {
      out.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  if (line) out.push(line);
  return out.join("\n");
}

function commandHelp(c: Command): string {
  const parts = [`Usage: rcloud ${c.path}${c.args ? ` ${c.args}` : ""}${c.flags.length ? " [flags]" : ""}`, "", c.summary + "."];
  if (c.description) parts.push("", wrap(c.description));
  if (c.flags.length) parts.push("", "Flags:", flagLines(c.flags));
  parts.push("", "Global flags:", flagLines(GLOBAL_FLAGS), "", "Exit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 conflict/invalid state, 5 validation, 6 unreachable/503, 7 timeout.");
  return parts.join("\n");
}

function groupHelp(group: string): string {
  const cmds = COMMANDS.filter((c) => c.path.startsWith(`${group} `));
  const left = cmds.map((c) => `rcloud ${c.path}${c.args ? ` ${c.args}` : ""}`);
  const w = Math.max(...left.map((l) => l.length));
  return [
    `Usage: rcloud ${group} COMMAND [flags]`,
    "",
    `${GROUPS[group] ?? group}.`,
    "",
    "Commands:",
    ...cmds.map((c, i) => `  ${(left[i] ?? "").padEnd(w)}  ${c.summary}`),
    "",
    `Run 'rcloud ${group} COMMAND --help' for a command's flags.`,
  ].join("\n");
}

export function topHelp(): string {
  const rows: [string, string][] = [
    ...COMMANDS.map((c): [string, string] => [`${c.path}${c.args ? ` ${c.args}` : ""}`, c.summary]),
    ["completion bash", "Print a bash completion script (source <(rcloud completion bash))"],
    ["serve [--config FILE]", "Run the rcloud server (the default without arguments)"],
    ["version", "Print the version"],
    ["hv-info [URI]", "Print the hypervisor a libvirt URI leads to"],
    ["terraform-provider [--debug]", "Run the Terraform provider"],
  ];
  const w = Math.max(...rows.map(([l]) => l.length));
  return [
    "rcloud: disposable VMs for kernel developers. This executable is both the server and its",
    "command-line client; the client talks to the REST API only.",
    "",
    "Usage: rcloud [global flags] COMMAND [args] [flags]",
    "",
    "Commands:",
    ...rows.map(([l, s]) => `  ${l.padEnd(w)}  ${s}`),
    "",
    "Global flags:",
    flagLines(GLOBAL_FLAGS),
    "",
    "Environment:",
    `  RCLOUD_ENDPOINT    server URL (default ${DEFAULT_ENDPOINT})`,
    "  RCLOUD_TOKEN       API token",
    `  RCLOUD_TOKENS_FILE tokens file for 'rcloud token' (default ${DEFAULT_TOKENS_FILE})`,
    "  RCLOUD_SSH_BINARY  ssh program for 'rcloud vm ssh' (default ssh)",
    "",
    EXIT_CODE_HELP,
    "",
    "Errors are printed to stderr as 'rcloud: <message>'. Run 'rcloud COMMAND --help' for details.",
  ].join("\n");
}

function defaultIo(): Io {
  return {
    stdout: (s) => void process.stdout.write(s),
    stderr: (s) => void process.stderr.write(s),
    env: process.env,
    stdoutIsTTY: process.stdout.isTTY === true,
    stdinIsTTY: process.stdin.isTTY === true,
  };
}

const GLOBAL_VALUE = new Set(GLOBAL_FLAGS.filter((f) => f.value).flatMap((f) => [`--${f.name}`, ...(f.short ? [`-${f.short}`] : [])]));

/** Splits leading global flags from the command words: ["--endpoint", "X", "vm", "list"] → pre + ["vm", "list"]. */
function splitLeading(argv: string[]): { pre: string[]; words: string[] } {
  const pre: string[] = [];
  let i = 0;
  while (i < argv.length) {
    const a = argv[i] as string;
    if (!a.startsWith("-") || a === "--") break;
    if (a === "-h" || a === "--help") break;
    pre.push(a);
    if (GLOBAL_VALUE.has(a)) {
      if (argv[i + 1] === undefined) throw usageError(`flag ${a} needs a value`);
      pre.push(argv[++i] as string);
    } else if (!/^(--[a-z-]+=|-o.)/.test(a)) throw usageError(`unknown flag '${a}'; see 'rcloud --help'`);
    i++;
  }
  return { pre, words: argv.slice(i) };
}

async function dispatch(argv: string[], io: Io): Promise<number> {
  const { pre, words } = splitLeading(argv);
  const [first, second, ...more] = words;
  if (first === undefined || first === "help" || first === "-h" || first === "--help") {
    if (first === "help" && second !== undefined) return dispatch([second, ...(more[0] && GROUPS[second] ? [more[0]] : []), "--help"], io);
    io.stdout(`${topHelp()}\n`);
    return first === undefined ? EXIT.usage : EXIT.ok;
  }
  if (first === "completion") {
    const rest = words.slice(1).filter((w) => !["-h", "--help"].includes(w));
    if (words.includes("--help") || words.includes("-h")) {
      io.stdout("Usage: rcloud completion bash\n\nPrints a bash completion script. Load it with: source <(rcloud completion bash)\n");
      return EXIT.ok;
    }
    if (rest.length !== 1 || rest[0] !== "bash") throw usageError("usage: rcloud completion bash (only bash is supported)");
    io.stdout(bashCompletion(COMMANDS));
    return EXIT.ok;
  }
  let command: Command | undefined;
  let rest: string[];
  if (GROUPS[first]) {
    if (second === undefined || second === "-h" || second === "--help") {
      (second === undefined ? io.stderr : io.stdout)(`${groupHelp(first)}\n`);
      return second === undefined ? EXIT.usage : EXIT.ok;
    }
    command = COMMANDS.find((c) => c.path === `${first} ${second}`);
    if (!command) throw usageError(`unknown command 'rcloud ${first} ${second}'; see 'rcloud ${first} --help'`);
    rest = more;
  } else {
    command = COMMANDS.find((c) => c.path === first);
    if (!command) throw usageError(`unknown command '${first}'; see 'rcloud --help'`);
    rest = words.slice(1);
  }
  const dd = rest.indexOf("--");
  const before = dd < 0 ? rest : rest.slice(0, dd);
  if (before.includes("--help") || before.includes("-h")) {
    io.stdout(`${commandHelp(command)}\n`);
    return EXIT.ok;
  }
  const name = `rcloud ${command.path}`;
  const parsed = parseArgs([...pre, ...rest], [...command.flags, ...GLOBAL_FLAGS], name);
  if (parsed.rest.length && !command.passthrough) throw usageError(`'${name}' takes no arguments after --`);
  const n = parsed.positionals.length;
  if (n < command.minArgs) throw usageError(`'${name}' needs ${command.args.split(" ")[0]}; usage: ${name} ${command.args}`);
  if (n > command.maxArgs) throw usageError(`unexpected argument '${parsed.positionals[command.maxArgs]}' for '${name}'; usage: ${name} ${command.args}`.trimEnd());
  return command.run(new Context(command, parsed, io));
}

/** Messages quote what was given: a 100 kB argument is shown by its start and its length. */
function shortenWords(message: string): string {
  return message.replace(/\S{257,}/g, (w) => `${w.slice(0, 64)}…(${w.length} characters)`);
}

/** Runs the CLI; errors become `rcloud: <message>` on stderr and their exit code. */
export async function runCli(argv: string[], io: Io = defaultIo()): Promise<number> {
  try {
    return await dispatch(argv, io);
  } catch (e) {
    if (e instanceof CliError) {
      io.stderr(`rcloud: ${shortenWords(e.message)}\n`);
      return e.exitCode;
    }
    io.stderr(`rcloud: ${(e as Error)?.message ?? String(e)}\n`);
    return EXIT.error;
  }
}
