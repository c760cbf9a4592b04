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
import type { VmDriver } from "./drivers/types.ts";
import type { CallObserver } from "./libvirt/connection.ts";
import { createLogger, type Logger } from "./util/log.ts";
import { currentRequestId } from "./util/request-context.ts";
import { VERSION } from "./util/version.ts";
import { ImageCatalog } from "./vm/images.ts";
import { VmService } from "./vm/service.ts";

export interface RunningServer {
  url: string;
  port: number;
  service: VmService;
  stop(opts?: { drainMs?: number }): Promise<void>;
}

function buildDriver(config: RcloudConfig, catalog: ImageCatalog, log: Logger, onRpc: CallObserver): VmDriver {
  if (config.driver === "qemu") {
    return new QemuDriver({
      binary: config.qemu.binary,
      stateDir: config.qemu.state_dir,
      accel: config.qemu.accel,
      runAs: config.qemu.run_as,
      listImages: async () => catalog.list(),
      log,
    });
  }
  return new LibvirtDriver({
    uri: config.libvirt.uri,
    poolName: config.libvirt.storage_pool_name,
    poolPath: config.libvirt.storage_pool_path,
    templatePath: config.vm_defaults.template,
    domainType: config.libvirt.domain_type,
    consoleLogDir: config.libvirt.console_log_dir,
    listImages: async () => catalog.list(),
    client: {
      onCallComplete: onRpc,
      busyPollUs: config.libvirt.busy_poll_us,
      slowCallSpacingMs: config.libvirt.slow_call_spacing_ms,
      maxSlowCalls: config.libvirt.max_slow_calls,
      callTimeoutMs: config.libvirt.call_timeout_s * 1000,
      slowCallTimeoutMs: config.libvirt.slow_call_timeout_s * 1000,
      keepaliveIntervalMs: config.libvirt.keepalive_interval_s * 1000,
      keepaliveCount: config.libvirt.keepalive_count,
    },
  });
}

async function initWithRetry(driver: VmDriver, log: Logger, signal: AbortSignal): Promise<void> {
  let delay = 500;
  for (;;) {
    try {
      await driver.init();
      log("info", "hypervisor connected", { driver: driver.kind });
      return;
    } catch (e) {
      if (signal.aborted) return;
      log("warn", "hypervisor not reachable yet; retrying", { error: (e as Error).message, retry_ms: delay });
      await Bun.sleep(delay);
      delay = Math.min(delay * 2, 10_000);
    }
  }
}

export async function startServer(opts: { config?: RcloudConfig; configFile?: string | null; port?: number } = {}): Promise<RunningServer> {
  const config = opts.config ?? loadConfig({ file: opts.configFile ?? null });
  const log = createLogger(config.logging);
  const catalog = new ImageCatalog(config.images.base_images_dir);
  // The metrics object needs the service; the driver reports RPC timings to it later.
  let metrics: Metrics | null = null;
  const driver = buildDriver(config, catalog, log, (p, ms, e) => metrics?.observeRpc(p, ms, e));
  const d = config.vm_defaults;
  const service = new VmService(
    driver,
    catalog,
    {
      vcpus: d.vcpus,
      memoryMb: d.memory_mb,
      rootDiskGb: d.root_disk_gb,
      networkMode: d.network_mode,
      networkBridge: d.network_bridge,
      userNetworkRestrict: d.user_network_restrict,
      diskDriver: d.disk_driver,
      sshUser: d.ssh_user,
      kernelDir: d.kernel_dir,
      stopTimeoutS: d.stop_timeout_s,
      maxExtraDisks: d.max_extra_disks,
      vcpuOvercommit: d.vcpu_overcommit,
      memoryOvercommit: d.memory_overcommit,
    },
    (op, ms, ok) => {
      metrics?.operations.observe({ operation: op, outcome: ok ? "ok" : "error" }, ms / 1000);
      log(ok ? "info" : "warn", "vm operation", { op, outcome: ok ? "ok" : "error", duration_ms: Math.round(ms), request_id: currentRequestId() });
    },
    { quotas: config.auth.quotas, default_quota: config.auth.default_quota },
  );
  metrics = new Metrics(service);
  const abort = new AbortController();
  const ready = initWithRetry(driver, log, abort.signal);

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
  const app = createApp(service, { version: VERSION, log, metrics, auth, guard, maxBodyBytes: config.server.max_body_bytes });
  // reusePort off: a second rcloud on the same port must fail, not silently share the traffic.
  app.listen({ hostname, port, idleTimeout: config.server.idle_timeout_s, reusePort: false, ...(tls ? { tls } : {}) });
  const actualPort = app.server?.port ?? port;
  log("info", "rcloud listening", {
    url: `${scheme}://${bind}`,
    port: actualPort,
    driver: config.driver,
    auth: authOn ? "on" : "off",
    ...(config.driver === "libvirt" ? { libvirt_uri: config.libvirt.uri } : { state_dir: config.qemu.state_dir }),
  });
  return {
    url: `${scheme}://${hostname.includes(":") ? `[${hostname}]` : hostname}:${actualPort}`,
    port: actualPort,
    service,
    /** Graceful: stop accepting, let operations in flight finish (bounded), then disconnect. */
    async stop(opts: { drainMs?: number } = {}) {
      abort.abort();
      const stopping = app.stop(); // no new connections; requests in flight continue
      const drained = await service.drain(opts.drainMs ?? 30_000);
      if (!drained) log("warn", "shutting down with VM operations still running");
      await Promise.race([stopping, Bun.sleep(5_000)]);
      await ready.catch(() => {});
      await driver.close();
      log("info", "rcloud stopped");
    },
  };
}
