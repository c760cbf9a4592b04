/**
 * The rcloud executable: `rcloud serve [--config FILE]` (the default), `rcloud version`,
 * `rcloud hv-info [URI]` (prints the hypervisor a libvirt URI leads to),
 * `rcloud terraform-provider [--debug]` (the Terraform provider; also chosen when Terraform
 * launches this binary as terraform-provider-rcloud), and the command-line client
 * (`rcloud vm|image|host|events|status|completion|help`, src/cli; docs/cli.md). Commands load their
 * modules lazily so the provider reaches its handshake fast and the client starts fast.
 */
import { GIT_COMMIT, VERSION } from "./util/version.ts";

async function runCli(argv: string[]): Promise<number> {
  const cli = await import("./cli/index.ts");
  return await cli.runCli(argv);
}

function flag(args: string[], name: string): string | null {
  const i = args.indexOf(name);
  if (i < 0) return null;
  const v = args[i + 1];
  if (!v) throw new Error(`${name} needs a value`);
  return v;
}

/** Usage of the commands this file runs itself (the client's are in src/cli). */
const USAGE: Record<string, { usage: string; flags: Record<string, "value" | "switch"> }> = {
  serve: {
    usage: "Usage: rcloud serve [--config FILE]\n  Runs the rcloud server (REST API, web console, metrics). Settings come from the built-in\n  defaults, kdevops's extra_vars.yaml, FILE and RCLOUD_* variables, in that order (docs/configuration.md).",
    flags: { "--config": "value" },
  },
  "hv-info": {
    usage: "Usage: rcloud hv-info [URI]\n  Connects to libvirt at URI (default $RCLOUD_LIBVIRT_URI, then qemu:///system) and prints\n  the hypervisor and libvirt versions as JSON.",
    flags: {},
  },
  "terraform-provider": {
    usage: "Usage: rcloud terraform-provider [--debug]\n  The Terraform provider (plugin protocol 6). Terraform starts it by itself; --debug runs it\n  for a debugger and prints TF_REATTACH_PROVIDERS.",
    flags: { "--debug": "switch" },
  },
};

/** `--help`, or a flag the command does not know: the usage, and the exit code (0 or 2); null to go on. */
function usageExit(cmd: string, args: string[]): number | null {
  const spec = USAGE[cmd];
  if (!spec) return null;
  if (args.includes("--help") || args.includes("-h")) {
    console.log(spec.usage);
    return 0;
  }
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (!a.startsWith("-")) continue;
    const kind = spec.flags[a];
    if (!kind) {
      console.error(`rcloud: unknown flag '${a}' for 'rcloud ${cmd}'; see 'rcloud ${cmd} --help'`);
      return 2;
    }
    if (kind === "value" && !args[++i]) {
      console.error(`rcloud: ${a} needs a value for 'rcloud ${cmd}'; see 'rcloud ${cmd} --help'`);
      return 2;
    }
  }
  return null;
}

async function main(argv: string[]): Promise<number> {
  const [cmd = "serve", ...args] = argv;
  const early = usageExit(cmd, args);
  if (early !== null) return early;
  switch (cmd) {
    case "serve": {
      const { startServer } = await import("./server.ts");
      const server = await startServer({ configFile: flag(args, "--config") });
      const { logUnhandledRejections } = await import("./util/log.ts");
      logUnhandledRejections(server.log);
      const heapReportDir = process.env.RCLOUD_HEAP_REPORT_DIR;
      if (heapReportDir) {
        const { reportHeapOnSignal } = await import("./util/heap-report.ts");
        reportHeapOnSignal(heapReportDir, (m) => console.error(m));
      }
      let stopping = false;
      const stop = async () => {
        if (stopping) return; // a second signal while draining changes nothing
        stopping = true;
        await server.stop();
        process.exit(0);
      };
      process.on("SIGTERM", stop);
      process.on("SIGINT", stop);
      return await new Promise<number>(() => {}); // runs until a signal
    }
    case "version":
    case "--version":
      console.log(`rcloud ${VERSION} (${GIT_COMMIT})`);
      return 0;
    case "hv-info": {
      const uri = args[0] ?? process.env.RCLOUD_LIBVIRT_URI ?? "qemu:///system";
      const { LibvirtClient, formatVersion } = await import("./libvirt/index.ts");
      const client = await LibvirtClient.connect(uri, { connectTimeoutMs: 5000, onWarning: (m) => console.error(`warning: ${m}`) });
      const info = await client.info();
      console.log(JSON.stringify({ uri: info.uri, hypervisor: info.hvType, hypervisor_version: formatVersion(info.hvVersion), libvirt_version: formatVersion(info.libVersion) }));
      await client.close();
      return 0;
    }
    case "terraform-provider": {
      const { runProviderCommand } = await import("./terraform/plugin.ts");
      return await runProviderCommand(args);
    }
    // The command-line client (src/cli): REST API only, no server or libvirt code.
    case "vm":
    case "image":
    case "host":
    case "token":
    case "status":
    case "events":
    case "completion":
    case "help":
    case "--help":
    case "-h":
      return await runCli(argv);
    default:
      if (/^(--endpoint|--token|--output|-o)(=|$)|^-o./.test(cmd)) return await runCli(argv); // global client flags first
      console.error(`rcloud: unknown command '${cmd}'. Commands: vm, image, host, token, events, status, completion, serve [--config FILE], version, hv-info [URI], terraform-provider [--debug]; see 'rcloud --help'`);
      return 2;
  }
}

// Terraform runs a provider with no arguments and go-plugin's magic cookie in the environment.
const argv = process.argv.slice(2);
if (argv.length === 0 && process.env.TF_PLUGIN_MAGIC_COOKIE !== undefined) argv.push("terraform-provider");

try {
  process.exitCode = await main(argv);
} catch (e) {
  console.error(`rcloud: ${(e as Error).message}`);
  process.exitCode = 1;
}
