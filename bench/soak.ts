/**
 * bun run soak [--minutes M] [--vms N] [--sample-minutes S] [--warmup-cycles K] [--heap-stats]
 *
 * Soak of rcloud's libvirt driver on the rig's `main` daemon (qemu:///system, TCG guests of
 * the tiny test disk, restricted user networking with SSH forwarded to 127.0.0.1): N VMs
 * (default 10) are created and logged in to by SSH; then, until M minutes (default 30) have
 * passed, the oldest VM is stopped, started, logged in to again and deleted, and a new one is
 * created and logged in to, so N stay alive. Before the timed loop, K such cycles (default 1)
 * warm up: each operation of the loop runs once, so the start reading holds what a first
 * stop, start and delete load and compile, which is not growth; the reading from before them
 * is printed too (`start_cold`, `ratios_cold`). At the start (all N up, warmed) and at the end it reads
 * rcloud's RSS and open file descriptors (/proc/<pid>), the libvirt sessions (clients of the
 * daemon by `virt-admin srv-clients-list`, and the daemon's own open descriptors) and the
 * event-loop lag (prom-client's rcloud_nodejs_eventloop_lag_seconds from /metrics; null
 * when metrics are off), and the time GET /health takes to answer; rcloud's RSS split into
 * JIT code (executable anonymous mappings), other anonymous memory (the JavaScript heap,
 * malloc) and mapped files; the same every S minutes
 * (default 5) in between, as `samples`. Prints one
 * JSON line {start_cold, start, end, ratios, ratios_cold, cycles, failures, minutes, vms}; flat = every ratio within
 * 1 ± 0.10. The rig must be up (scripts/lib/rig.sh up).
 *
 * --heap-stats: after each reading (its RSS taken first) rcloud is sent SIGUSR2 and writes a
 * heap report (src/util/heap-report.ts: a full collection, then the live JavaScript heap and
 * its objects by type); each reading then also has `heap_mb` and `objects`, and the result
 * lists the object types that grew most from the first report to the last.
 */
import { mkdtempSync, readdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { rig, unixUri } from "../test/helpers/rig.ts";
import { tinyDiskImageDir } from "../test/helpers/guest.ts";
import { spawnServer } from "../test/helpers/serve-process.ts";
import { makeSshKey, waitForSsh } from "../test/helpers/ssh.ts";
import type { HeapReport } from "../src/util/heap-report.ts";
import { rssMb } from "./fuzz.ts";

const arg = (name: string, d: number) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : d;
};
const minutes = arg("--minutes", 30);
const vmCount = arg("--vms", 10);
const sampleMinutes = arg("--sample-minutes", 5);
const warmupCycles = arg("--warmup-cycles", 1);
const heapStats = process.argv.includes("--heap-stats");
const heapDir = heapStats ? mkdtempSync(join(tmpdir(), "rcsoak-heap-")) : null;

interface Reading {
  rss_mb: number;
  /** RSS of executable anonymous mappings (JIT code), other anonymous ones, mapped files. */
  rss_jit_mb: number;
  rss_anon_mb: number;
  rss_file_mb: number;
  fds: number;
  libvirt_clients: number;
  libvirtd_fds: number;
  health_ms: number;
  loop_lag_ms: number | null;
  heap_mb?: number;
  objects?: number;
}

const fdCount = (pid: number) => readdirSync(`/proc/${pid}/fd`).length;

/** A process's resident memory by kind of mapping, MB (/proc/<pid>/smaps). */
function rssByKind(pid: number): { rss_jit_mb: number; rss_anon_mb: number; rss_file_mb: number } {
  const kb = { jit: 0, anon: 0, file: 0 };
  let kind: keyof typeof kb = "anon";
  for (const line of readFileSync(`/proc/${pid}/smaps`, "utf8").split("\n")) {
    // A mapping's header: "start-end perms offset dev inode [path]".
    const head = /^[0-9a-f]+-[0-9a-f]+ (\S{4}) \S+ \S+ (\d+)\s*(.*)$/.exec(line);
    if (head) {
      const [, perms, inode, path] = head;
      kind = inode !== "0" ? "file" : perms!.includes("x") ? "jit" : "anon";
      if (path === "[vdso]" || path === "[vsyscall]") kind = "file";
      continue;
    }
    if (line.startsWith("Rss:")) kb[kind] += Number(line.split(/\s+/)[1]);
  }
  const mb = (k: number) => Math.round(k / 102.4) / 10;
  return { rss_jit_mb: mb(kb.jit), rss_anon_mb: mb(kb.anon), rss_file_mb: mb(kb.file) };
}

