/**
 * bun run bench:hosts [--hosts 3] [--vms 300] [--running 10] [--rounds 200] [--creates 60]
 *
 * Listing many VMs over many hosts. Each of the rig's libvirtd instances (main, remote, fault;
 * --hosts 1 uses main only) serves libvirt's test driver, `test:///default`; the benchmark
 * defines --vms rcloud VMs on each with a bare client (rcloud's own template and metadata,
 * a root volume each in rcloud's pool, bridge networking, --running of them started), starts
 * `rcloud serve` with a `hosts:` list of those daemons, and then, in rounds that alternate
 * which goes first:
 *   - ours:  GET /api/v1/vms, until the whole body is in;
 *   - floor: what a listing needs from libvirt at the least, issued by a bare LibvirtClient:
 *            every domain and its stats in one CONNECT_GET_ALL_DOMAIN_STATS per host, all
 *            hosts at once.
 * Then --creates concurrent POST /vms, and how evenly they landed: `spread` is the most minus
 * the fewest VMs on a host (null when rcloud reports one host or no `host` field).
 * Prints one JSON line: list_p50_ms, list_p99_ms, floor_p50_ms, floor_p99_ms, list_ratio
 * (ours p50 over floor p50), spread, list_incomplete (measured listings that missed a VM or
 * showed one as "unknown" because a host did not answer in time), create_failures, and the
 * parameters. Everything it defined is removed.
 * Starts the test rig if it is not running, and stops it again if it started it.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { stringify } from "yaml";
import { poolXml, volumeXml } from "../src/drivers/libvirt/storage-xml.ts";
import { LibvirtClient, remoteProcedures as P } from "../src/libvirt/index.ts";
import { defineRcloudDomain, rcloudDomain, removeDomains } from "../test/helpers/domains.ts";
import { daemonCpuUs as processCpuUs } from "./rpc-mix.ts";

const repo = resolve(import.meta.dir, "..");
const rigDir = process.env.RCLOUD_RIG_DIR ?? "/tmp/rcloud-rig";

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
}
const hostCount = Math.min(3, Math.max(1, arg("hosts", 3)));
const vmsPerHost = arg("vms", 300);
const runningPerHost = Math.min(vmsPerHost, arg("running", 10));
const rounds = arg("rounds", 200);
const creates = arg("creates", 60);

/** What rcloud's listing asks each host for: VIR_DOMAIN_STATS_STATE | VIR_DOMAIN_STATS_CPU_TOTAL. */
const LISTING_STATS = 1 | 2;
const prefix = `rcbench-h${process.pid}-`;
const poolName = `rcbench-hosts-${process.pid}`;
const poolPath = `/rcbench/${poolName}`;
/** The hosts' base_images_dir: a path on the test driver only (its pool `<pool>-images`). */
const imagesPath = `/rcbench/${poolName}-images`;

function sh(cmd: string[]): string {
  const r = Bun.spawnSync(cmd, { cwd: repo, stdout: "pipe", stderr: "inherit" });
  if (r.exitCode !== 0) throw new Error(`${cmd.join(" ")} failed (${r.exitCode})`);
  return r.stdout.toString();
}

function percentile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)] ?? 0;
}
const ms = (x: number) => Math.round(x * 100) / 100;

const startedRig = !existsSync(join(rigDir, "env.json"));
if (startedRig) {
  sh(["bash", "scripts/lib/install-deps.sh"]);
  sh(["bash", "scripts/lib/rig.sh", "up"]);
}
type Instance = { socket: string | null; tcpPort: number; libvirtdPid: number };
const env = JSON.parse(readFileSync(join(rigDir, "env.json"), "utf8")) as { instances: Record<"main" | "remote" | "fault", Instance> };
const hosts = (["main", "remote", "fault"] as const).slice(0, hostCount).map((name) => {
  const inst = env.instances[name];
  const uri = inst.socket ? `test+unix:///default?socket=${inst.socket}` : `test+tcp://127.0.0.1:${inst.tcpPort}/default`;
  return { name, uri, pid: inst.libvirtdPid, lv: null as LibvirtClient | null };
});

/**
 * On one host: rcloud's pool (made here so the VMs' root volumes can be in it), its image pool
 * holding the image the creates use (the test driver sees no files: images are its volumes),
 * and --vms VMs.
 */
