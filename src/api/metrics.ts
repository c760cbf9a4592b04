/**
 * Prometheus metrics (prom-client) for /metrics: API requests, libvirt RPC calls, VM
 * operations, and — collected at scrape time from the driver — VMs by state, allocation
 * and per-VM CPU time/memory. Names follow Prometheus conventions (base units, _total).
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { EventBus } from "../events/bus.ts";
import type { VmService } from "../vm/service.ts";

export class Metrics {
  readonly registry = new Registry();
  readonly httpRequests = new Counter({
    name: "rcloud_http_requests_total",
    help: "API requests by method, route and status",
    labelNames: ["method", "route", "status"] as const,
    registers: [this.registry],
  });
  readonly httpDuration = new Histogram({
    name: "rcloud_http_request_duration_seconds",
    help: "API request latency by method, route and status",
    labelNames: ["method", "route", "status"] as const,
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [this.registry],
  });
  readonly rpcDuration = new Histogram({
    name: "rcloud_libvirt_rpc_duration_seconds",
    help: "libvirt RPC call latency by procedure",
    labelNames: ["procedure"] as const,
    buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30],
    registers: [this.registry],
  });
  readonly rpcErrors = new Counter({
    name: "rcloud_libvirt_rpc_errors_total",
    help: "libvirt RPC calls that failed, by procedure and error kind",
    labelNames: ["procedure", "kind"] as const,
    registers: [this.registry],
  });
  readonly operations = new Histogram({
    name: "rcloud_vm_operation_duration_seconds",
    help: "VM operation duration by operation and outcome",
    labelNames: ["operation", "outcome"] as const,
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
    registers: [this.registry],
  });

  constructor(service: VmService) {
    collectDefaultMetrics({ register: this.registry, prefix: "rcloud_" });
    // These default gauges end in _total, which Prometheus reserves for counters (promtool
    // check metrics flags them); the _handles/_requests/_resources breakdowns stay.
    for (const name of ["nodejs_active_handles_total", "nodejs_active_requests_total", "nodejs_active_resources_total"]) {
      this.registry.removeSingleMetric(`rcloud_${name}`);
    }
    const reg = [this.registry];
    // A total kept by the driver, exposed as a counter re-set at each scrape.
    const reconnects = new Counter({ name: "rcloud_hypervisor_reconnects_total", help: "Times rcloud reconnected to the hypervisor since it started", registers: reg });
    this.refresh = async () => {
      const g = this.gauges;
      for (const k of ["vms", "vmMem", "hostUp", "hostCpus", "hostMem", "capCpus", "capMem", "allocCpus", "allocMem", "hostVms"] as const) g[k].reset();
      this.vmCpu.reset();
      reconnects.reset();
      const { reconnects: reconnected, slowCalls: slow } = service.connectionStats();
      reconnects.inc(reconnected);
      if (slow) {
        g.slowCalls.set({ state: "in_flight" }, slow.inFlight);
        g.slowCalls.set({ state: "waiting" }, slow.waiting);
        g.slowWindow.set(slow.window);
      }
      const MiB = 1024 * 1024;
      const snap = await service.snapshot({ cpuTime: true });
      let anyUp = false;
      for (const { host, info, records, fresh } of snap.hosts) {
        const h = { host: host.name };
        g.hostUp.set(h, fresh ? 1 : 0);
        anyUp ||= fresh;
        if (info) {
          g.hostCpus.set(h, info.cpus);
          g.hostMem.set(h, info.memoryMb * MiB);
          g.capCpus.set(h, info.cpus * host.vcpuOvercommit);
          g.capMem.set(h, Math.floor(info.memoryMb * host.memoryOvercommit) * MiB);
        }
        let cpus = 0;
        let mem = 0;
        for (const r of records) {
          g.vms.inc({ state: fresh ? r.state : "unknown" });
          // A counter read from the hypervisor: reset and set to the current total each scrape.
          if (fresh) this.vmCpu.inc({ vm: r.name }, Number(r.cpuTimeNs) / 1e9);
          g.vmMem.set({ vm: r.name }, r.memoryMb * MiB);
          if (r.state !== "stopped") {
            cpus += r.vcpus;
            mem += r.memoryMb * MiB;
          }
        }
        g.hostVms.set(h, records.length);
        g.allocCpus.set(h, cpus);
        g.allocMem.set(h, mem);
      }
      g.up.set(anyUp ? 1 : 0);
    };
    this.vmCpu = new Counter({ name: "rcloud_vm_cpu_seconds_total", help: "CPU time used by each VM", labelNames: ["vm"], registers: reg });
    this.gauges = {
      up: new Gauge({ name: "rcloud_hypervisor_up", help: "1 when some host answers", registers: reg }),
      vms: new Gauge({ name: "rcloud_vms", help: "VMs by state (unknown: on a host that does not answer)", labelNames: ["state"], registers: reg }),
      hostUp: new Gauge({ name: "rcloud_host_up", help: "1 when the host answered its listing in time", labelNames: ["host"], registers: reg }),
      hostCpus: new Gauge({ name: "rcloud_host_vcpus", help: "CPUs of the host", labelNames: ["host"], registers: reg }),
      hostMem: new Gauge({ name: "rcloud_host_memory_bytes", help: "Memory of the host", labelNames: ["host"], registers: reg }),
      capCpus: new Gauge({ name: "rcloud_host_capacity_vcpus", help: "vCPUs placement may give out on the host (CPUs × vcpu_overcommit)", labelNames: ["host"], registers: reg }),
      capMem: new Gauge({ name: "rcloud_host_capacity_memory_bytes", help: "Memory placement may give out on the host (memory × memory_overcommit)", labelNames: ["host"], registers: reg }),
      hostVms: new Gauge({ name: "rcloud_host_vms", help: "rcloud VMs on the host", labelNames: ["host"], registers: reg }),
      allocCpus: new Gauge({ name: "rcloud_allocated_vcpus", help: "vCPUs of VMs that are not stopped, per host", labelNames: ["host"], registers: reg }),
      allocMem: new Gauge({ name: "rcloud_allocated_memory_bytes", help: "Memory of VMs that are not stopped, per host", labelNames: ["host"], registers: reg }),
      vmMem: new Gauge({ name: "rcloud_vm_memory_bytes", help: "Memory assigned to each VM", labelNames: ["vm"], registers: reg }),
      slowCalls: new Gauge({ name: "rcloud_libvirt_slow_calls", help: "libvirt calls that hold a daemon worker for long (starts, volume creation), in flight or waiting for the window", labelNames: ["state"], registers: reg }),
      slowWindow: new Gauge({ name: "rcloud_libvirt_slow_call_window", help: "How many such calls rcloud lets run at once; grows with libvirtd's worker pool", registers: reg }),
    };
  }

  private readonly gauges: Record<
    "up" | "vms" | "hostUp" | "hostCpus" | "hostMem" | "capCpus" | "capMem" | "hostVms" | "allocCpus" | "allocMem" | "vmMem" | "slowCalls" | "slowWindow",
    Gauge
  >;
  private readonly vmCpu: Counter;

  /** Reads the driver once and updates the VM and host gauges (call before each scrape). */
  readonly refresh: () => Promise<void>;

  /** The exposition text, with VM and host gauges read fresh. */
  async scrape(): Promise<string> {
    await this.refresh();
    return this.registry.metrics();
  }

  /** Event stream figures, read from the bus at each scrape. */
  observeEvents(bus: EventBus): void {
    const reg = [this.registry];
    new Gauge({ name: "rcloud_event_subscribers", help: "Open GET /events streams", registers: reg, collect() {
      this.set(bus.subscriberCount);
    } });
    new Counter({ name: "rcloud_events_published_total", help: "Events published since rcloud started", registers: reg, collect() {
      this.reset();
      this.inc(bus.publishedCount);
    } });
    new Counter({ name: "rcloud_event_consumers_cut_off_total", help: "Event streams ended because their consumer fell behind (events.subscriber_buffer)", registers: reg, collect() {
      this.reset();
      this.inc(bus.cutOffs);
    } });
  }

  /** Observer for the libvirt client (LibvirtClientOptions.onCallComplete). */
  observeRpc = (procedure: string, durationMs: number, error: unknown): void => {
    const name = procedure.replace(/^REMOTE_PROC_|^QEMU_PROC_/, "").toLowerCase();
    this.rpcDuration.observe({ procedure: name }, durationMs / 1000);
    if (error) this.rpcErrors.inc({ procedure: name, kind: (error as Error).name ?? "Error" });
  };
}