function libvirtClients(): number {
  const sock = join(dirname(rig().instances.main.socket!), "libvirt-admin-sock");
  const r = Bun.spawnSync(["virt-admin", "-c", `libvirtd:///system?socket=${sock}`, "srv-clients-list", "libvirtd"], { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`virt-admin failed (install libvirt-clients): ${r.stderr.toString()}`);
  return r.stdout.toString().trim().split("\n").slice(2).filter((l) => l.trim() !== "").length;
}

/**
 * nodejs_eventloop_lag_seconds from rcloud's /metrics (prom-client's default metric), if
 * exported. prom-client measures the lag when it is scraped and reports it at the next
 * scrape, so the first of two scrapes 100 ms apart only starts the measurement.
 */
async function loopLagMs(base: string, token: string): Promise<number | null> {
  const scrape = () => fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${token}` } }).then((r) => (r.ok ? r.text() : ""), () => "");
  await scrape();
  await Bun.sleep(100);
  const m = /^(?:rcloud_)?nodejs_eventloop_lag_seconds (\S+)$/m.exec(await scrape());
  return m ? Number(m[1]) * 1000 : null;
}

const poolName = `rcsoak-${process.pid}`;
const imagesDir = tinyDiskImageDir(`${poolName}-images`);
const server = await spawnServer(
  {
    libvirt: { uri: unixUri("qemu"), storage_pool_name: poolName, storage_pool_path: join(rig().rigDir, "pools", poolName), domain_type: "qemu" },
    images: { base_images_dir: imagesDir },
    vm_defaults: { network_mode: "user", user_network_restrict: true, memory_mb: 128, vcpus: 1, root_disk_gb: 1, stop_timeout_s: 10, memory_overcommit: 8 },
  },
  { uri: unixUri("qemu"), pool: poolName, dirs: [imagesDir] },
  heapDir ? { RCLOUD_HEAP_REPORT_DIR: heapDir } : {},
);
const auth = { authorization: `Bearer ${server.token}`, "content-type": "application/json" };
const key = makeSshKey();
const libvirtdPid = rig().instances.main.libvirtdPid;

async function api(method: string, path: string, body?: unknown): Promise<{ status: number; json: any }> {
  const res = await fetch(`${server.baseUrl}/api/v1${path}`, { method, headers: auth, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: res.status, json: await res.json().catch(() => null) };
}

async function reading(): Promise<Reading> {
  const t0 = performance.now();
  await fetch(`${server.baseUrl}/api/v1/health`);
  const health = performance.now() - t0;
  return {
    rss_mb: Math.round(rssMb(server.pid)),
    ...rssByKind(server.pid),
    fds: fdCount(server.pid),
    libvirt_clients: libvirtClients(),
    libvirtd_fds: fdCount(libvirtdPid),
    health_ms: Math.round(health * 10) / 10,
    loop_lag_ms: await loopLagMs(server.baseUrl, server.token),
    ...(heapDir ? await heapFigures(heapDir) : {}),
  };
}

const heapReports: HeapReport[] = [];

/** Asks rcloud for a heap report and waits for the file (src/util/heap-report.ts). */
async function heapFigures(dir: string): Promise<{ heap_mb: number; objects: number }> {
  const before = new Set(readdirSync(dir));
  process.kill(server.pid, "SIGUSR2");
  for (let waited = 0; waited < 30_000; waited += 100) {
    const file = readdirSync(dir).find((f) => !before.has(f) && f.endsWith(".json"));
    if (file) {
      const report = JSON.parse(readFileSync(join(dir, file), "utf8")) as HeapReport;
      heapReports.push(report);
      return { heap_mb: Math.round((report.heap_bytes / 2 ** 20) * 10) / 10, objects: report.object_count };
    }
    await Bun.sleep(100);
  }
  throw new Error("rcloud wrote no heap report within 30 s of SIGUSR2");
}

/** The object types whose live count grew most from the first heap report to the last. */
function heapGrowth(top = 12): Record<string, number> {
  const first = heapReports[0]?.object_type_counts ?? {};
  const last = heapReports[heapReports.length - 1]?.object_type_counts ?? {};
  const growth = Object.keys({ ...first, ...last }).map((k) => [k, (last[k] ?? 0) - (first[k] ?? 0)] as const);
  return Object.fromEntries(growth.sort((a, b) => b[1] - a[1]).slice(0, top));
}

let serial = 0;
let failures = 0;
const errors: string[] = [];
const fail = (what: string) => {
  failures++;
  if (errors.length < 20) errors.push(what);
};

/** Creates a VM and logs in to it by SSH; its name, or null when that failed. */
async function createAndCheck(): Promise<string | null> {
  const name = `rcsoak-${process.pid}-${serial++}`;
  const r = await api("POST", "/vms", { name, image: "rcloud-tiny", ssh_public_key: key.publicKey, ssh_user: "kdevops" });
  if (r.status !== 201) {
    fail(`create ${name}: ${r.status} ${JSON.stringify(r.json).slice(0, 200)}`);
    return null;
  }
  if (!(await sshCheck(name))) return name;
  return name;
}

async function sshCheck(name: string): Promise<boolean> {
  const vm = (await api("GET", `/vms/${name}`)).json;
  const port = vm?.network?.ssh_port;
  if (!port) {
    fail(`${name}: no ssh_port`);
    return false;
  }
  try {
    await waitForSsh({ port, user: vm.ssh?.user ?? "kdevops", key: key.privateKey }, "echo ok", 240_000);
    return true;
  } catch (e) {
    fail(`${name}: ${(e as Error).message.slice(0, 200)}`);
    return false;
  }
}

async function cycle(name: string): Promise<void> {
  const stop = await api("POST", `/vms/${name}/stop`);
  if (stop.status !== 200) fail(`stop ${name}: ${stop.status}`);
  const start = await api("POST", `/vms/${name}/start`);
  if (start.status !== 200) fail(`start ${name}: ${start.status}`);
  else await sshCheck(name);
  const del = await api("DELETE", `/vms/${name}`);
  if (del.status !== 200) fail(`delete ${name}: ${del.status}`);
}

let result: Record<string, unknown> = {};
try {
  const alive: string[] = [];
  // The first N, a few at a time (TCG boots are CPU-bound).
  for (let i = 0; i < vmCount; i += 3) {
    const made = await Promise.all(Array.from({ length: Math.min(3, vmCount - i) }, createAndCheck));
    for (const n of made) if (n) alive.push(n);
  }
  // Warm-up: each operation of the loop once, as in the loop.
  const startCold = await reading();
  for (let k = 0; k < warmupCycles; k++) {
    const oldest = alive.shift();
    if (oldest) await cycle(oldest);
    const fresh = await createAndCheck();
    if (fresh) alive.push(fresh);
  }
  const start = await reading();
  const t0 = Date.now();
  let cycles = 0;
  // Readings along the way too: two points cannot tell a leak from a heap that settles.
  const samples: (Reading & { minute: number; cycles: number })[] = [];
  let nextSample = t0 + sampleMinutes * 60_000;
  while (Date.now() - t0 < minutes * 60_000) {
    const oldest = alive.shift();
    if (oldest) await cycle(oldest);
    const fresh = await createAndCheck();
    if (fresh) alive.push(fresh);
    cycles++;
    if (Date.now() >= nextSample) {
      const r = { minute: Math.round((Date.now() - t0) / 6_000) / 10, cycles, ...(await reading()) };
      samples.push(r);
      console.error(`soak: ${JSON.stringify(r)}`);
      nextSample += sampleMinutes * 60_000;
    }
  }
  const end = await reading();
  const ratioFrom = (from: Reading, k: keyof Reading) => (from[k] && end[k] ? Math.round(((end[k] as number) / (from[k] as number)) * 100) / 100 : null);
  const ratio = (k: keyof Reading) => ratioFrom(start, k);
  result = {
    minutes,
    vms: vmCount,
    cycles,
    failures,
    errors,
    warmup_cycles: warmupCycles,
    start_cold: startCold,
    start,
    samples,
    end,
    ratios: { rss: ratio("rss_mb"), fds: ratio("fds"), libvirt_clients: ratio("libvirt_clients"), libvirtd_fds: ratio("libvirtd_fds") },
    ratios_cold: { rss: ratioFrom(startCold, "rss_mb"), fds: ratioFrom(startCold, "fds") },
    ...(heapDir ? { heap_ratio: ratio("heap_mb"), objects_ratio: ratio("objects"), heap_growth_by_type: heapGrowth() } : {}),
  };
} finally {
  await server.stop();
}
console.log(JSON.stringify(result));
process.exit(0);