async function populate(host: (typeof hosts)[number]): Promise<void> {
  const lv = (host.lv = await LibvirtClient.connect(host.uri));
  const makePool = async (name: string, path: string) => {
    const { pool } = await lv.call(P.storagePoolDefineXml, { xml: poolXml(name, path), flags: 0 });
    await lv.call(P.storagePoolCreate, { pool, flags: 0 });
    return pool;
  };
  const images = await makePool(`${poolName}-images`, imagesPath);
  await lv.call(P.storageVolCreateXml, { pool: images, xml: volumeXml({ name: "debian-13-generic-amd64.raw", capacityBytes: 1024 ** 3, allocationBytes: 0, format: "raw" }), flags: 0 });
  const pool = await makePool(poolName, poolPath);
  const defined = [];
  for (let i = 0; i < vmsPerHost; i++) {
    const d = rcloudDomain(`${prefix}${host.name}-${i}`, { network: { mode: "bridge", bridge: "default", sshPort: null }, memoryMb: 256 });
    const xml = volumeXml({ name: `${d.id}-root.qcow2`, capacityBytes: 10 * 1024 ** 2, format: "qcow2" });
    const { vol } = await lv.call(P.storageVolCreateXml, { pool, xml, flags: 0 });
    d.rootDisk = (await lv.call(P.storageVolGetPath, { vol })).name;
    defined.push(defineRcloudDomain(lv, d));
  }
  const doms = await Promise.all(defined);
  await Promise.all(doms.slice(0, runningPerHost).map((dom) => lv.call(P.domainCreate, { dom })));
}

async function cleanup(host: (typeof hosts)[number]): Promise<void> {
  const lv = host.lv;
  if (!lv) return;
  await removeDomains(lv, prefix);
  await removeDomains(lv, "rcbench-c");
  for (const name of [poolName, `${poolName}-images`, `${poolName}-kernels`]) {
    try {
      const { pool } = await lv.call(P.storagePoolLookupByName, { name });
      const { vols } = await lv.call(P.storagePoolListAllVolumes, { pool, need_results: 1, flags: 0 });
      await Promise.all(vols.map((vol) => lv.call(P.storageVolDelete, { vol, flags: 0 }).catch(() => {})));
      await lv.call(P.storagePoolDestroy, { pool }).catch(() => {});
      await lv.call(P.storagePoolUndefine, { pool }).catch(() => {});
    } catch {
      // never made
    }
  }
  await lv.close();
}

