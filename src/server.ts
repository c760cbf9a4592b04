/**
 * `rcloud serve`: load the configuration, connect the driver, serve the REST API.
 * The server answers even while the hypervisor is unreachable (health says so, VM calls
 * answer 503) and connects in the background until it succeeds.
 */
import { existsSync } from "node:fs";
import { createApp } from "./api/app.ts";
import { authEnabled, TokenStore } from "./auth/index.ts";
import { Metrics } from "./api/metrics.ts";
import { RequestGuard } from "./api/request-guard.ts";
import { loadConfig, type RcloudConfig } from "./config/index.ts";
import { LibvirtDriver } from "./drivers/libvirt/driver.ts";
import { QemuDriver } from "./drivers/qemu/driver.ts";
import { join } from "node:path";
import type { HostConfig } from "./config/schema.ts";
import { EventBus } from "./events/bus.ts";
import type { CallObserver } from "./libvirt/connection.ts";
import { displayUri, hideUriSecrets } from "./util/display-uri.ts";
import { createLogger, type Logger } from "./util/log.ts";
import { currentRequestId } from "./util/request-context.ts";
import { VERSION } from "./util/version.ts";
import { Host, HostRegistry } from "./vm/hosts.ts";
import { VmService } from "./vm/service.ts";

export interface RunningServer {
  url: string;
  port: number;
  service: VmService;
  /** The server's log (logging.level and format). */
  log: Logger;
  stop(opts?: { drainMs?: number }): Promise<void>;
}

/** A host name for the one host of libvirt.uri: the URI's host as a DNS label, or "local". */
function hostNameOfUri(uri: string): string {
  let host: string;
  try {
    host = new URL(uri).hostname;
  } catch {
    return "local";
  }
  const label = host.toLowerCase().replace(/^\[|\]$/g, "").replace(/[^a-z0-9-]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 63);
  return label === "" ? "local" : label;
}

const LOOPBACK = new Set(["localhost", "127.0.0.1", "::1"]);
const IPV4 = /^\d{1,3}(\.\d{1,3}){3}$/;

/**
 * Where a host's user-mode SSH forwards listen and how clients reach them: 127.0.0.1 for a
 * local or loopback host; else ssh_forward_address (default the URI's host), bound as is when
 * it is an IPv4 address, on every address of that host when it is a name.
 */
function sshForwardOf(uri: string, given: string | null): { bind: string; address: string } {
  let host = "";
  try {
    host = new URL(uri).hostname.replace(/^\[|\]$/g, "");
  } catch {
    host = "";
  }
  const address = given ?? (host === "" || LOOPBACK.has(host) ? "127.0.0.1" : host);
  return { bind: IPV4.test(address) ? address : "0.0.0.0", address };
}

/** The hosts of the config: `hosts:`, or the one host of libvirt.uri, or the QEMU driver's own. */
function buildHosts(config: RcloudConfig, log: Logger, onRpc: CallObserver): Host[] {
  const d = config.vm_defaults;
  const overcommit = { vcpuOvercommit: d.vcpu_overcommit, memoryOvercommit: d.memory_overcommit };
  if (config.driver === "qemu") {
    if (config.hosts.length > 0) throw new Error("config: hosts: lists libvirt hosts, but driver is qemu; set driver: libvirt (or remove hosts:)");
    const driver = new QemuDriver({
      binary: config.qemu.binary,
      stateDir: config.qemu.state_dir,
      accel: config.qemu.accel,
      runAs: config.qemu.run_as,
      baseImagesDir: config.images.base_images_dir,
      kernelDir: d.kernel_dir,
      shareDirs: d.share_dirs,
      log,
    });
    return [new Host(driver, { name: "local", displayUri: `qemu+direct://${config.qemu.state_dir}`, labels: {}, ...overcommit })];
  }
  const entries = config.hosts.length > 0 ? config.hosts : [{ name: hostNameOfUri(config.libvirt.uri), uri: config.libvirt.uri }];
  return entries.map((e: HostConfig) => {
    const lv = config.libvirt;
    const driver = new LibvirtDriver({
      uri: e.uri,
      poolName: lv.storage_pool_name,
      poolPath: e.storage_pool_path ?? lv.storage_pool_path,
      templatePath: d.template,
      domainType: lv.domain_type,
      consoleLogDir: lv.console_log_dir,
      sshForward: sshForwardOf(e.uri, e.ssh_forward_address ?? null),
      baseImagesDir: e.base_images_dir ?? config.images.base_images_dir,
      kernelDir: e.kernel_dir !== undefined ? e.kernel_dir : d.kernel_dir,
      shareDirs: d.share_dirs,
      client: {
        onCallComplete: onRpc,
        busyPollUs: lv.busy_poll_us,
        slowCallSpacingMs: lv.slow_call_spacing_ms,
        maxSlowCalls: lv.max_slow_calls,
        callTimeoutMs: lv.call_timeout_s * 1000,
        slowCallTimeoutMs: lv.slow_call_timeout_s * 1000,
        keepaliveIntervalMs: lv.keepalive_interval_s * 1000,
        keepaliveCount: lv.keepalive_count,
        onWarning: (message) => log("warn", message, { host: e.name }),
      },
    });
    return new Host(driver, {
      name: e.name,
      displayUri: displayUri(e.uri),
      redact: (text) => hideUriSecrets(text, e.uri),
      labels: e.labels ?? {},
      vcpuOvercommit: e.vcpu_overcommit ?? d.vcpu_overcommit,
      memoryOvercommit: e.memory_overcommit ?? d.memory_overcommit,
    });
  });
}

