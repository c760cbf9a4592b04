/**
 * go-plugin server side: the handshake line, AutoMTLS, the Provider/GRPCController/
 * GRPCStdio/GRPCBroker services on a unix socket, and the process rules Terraform
 * relies on (exit promptly on Shutdown, ignore SIGINT, exit when Terraform dies).
 *
 *   rcloud terraform-provider           launched by Terraform (cookie in the environment)
 *   rcloud terraform-provider --debug   reattach mode: plaintext, prints TF_REATTACH_PROVIDERS
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Server, ServerCredentials, type ServerDuplexStream, type ServerUnaryCall, type ServerWritableStream, type sendUnaryData, type UntypedServiceImplementation } from "@grpc/grpc-js";
import { VERSION } from "../util/version.ts";
import { makeServerCert } from "./cert.ts";
import { loadServices } from "./proto.ts";
import { createProvider, type RpcRequest, type RpcResponse } from "./provider.ts";

export const MAGIC_COOKIE_KEY = "TF_PLUGIN_MAGIC_COOKIE";
export const MAGIC_COOKIE = "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2";
export const PROVIDER_ADDRESS = "registry.terraform.io/kdevops/rcloud";

type Level = "TRACE" | "DEBUG" | "INFO" | "WARN" | "ERROR";
/** Terraform reads our stderr line by line into its log; the [LEVEL] prefix sets the level. */
export function log(level: Level, msg: string): void {
  process.stderr.write(`[${level}] rcloud: ${msg.replace(/\n/g, "\n    ")}\n`);
}

export interface ProviderServer {
  socketPath: string;
  /** For TF_REATTACH_PROVIDERS (plaintext servers only). */
  reattachConfig(): string;
  stop(): void;
}

export interface ServeOptions {
  /** Terraform's client certificate (PLUGIN_CLIENT_CERT): enables mTLS and requires it. */
  clientCertPem?: string | null;
  /** Called after GRPCController/Shutdown has been answered. */
  onShutdown?: () => void;
  env?: Record<string, string | undefined>;
  quiet?: boolean;
}

/** Starts the gRPC server; resolves once it accepts connections. */
export async function serveProvider(opts: ServeOptions = {}): Promise<ProviderServer & { certDer: Buffer | null }> {
  const services = loadServices();
  const logger = opts.quiet ? () => {} : log;
  const provider = createProvider({ env: opts.env, log: logger, version: VERSION });
  const dir = mkdtempSync(join(tmpdir(), "rcloud-tf-"));
  const socketPath = join(dir, "plugin.sock");
  const server = new Server({ "grpc.max_receive_message_length": 256 << 20, "grpc.max_send_message_length": 256 << 20 });
  const streams = new Set<ServerWritableStream<unknown, unknown> | ServerDuplexStream<unknown, unknown>>();

  const impl: UntypedServiceImplementation = {};
  for (const method of Object.keys(services.provider)) {
    const h = provider.handlers[method];
    impl[method] = (call: ServerUnaryCall<RpcRequest, RpcResponse>, cb: sendUnaryData<RpcResponse>) => {
      if (!h) {
        cb(null, unsupported(method));
        return;
      }
      h(call.request).then((res) => cb(null, res), (e: unknown) => cb(null, { diagnostics: [{ severity: "ERROR", summary: "rcloud provider error", detail: String(e) }] }));
    };
  }
  server.addService(services.provider, impl);

  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    provider.stop();
    for (const s of streams) s.end();
    server.forceShutdown();
    rmSync(dir, { recursive: true, force: true });
  };

  server.addService(services.controller, {
    Shutdown: (_call: ServerUnaryCall<unknown, unknown>, cb: sendUnaryData<Record<string, never>>) => {
      cb(null, {});
      // Terraform SIGKILLs us 2 s after Shutdown; exit well before, once the reply is out.
      if (opts.onShutdown) setTimeout(opts.onShutdown, 20);
    },
  });
  server.addService(services.stdio, {
    // We log to stderr directly; keep the stream open so go-plugin does not warn.
    StreamStdio: (call: ServerWritableStream<unknown, unknown>) => {
      streams.add(call);
      call.on("cancelled", () => streams.delete(call));
    },
  });
  server.addService(services.broker, {
    // No sub-plugins: accept the stream and ignore its messages.
    StartStream: (call: ServerDuplexStream<unknown, unknown>) => {
      streams.add(call);
      call.on("data", () => {});
      call.on("end", () => {
        streams.delete(call);
        call.end();
      });
      call.on("cancelled", () => streams.delete(call));
    },
  });

  let certDer: Buffer | null = null;
  let creds = ServerCredentials.createInsecure();
  if (opts.clientCertPem) {
    const cert = makeServerCert();
    certDer = cert.der;
    creds = ServerCredentials.createSsl(Buffer.from(opts.clientCertPem), [{ private_key: Buffer.from(cert.keyPem), cert_chain: Buffer.from(cert.certPem) }], true);
  }
  await new Promise<void>((resolve, reject) => server.bindAsync(`unix://${socketPath}`, creds, (err) => (err ? reject(err) : resolve())));

  return {
    socketPath,
    certDer,
    reattachConfig: () =>
      JSON.stringify({ [PROVIDER_ADDRESS]: { Protocol: "grpc", ProtocolVersion: 6, Pid: process.pid, Test: true, Addr: { Network: "unix", String: socketPath } } }),
    stop,
  };
}