let server: ReturnType<typeof Bun.spawn> | null = null;
let result: Record<string, unknown> | null = null;
const work = mkdtempSync(join(tmpdir(), "rcloud-bench-hosts-"));
try {
  await Promise.all(hosts.map(populate));
  const total = hostCount * vmsPerHost;

  const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = probe.port;
  probe.stop(true);
  const cfg = join(work, "rcloud.yaml");
  writeFileSync(
    cfg,
    stringify({
      server: { bind_address: `127.0.0.1:${port}`, state_dir: join(work, "state") },
      // The fleet; a build without the fleet layer uses libvirt.uri, the first host.
      hosts: hosts.map((h) => ({ name: h.name, uri: h.uri })),
      libvirt: { uri: hosts[0]!.uri, storage_pool_name: poolName, storage_pool_path: poolPath },
      images: { base_images_dir: imagesPath },
      // The test driver says its host has 3 GiB: let memory not be what limits placement here.
      vm_defaults: { network_mode: "bridge", network_bridge: "default", memory_mb: 256, vcpus: 1, root_disk_gb: 1, memory_overcommit: 64 },
      logging: { level: "warn", format: "text" },
    }),
  );
  const srv = Bun.spawn(["node_modules/.bin/bun", ...(process.env.BENCH_SERVER_BUN_ARGS?.split(" ").filter(Boolean) ?? []), "src/main.ts", "serve", "--config", cfg], { cwd: repo, stdout: "inherit", stderr: "inherit" });
  server = srv;
  const api = `http://127.0.0.1:${port}/api/v1`;
  let healthy = false;
  for (let i = 0; i < 300 && !healthy; i++) {
    healthy = await fetch(`${api}/health`).then((r) => r.ok, () => false);
    if (!healthy) await Bun.sleep(100);
  }
  if (!healthy) throw new Error(`rcloud did not become healthy on port ${port}`);

  type Vm = { name: string; host?: string; state: string };
  const listVms = async (): Promise<Vm[]> => {
    const r = await fetch(`${api}/vms`);
    const body = (await r.json()) as { vms?: Vm[] };
    if (!r.ok || !body.vms) throw new Error(`GET /vms answered ${r.status}: ${JSON.stringify(body).slice(0, 300)}`);
    return body.vms;
  };
  // A listing is complete when it shows every VM, none from a host's last listing ("unknown").
  const complete = (vms: Vm[]) => vms.filter((v) => v.name.startsWith(prefix) && v.state !== "unknown").length === total;
  // Warm-up (not measured): the first listings read what rcloud keeps between listings, and
  // may take longer than the fleet waits for a host; a minute at most.
  const warmUntil = performance.now() + 60_000;
  let warm = 0;
  while (warm < 3 && performance.now() < warmUntil) {
    const ok = await listVms().then(complete, () => false);
    warm = ok ? warm + 1 : 0;
    if (!ok) await Bun.sleep(500);
  }
  // A build whose listing never completes is still measured (every round counts in list_incomplete).
  const listed = (await listVms().catch(() => [] as Vm[])).filter((v) => v.name.startsWith(prefix));
  if (listed.length > 0 && listed.length < total) {
    throw new Error(
      `rcloud lists ${listed.length} of the ${total} VMs on ${hostCount} hosts` +
        (hostCount > 1 ? " (a build without the fleet layer lists libvirt.uri's only: measure one host with --hosts 1)" : ""),
    );
  }
  const running = listed.filter((v) => v.state === "running").length;
  if (warm === 3 && running !== hostCount * runningPerHost) throw new Error(`rcloud reports ${running} running VMs, ${hostCount * runningPerHost} were started`);

  const floorClients = hosts.map((h) => h.lv!);
  /**
   * complete() on the body's text: every VM named, none "unknown". Parsing 900 VMs' JSON (and
   * collecting it later, inside some round) would be this process's work, not rcloud's.
   */
  const occurrences = (text: string, what: string) => {
    let n = 0;
    for (let at = text.indexOf(what); at >= 0; at = text.indexOf(what, at + what.length)) n++;
    return n;
  };
  const completeText = (text: string) => occurrences(text, `"name":"${prefix}`) === total && occurrences(text, `"state":"unknown"`) === 0;
  /** Listings that were not complete (a host's last listing shown, or an error), over all rounds. */
  let incomplete = 0;
  /**
   * CPU time spent during each side's rounds, µs, summed over the rounds (the daemons' and the
   * server's counters tick at 10 ms, too coarse for one round): this process's own, rcloud's,
   * the libvirtds'. It does not depend on how busy the machine is, unlike the times.
   */
  const cpu = { ours: { client: 0, server: 0, daemons: 0 }, floor: { client: 0, server: 0, daemons: 0 } };
  const daemonsCpuUs = () => hosts.reduce((sum, h) => sum + processCpuUs(h.pid), 0);
  async function counted<T>(side: keyof typeof cpu, run: () => Promise<T>): Promise<T> {
    const [c0, s0, d0] = [process.cpuUsage(), processCpuUs(srv.pid), daemonsCpuUs()];
    const v = await run();
    const c = process.cpuUsage(c0);
    cpu[side].client += c.user + c.system;
    cpu[side].server += processCpuUs(srv.pid) - s0;
    cpu[side].daemons += daemonsCpuUs() - d0;
    return v;
  }
  async function ours(): Promise<number> {
    let text = "";
    let ok = false;
    const t0 = performance.now();
    const ms = await counted("ours", async () => {
      const r = await fetch(`${api}/vms`);
      text = await r.text();
      ok = r.ok;
      return performance.now() - t0;
    });
    if (!ok || !completeText(text)) incomplete++;
    return ms;
  }
  async function floor(): Promise<number> {
    const t0 = performance.now();
    await counted("floor", () => Promise.all(floorClients.map((lv) => lv.call(P.connectGetAllDomainStats, { doms: [], stats: LISTING_STATS, flags: 0 }))));
    return performance.now() - t0;
  }
  for (let i = 0; i < 5; i++) await floor();
  cpu.floor = { client: 0, server: 0, daemons: 0 };
  const threads = () => {
    const m = new Map<string, number>();
    for (const tid of readdirSync(`/proc/${srv.pid}/task`)) {
      try {
        const st = readFileSync(`/proc/${srv.pid}/task/${tid}/stat`, "utf8");
        const name = st.slice(st.indexOf("(") + 1, st.lastIndexOf(")"));
        const f = st.slice(st.lastIndexOf(")") + 2).split(" ");
        m.set(name, (m.get(name) ?? 0) + Number(f[11]) + Number(f[12]));
      } catch {}
    }
    return m;
  };
  const th0 = threads();
  const oursMs: number[] = [];
  const floorMs: number[] = [];
  for (let r = 0; r < rounds; r++) {
    if (r % 2 === 0) {
      oursMs.push(await ours());
      floorMs.push(await floor());
    } else {
      floorMs.push(await floor());
      oursMs.push(await ours());
    }
  }

  if (process.env.BENCH_THREADS) { const th1 = threads(); console.error(JSON.stringify([...th1].map(([k, v]) => [k, v - (th0.get(k) ?? 0)]))); }
  // Placement: concurrent creates, then VMs per host.
  const made = await Promise.all(
    Array.from({ length: creates }, (_, i) =>
      fetch(`${api}/vms`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ name: `rcbench-c${i}`, image: "debian13" }) }).then(
        async (r) => ({ status: r.status, body: (await r.json().catch(() => ({}))) as { host?: string; error?: unknown } }),
        (e: Error) => ({ status: 0, body: { error: e.message } as { host?: string; error?: unknown } }),
      ),
    ),
  );
  const failed = made.filter((m) => m.status !== 201);
  for (const f of failed.slice(0, 3)) console.error(`create failed: ${f.status} ${JSON.stringify(f.body)}`);
  const after = await listVms().catch(() => [] as Vm[]);
  const perHost = new Map<string, number>();
  for (const v of after) if (v.host !== undefined) perHost.set(v.host, (perHost.get(v.host) ?? 0) + 1);
  const counts = [...perHost.values()];
  const spread = perHost.size > 1 ? Math.max(...counts) - Math.min(...counts) : null;
  await Promise.all(made.map((_, i) => fetch(`${api}/vms/rcbench-c${i}`, { method: "DELETE" }).catch(() => {})));

  const [l50, f50] = [percentile(oursMs, 0.5), percentile(floorMs, 0.5)];
  const perRound = (us: number) => Math.round(us / rounds / 10) / 100;
  result = {
    list_p50_ms: ms(l50),
    list_p99_ms: ms(percentile(oursMs, 0.99)),
    floor_p50_ms: ms(f50),
    floor_p99_ms: ms(percentile(floorMs, 0.99)),
    list_ratio: Math.round((l50 / f50) * 100) / 100,
    // CPU per listing, ms: rcloud's (server) and this process's fetch (client); the floor's
    // client; each side's libvirtds; cpu_ratio = ours (all three) over the floor's (both).
    list_cpu_ms: { server: perRound(cpu.ours.server), client: perRound(cpu.ours.client), daemons: perRound(cpu.ours.daemons) },
    floor_cpu_ms: { client: perRound(cpu.floor.client), daemons: perRound(cpu.floor.daemons) },
    cpu_ratio: Math.round(((cpu.ours.server + cpu.ours.client + cpu.ours.daemons) / (cpu.floor.client + cpu.floor.daemons)) * 100) / 100,
    spread,
    vms_per_host: Object.fromEntries(perHost),
    list_incomplete: incomplete,
    create_failures: failed.length,
    hosts: hostCount,
    vms: total,
    running: hostCount * runningPerHost,
    rounds,
    creates,
  };
} finally {
  if (server) {
    server.kill("SIGTERM");
    await server.exited;
  }
  await Promise.all(hosts.map(cleanup));
  rmSync(work, { recursive: true, force: true });
  if (startedRig) sh(["bash", "scripts/lib/rig.sh", "down"]);
}
console.log(JSON.stringify(result));