export async function startServer(opts: { config?: RcloudConfig; configFile?: string | null; port?: number } = {}): Promise<RunningServer> {
  const config = opts.config ?? loadConfig({ file: opts.configFile ?? null });
  const log = createLogger(config.logging);
  // The metrics object needs the service; the driver reports RPC timings to it later.
  let metrics: Metrics | null = null;
  const hosts = buildHosts(config, log, (p, ms, e) => metrics?.observeRpc(p, ms, e));
  const registry = new HostRegistry(hosts, join(config.server.state_dir, "hosts.json"), log);
  const d = config.vm_defaults;
  const service = new VmService(registry, {
    defaults: {
      vcpus: d.vcpus,
      memoryMb: d.memory_mb,
      rootDiskGb: d.root_disk_gb,
      networkMode: d.network_mode,
      networkBridge: d.network_bridge,
      userNetworkRestrict: d.user_network_restrict,
      onPanic: d.on_panic,
      diskDriver: d.disk_driver,
      sshUser: d.ssh_user,
      stopTimeoutS: d.stop_timeout_s,
      maxExtraDisks: d.max_extra_disks,
      vcpuOvercommit: d.vcpu_overcommit,
      memoryOvercommit: d.memory_overcommit,
      maxKernelBytes: d.max_kernel_bytes,
      poolReserveBytes: d.pool_reserve_mb * 1024 * 1024,
    },
    onOperation: (op, ms, ok) => {
      metrics?.operations.observe({ operation: op, outcome: ok ? "ok" : "error" }, ms / 1000);
      log(ok ? "info" : "warn", "vm operation", { op, outcome: ok ? "ok" : "error", duration_ms: Math.round(ms), request_id: currentRequestId() });
    },
    quotas: { quotas: config.auth.quotas, default_quota: config.auth.default_quota },
    placement: config.placement.policy,
    onCrash: d.on_crash,
    onRestartFailed: (host, vm, error, retryInMs) =>
      log("warn", retryInMs === null ? "on_crash: restart could not start the VM again; given up" : "on_crash: restart could not start the VM again; trying again", { host, vm, error, ...(retryInMs !== null ? { retry_in_ms: retryInMs } : {}) }),
  });
  const events = new EventBus({ capacity: config.events.buffer, subscriberBuffer: config.events.subscriber_buffer });
  service.attachEvents(events);
  metrics = new Metrics(service);
  metrics.observeEvents(events);
  // Reconcile each host as it connects: what a previous rcloud, killed midway, left behind.
  registry.onConnected = (h) => {
    void service.reconcileHost(h).then((r) => {
      if (r.error) log("warn", "reconcile at start failed; POST /api/v1/reconcile runs it again", { host: h.name, error: r.error });
      else log("info", "reconciled at start", { host: h.name, removed: r.removed.length, adopted: r.adopted.length, ...(r.removed.length ? { removed_names: r.removed.map((a) => a.name).join(" ") } : {}) });
    });
  };
  registry.start();

  const bind = config.server.bind_address;
  const m = /^\[?([^\]]*)\]?:(\d+)$/.exec(bind);
  const hostname = m?.[1] ?? "127.0.0.1";
  const port = opts.port ?? Number(m?.[2] ?? 8765);
  const authOn = authEnabled(config.auth.enabled, hostname);
  const auth = authOn ? { tokens: new TokenStore(config.auth.tokens_file, log), metricsOpen: config.auth.metrics_open } : null;
  if (authOn && !existsSync(config.auth.tokens_file)) {
    log("warn", "authentication is on but the tokens file does not exist; every request needs a token (create one with 'rcloud token create')", { tokens_file: config.auth.tokens_file });
  }
  // Optional HTTPS: server.tls.cert_file + key_file (PEM); the config loader checks both or neither.
  const tls = config.server.tls.cert_file && config.server.tls.key_file ? { cert: Bun.file(config.server.tls.cert_file), key: Bun.file(config.server.tls.key_file) } : undefined;
  const scheme = tls ? "https" : "http";
  const guard = new RequestGuard({ bindHost: hostname, scheme, publicNames: config.server.public_names, allowedOrigins: config.server.allowed_origins });
  const app = createApp(service, { version: VERSION, log, metrics, auth, guard, maxBodyBytes: config.server.max_body_bytes, events: { bus: events } });
  // reusePort off: a second rcloud on the same port must fail, not silently share the traffic.
  // Bun's own cap on bodies must let an uploaded kernel through (the routes enforce their limits).
  const maxRequestBodySize = Math.max(config.server.max_body_bytes, d.max_kernel_bytes) + 1024 * 1024;
  app.listen({ hostname, port, idleTimeout: config.server.idle_timeout_s, reusePort: false, maxRequestBodySize, ...(tls ? { tls } : {}) });
  const actualPort = app.server?.port ?? port;
  log("info", "rcloud listening", {
    url: `${scheme}://${bind}`,
    port: actualPort,
    driver: config.driver,
    auth: authOn ? "on" : "off",
    hosts: hosts.map((h) => `${h.name}=${h.displayUri}`).join(" "),
  });
  return {
    url: `${scheme}://${hostname.includes(":") ? `[${hostname}]` : hostname}:${actualPort}`,
    port: actualPort,
    service,
    log,
    /** Graceful: stop accepting, let operations in flight finish (bounded), then disconnect. */
    async stop(opts: { drainMs?: number } = {}) {
      const stopping = app.stop(); // no new connections; requests in flight continue
      const drained = await service.drain(opts.drainMs ?? 30_000);
      if (!drained) log("warn", "shutting down with VM operations still running");
      await Promise.race([stopping, Bun.sleep(5_000)]);
      await registry.close();
      log("info", "rcloud stopped");
    },
  };
}