function unsupported(method: string): RpcResponse {
  if (method === "CallFunction") return { error: { text: "the rcloud provider has no functions" } };
  return { diagnostics: [{ severity: "ERROR", summary: "Not supported", detail: `The rcloud provider does not implement ${method}.` }] };
}

/** Entry point for `rcloud terraform-provider [--debug]`; resolves never (exits the process). */
export async function runProviderCommand(args: string[]): Promise<number> {
  const env = process.env;
  if (args.includes("--debug")) return runDebug();
  if (env[MAGIC_COOKIE_KEY] !== MAGIC_COOKIE) {
    process.stderr.write(
      "This is the rcloud Terraform provider (terraform-provider-rcloud). Terraform starts it by itself;\n" +
        "install it with scripts/install-provider.sh. For debugging run: rcloud terraform-provider --debug\n",
    );
    return 1;
  }
  const versions = (env.PLUGIN_PROTOCOL_VERSIONS ?? "6").split(",").map((v) => v.trim());
  if (!versions.includes("6")) {
    // Terraform shows this stdout line as "Unrecognized remote plugin message".
    process.stdout.write(`terraform-provider-rcloud speaks plugin protocol 6 only (Terraform >= 1.0); this client offers ${versions.join(",")}\n`);
    return 1;
  }
  const parentPid = process.ppid;
  let srv: (ProviderServer & { certDer: Buffer | null }) | null = null;
  const exit = (code: number) => {
    srv?.stop();
    process.exit(code);
  };
  srv = await serveProvider({ clientCertPem: env.PLUGIN_CLIENT_CERT || null, onShutdown: () => exit(0) });
  const cert = srv.certDer;
  // Field 6 is the DER certificate in base64 *without padding* (Go's RawStdEncoding).
  const line = `1|6|unix|${srv.socketPath}|grpc${cert ? `|${cert.toString("base64").replace(/=+$/, "")}` : ""}\n`;
  process.stdout.write(line);
  // Ctrl-C reaches the whole process group; Terraform answers it with StopProvider.
  process.on("SIGINT", () => log("DEBUG", "SIGINT ignored; waiting for StopProvider"));
  process.on("SIGTERM", () => exit(0));
  // Orphaned (Terraform was killed): nobody will call Shutdown.
  setInterval(() => {
    if (process.ppid !== parentPid) exit(0);
  }, 500).unref();
  return await new Promise<number>(() => {});
}

async function runDebug(): Promise<number> {
  const srv = await serveProvider({});
  process.stdout.write(
    `# rcloud provider listening in debug mode (plaintext, pid ${process.pid}). In another shell:\n` +
      `export TF_REATTACH_PROVIDERS='${srv.reattachConfig()}'\n`,
  );
  const exit = () => {
    srv.stop();
    process.exit(0);
  };
  process.on("SIGINT", exit);
  process.on("SIGTERM", exit);
  return await new Promise<number>(() => {});
}
