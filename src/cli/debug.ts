/** `rcloud vm dumps` and `rcloud vm dump download`: a VM's guest memory dumps (on_panic: dump). */
import { createWriteStream } from "node:fs";
import { Writable } from "node:stream";
import type { ApiDump } from "../api-types/json.ts";
import { DUMP_NAME_PATTERN, ON_PANIC_ACTIONS, type OnPanic } from "../api-types/values.ts";
import type { Command, Context } from "./context.ts";
import { EXIT, usageError } from "./errors.ts";
import { formatTable } from "./table.ts";

const DUMP_RE = new RegExp(DUMP_NAME_PATTERN);

/** `--on-panic ACTION` of vm create. */
export function parseOnPanic(v: string): OnPanic {
  const found = ON_PANIC_ACTIONS.find((a) => a === v);
  if (!found) throw usageError(`invalid --on-panic '${v}': expected one of ${ON_PANIC_ACTIONS.join(", ")}`);
  return found;
}

function formatBytes(n: number): string {
  return n >= 1024 ** 3 ? `${(n / 1024 ** 3).toFixed(1)}G` : `${(n / 1024 ** 2).toFixed(1)}M`;
}

async function download(ctx: Context, vm: string, dump: string, file: string): Promise<number> {
  const body = await ctx.api.stream(ctx.api.vmPath(vm, `/dumps/${encodeURIComponent(dump)}`), AbortSignal.timeout(24 * 3600_000));
  // Written as it arrives: a dump is as large as the guest's memory.
  const sink = file === "-" ? process.stdout : createWriteStream(file, { mode: 0o600 });
  let bytes = 0;
  const counted = body.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, c) {
        bytes += chunk.byteLength;
        c.enqueue(chunk);
      },
    }),
  );
  await counted.pipeTo(Writable.toWeb(sink) as WritableStream<Uint8Array>);
  if (file !== "-") ctx.io.stderr(`Saved ${dump} of ${vm} to ${file} (${formatBytes(bytes)})\n`);
  return EXIT.ok;
}

export const DEBUG_COMMANDS: Command[] = [
  {
    path: "vm dumps",
    args: "NAME",
    summary: "List a VM's guest memory dumps (taken when its guest panicked with on_panic dump)",
    flags: [],
    minArgs: 1,
    maxArgs: 1,
    completeArg: "vm",
    names: true,
    async run(ctx) {
      const vm = ctx.args[0] as string;
      const res = await ctx.api.request<{ dumps: ApiDump[] }>("GET", ctx.api.vmPath(vm, "/dumps"));
      await ctx.emit(
        res,
        () => (res.dumps.length ? formatTable(["NAME", "SIZE", "CREATED"], res.dumps.map((d) => [d.name, formatBytes(d.size_bytes), d.created_at])) : `No dumps of ${vm}.`),
        () => res.dumps.map((d) => d.name),
      );
      return EXIT.ok;
    },
  },
  {
    path: "vm dump",
    args: "download NAME DUMP",
    summary: "Download one guest memory dump (an ELF core: gdb, crash)",
    description: "Streams the dump to FILE (default ./NAME-DUMP; '-' for standard output) as it arrives.",
    flags: [{ name: "file", short: "f", value: "FILE", help: "where to write it (default ./NAME-DUMP; - for stdout)", complete: "file" }],
    minArgs: 3,
    maxArgs: 3,
    async run(ctx) {
      const [action, vm, dump] = ctx.args as [string, string, string];
      if (action !== "download") throw usageError(`unknown action '${action}': rcloud vm dump download NAME DUMP [-f FILE]`);
      if (!DUMP_RE.test(dump)) throw usageError(`invalid dump name '${dump}': expected a name from 'rcloud vm dumps ${vm}' (dump-<time>.elf)`);
      return download(ctx, vm, dump, ctx.flag("file") ?? `${vm}-${dump}`);
    },
  },
];
