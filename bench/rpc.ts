/**
 * bun run bench:rpc [--pairs 7] [--round-seconds 1] [--concurrency 8] [--domains 16] [--busy-poll-us N] [--warmup-seconds 8] [--verbose]
 *
 * Throughput and CPU cost of a fixed call mix (lookup by name + get XML desc + get info,
 * round robin over test-driver domains) through our client and through libvirt's C client
 * (python3-libvirt), against the same libvirtd. The two alternate in short rounds — at least
 * 7 pairs per phase, which one goes first alternating from pair to pair, the phases taking
 * turns — so that a burst of load from elsewhere on the host hits both sides alike; each
 * phase reports the median of the per-pair ratios and their min–max. Per round it also takes
 * the client's own CPU time (user + system) and libvirtd's, per call.
 *
 * Phases: seq (one caller), conc (8 callers on one connection), pool (8 callers on a
 * LibvirtPool, what the libvirt driver uses; the C side as in conc), ceiling (32 callers on 8
 * connections on both sides: the most calls/s this daemon serves for the mix), floor (the
 * floor client, bench/rpc_floor_client.c, against C, one caller: the sequential ratio no
 * client that sleeps while it waits can beat on this host), bun_floor (the same for a client in
 * Bun's event loop, bench/rpc-bun-floor.ts).
 * Prints one JSON line; `seq_model` (seqModel below) says what the sequential ratio can be at
 * best and what our CPU per call predicts for it. Starts the test rig if it is not running,
 * and stops it again if it started it.
 */
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { LibvirtClient, LibvirtPool, remoteProcedures as P, type LibvirtClientOptions } from "../src/libvirt/index.ts";
import { BunFloorClient } from "./rpc-bun-floor.ts";
import { arg, daemonMark, defineDomains, mix, type Caller } from "./rpc-mix.ts";

const repo = resolve(import.meta.dir, "..");
const rigDir = process.env.RCLOUD_RIG_DIR ?? "/tmp/rcloud-rig";

const pairs = Math.max(7, arg("pairs", 7));
const roundSeconds = arg("round-seconds", 1);
const concurrency = arg("concurrency", 8);
const domainCount = arg("domains", 16);
const busyPollArg = arg("busy-poll-us", -1);
const warmupSeconds = arg("warmup-seconds", 8);
const verbose = process.argv.includes("--verbose");
const clientOpts: LibvirtClientOptions = busyPollArg >= 0 ? { busyPollUs: busyPollArg } : {};

function sh(cmd: string[]): string {
  const r = Bun.spawnSync(cmd, {
    cwd: repo,
    stdout: "pipe",
    stderr: "inherit",
  });
  if (r.exitCode !== 0) throw new Error(`${cmd.join(" ")} failed (${r.exitCode})`);
  return r.stdout.toString();
}

/** One round's count and costs: calls, wall seconds, the client's and libvirtd's CPU (µs). */
interface Round {
  calls: number;
  seconds: number;
  cpuUs: number;
  daemonCpuUs: number;
  /** libvirtd's context switches (all threads). */
  daemonCsw: number;
}

function processCpuUs(): number {
  const u = process.cpuUsage();
  return u.user + u.system;
}

/** `callers` concurrent mixes on one client (or pool) for `seconds`. */
async function ourRound(client: Caller, names: string[], callers: number, seconds: number, daemonPid: number): Promise<Round> {
  const cpu0 = processCpuUs();
  const daemon = daemonMark(daemonPid);
  const t0 = performance.now();
  const stopAt = t0 + seconds * 1000;
  const per = await Promise.all(Array.from({ length: callers }, (_, k) => mix(client, names, stopAt, k)));
  const elapsed = (performance.now() - t0) / 1000;
  return {
    calls: per.reduce((a, b) => a + b, 0),
    seconds: elapsed,
    cpuUs: processCpuUs() - cpu0,
    ...daemon(),
  };
}

/**
 * A reference side: one long-lived process that runs a round per command line. The C client
 * (python3-libvirt: bench/rpc_c_client.py) and the floor (bench/rpc_floor_client.c) speak the
 * same lines.
 */
class ReferenceClient {
  private readonly proc;
  private readonly lines: AsyncIterator<string>;

  constructor(
    private readonly label: string,
    argv: string[],
  ) {
    this.proc = Bun.spawn(argv, {
      cwd: repo,
      stdin: "pipe",
      stdout: "pipe",
      stderr: "inherit",
    });
    this.lines = readLines(this.proc.stdout);
  }

  private async next(): Promise<Record<string, number | boolean>> {
    const r = await this.lines.next();
    if (r.done) throw new Error(`the ${this.label} side exited (${await this.proc.exited})`);
    return JSON.parse(r.value) as Record<string, number | boolean>;
  }

  async ready(): Promise<void> {
    await this.next();
  }

  async round(callers: number, sessions: number, seconds: number, daemonPid: number): Promise<Round> {
    const daemon = daemonMark(daemonPid);
    this.proc.stdin.write(JSON.stringify({ callers, sessions, seconds }) + "\n");
    await this.proc.stdin.flush();
    const r = await this.next();
    return {
      calls: r.calls as number,
      seconds: r.seconds as number,
      cpuUs: r.cpu_us as number,
      ...daemon(),
    };
  }

  async close(): Promise<void> {
    await this.proc.stdin.end();
    await this.proc.exited;
  }
}

async function* readLines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let buf = "";
  for await (const chunk of stream) {
    buf += decoder.decode(chunk, { stream: true });
    for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
      yield buf.slice(0, nl);
      buf = buf.slice(nl + 1);
    }
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}
const r2 = (x: number) => Math.round(x * 100) / 100;
const r1 = (x: number) => Math.round(x * 10) / 10;
const rate = (r: Round) => r.calls / r.seconds;

/**
 * One caller, one call at a time: a call's time is the client's own CPU for it (all on the
 * path: it sends, sleeps, is woken, decodes, sends the next) plus what the daemon and the
 * wake-ups add, the same for any client. From each pair's C round: the ratio a client that
 * used no CPU at all would reach (`zero_cpu_bound`), and the ratio predicted for ours from
 * its CPU per call (`model`), to check the model against the measured ratio; and the CPU
 * per call our client would need for a ratio of 1.2 (`cpu_us_for_1_2`).
 */
function seqModel(p: PhaseResult) {
  const perPair = p.ours.map((o, k) => {
    const c = p.c[k]!;
    const cCall = (c.seconds * 1e6) / c.calls;
    const cCpu = c.cpuUs / c.calls;
    const oursCpu = o.cpuUs / o.calls;
    return { bound: cCall / (cCall - cCpu), model: cCall / (cCall - cCpu + oursCpu), need: cCall / 1.2 - (cCall - cCpu) };
  });
  return {
    zero_cpu_bound: r2(median(perPair.map((x) => x.bound))),
    model: r2(median(perPair.map((x) => x.model))),
    cpu_us_for_1_2: r1(median(perPair.map((x) => x.need))),
  };
}

interface PhaseResult {
  ours: Round[];
  c: Round[];
}

interface Phase {
  name: string;
  ours: () => Promise<Round>;
  c: () => Promise<Round>;
}

/**
 * `pairs` pairs of rounds of every phase. The phases take turns (pair 1 of each, then pair 2
 * of each, ...) so that a slow drift — the host's load, the JIT's last compiles — touches all
 * of them alike; within a pair ours goes first in even pairs and C first in odd ones.
 */
async function runPhases(phases: Phase[]): Promise<PhaseResult[]> {
  const results: PhaseResult[] = phases.map(() => ({ ours: [], c: [] }));
  for (let k = 0; k < pairs; k++) {
    for (const [i, phase] of phases.entries()) {
      const result = results[i]!;
      if (k % 2 === 0) {
        result.ours.push(await phase.ours());
        result.c.push(await phase.c());
      } else {
        result.c.push(await phase.c());
        result.ours.push(await phase.ours());
      }
      if (verbose) {
        const o = result.ours[k]!;
        const x = result.c[k]!;
        console.error(
          `${phase.name} ${k + 1}/${pairs}: ours ${r1(rate(o))}/s cpu ${r1(o.cpuUs / o.calls)} µs daemon ${r1(o.daemonCpuUs / o.calls)} µs | ` +
            `C ${r1(rate(x))}/s cpu ${r1(x.cpuUs / x.calls)} µs daemon ${r1(x.daemonCpuUs / x.calls)} µs | ratio ${r2(rate(o) / rate(x))}`,
        );
      }
    }
  }
  return results;
}

/** Medians of one phase: rates, the per-pair ratio with its range, and CPU per call. */
function summarize(p: PhaseResult) {
  const ratios = p.ours.map((o, k) => rate(o) / rate(p.c[k]!));
  const perCall = (rs: Round[], pick: (r: Round) => number, scale = 10) => Math.round(median(rs.map((r) => pick(r) / r.calls)) * scale) / scale;
  return {
    calls_s: r1(median(p.ours.map(rate))),
    c_calls_s: r1(median(p.c.map(rate))),
    ratio: r2(median(ratios)),
    ratio_range: [r2(Math.min(...ratios)), r2(Math.max(...ratios))],
    cpu_us_per_call: perCall(p.ours, (r) => r.cpuUs),
    c_cpu_us_per_call: perCall(p.c, (r) => r.cpuUs),
    daemon_cpu_us_per_call: perCall(p.ours, (r) => r.daemonCpuUs),
    c_daemon_cpu_us_per_call: perCall(p.c, (r) => r.daemonCpuUs),
    daemon_csw_per_call: perCall(p.ours, (r) => r.daemonCsw, 100),
    c_daemon_csw_per_call: perCall(p.c, (r) => r.daemonCsw, 100),
  };
}

/** Compiles the floor client (bench/rpc_floor_client.c) into `dir`; returns the binary's path. */
function buildFloorClient(dir: string): string {
  const out = join(dir, "rpc_floor_client");
  const r = Bun.spawnSync(["cc", "-O2", "-o", out, "bench/rpc_floor_client.c"], { cwd: repo, stdout: "inherit", stderr: "inherit" });
  if (r.exitCode !== 0) throw new Error("bench:rpc compiles its floor client with cc: apt-get install gcc libc6-dev (scripts/lib/install-deps.sh does)");
  return out;
}

const startedRig = !existsSync(join(rigDir, "env.json"));
if (startedRig) {
  sh(["bash", "scripts/lib/install-deps.sh"]);
  sh(["bash", "scripts/lib/rig.sh", "up"]);
}
try {
  const env = JSON.parse(await Bun.file(join(rigDir, "env.json")).text()) as {
    instances: { main: { socket: string; libvirtdPid: number } };
  };
  const uri = `test+unix:///default?socket=${env.instances.main.socket}`;
  const daemonPid = env.instances.main.libvirtdPid;
  const client = await LibvirtClient.connect(uri, clientOpts);
  const { names, doms } = await defineDomains(client, `rcbench-${process.pid}`, domainCount);
  // Our connection stays open throughout, so the test driver keeps the domains for the C side.
  const buildDir = mkdtempSync(join(tmpdir(), "rcloud-bench-rpc-"));
  const floorBinary = buildFloorClient(buildDir);
  const cside = new ReferenceClient("python3-libvirt (is python3-libvirt installed?)", ["/usr/bin/python3", "bench/rpc_c_client.py", uri, ...names]);
  const floor = new ReferenceClient("floor client", [floorBinary, env.instances.main.socket, ...names]);
  const bunFloor = await BunFloorClient.connect(env.instances.main.socket, names, doms);
  const bunFloorRound = async (seconds: number): Promise<Round> => {
    const daemon = daemonMark(daemonPid);
    return { ...(await bunFloor.round(seconds)), ...daemon() };
  };
  const pool = await LibvirtPool.connect(uri, {
    ...clientOpts,
    minSessions: 2,
  });
  const wide = await LibvirtPool.connect(uri, {
    ...clientOpts,
    minSessions: 8,
  });
  try {
    await cside.ready();
    await floor.ready();
    // Warm-up. Our side runs each phase's shape untimed first, long enough for the JIT to
    // finish its optimizing compiles (which take seconds of a background thread's CPU on a
    // busy 2-core host): the figures are a warm server's, as rcloud runs for days. The C side
    // has no JIT; it only opens its extra connections.
    const w = warmupSeconds / 8;
    await ourRound(client, names, 1, 2 * w, daemonPid);
    await ourRound(client, names, concurrency, 4 * w, daemonPid);
    await ourRound(pool, names, concurrency, w, daemonPid);
    await ourRound(wide, names, concurrency * 4, w, daemonPid);
    await bunFloorRound(w);
    await cside.round(concurrency, 1, 0.5, daemonPid);
    await cside.round(concurrency * 4, 8, 0.3, daemonPid);

    const s = roundSeconds;
    // The ceiling phase is the daemon's ceiling for the mix: 4x the callers over 8 connections,
    // on both sides. No client can go faster than libvirtd serves; with the C conc figure it
    // bounds conc_ratio.
    // The floor phase pairs the floor client (blocking write and read of prebuilt packets,
    // nothing decoded: the least a client that sleeps while it waits can spend) with the C
    // client, one caller each: the sequential ratio no sleeping client can beat here.
    // The bun_floor phase is the same for a client in Bun's event loop.
    const [seqRounds, concRounds, poolRounds, ceilingRounds, floorRounds, bunFloorRounds] = await runPhases([
      { name: "seq", ours: () => ourRound(client, names, 1, s, daemonPid), c: () => cside.round(1, 1, s, daemonPid) },
      { name: "conc", ours: () => ourRound(client, names, concurrency, s, daemonPid), c: () => cside.round(concurrency, 1, s, daemonPid) },
      { name: "pool", ours: () => ourRound(pool, names, concurrency, s, daemonPid), c: () => cside.round(concurrency, 1, s, daemonPid) },
      { name: "ceiling", ours: () => ourRound(wide, names, concurrency * 4, s, daemonPid), c: () => cside.round(concurrency * 4, 8, s, daemonPid) },
      { name: "floor", ours: () => floor.round(1, 1, s, daemonPid), c: () => cside.round(1, 1, s, daemonPid) },
      { name: "bun_floor", ours: () => bunFloorRound(s), c: () => cside.round(1, 1, s, daemonPid) },
    ]);
    const seq = summarize(seqRounds!);
    const conc = summarize(concRounds!);
    const poolConc = summarize(poolRounds!);
    const ceiling = summarize(ceilingRounds!);
    const seqFloor = summarize(floorRounds!);
    const seqBunFloor = summarize(bunFloorRounds!);
    const ceilings = ceilingRounds!.ours.map((o, k) => Math.max(rate(o), rate(ceilingRounds!.c[k]!)));
    const ceilingMedian = median(ceilings);

    const phases = { seq, conc, pool_conc: poolConc, ceiling };
    const byPhase = (key: keyof typeof seq) => Object.fromEntries(Object.entries(phases).map(([k, v]) => [k, v[key]]));
    console.log(
      JSON.stringify({
        seq_ratio: seq.ratio,
        seq_ratio_range: seq.ratio_range,
        seq_model: seqModel(seqRounds!),
        // The floor client against C, one caller (its own rounds): "ours" in it is the floor.
        seq_floor_ratio: seqFloor.ratio,
        seq_floor_ratio_range: seqFloor.ratio_range,
        floor_cpu_us_per_call: seqFloor.cpu_us_per_call,
        floor_daemon_cpu_us_per_call: seqFloor.daemon_cpu_us_per_call,
        seq_bun_floor_ratio: seqBunFloor.ratio,
        seq_bun_floor_ratio_range: seqBunFloor.ratio_range,
        bun_floor_cpu_us_per_call: seqBunFloor.cpu_us_per_call,
        bun_floor_daemon_cpu_us_per_call: seqBunFloor.daemon_cpu_us_per_call,
        conc_ratio: conc.ratio,
        conc_ratio_range: conc.ratio_range,
        pool_conc_ratio: poolConc.ratio,
        pool_conc_ratio_range: poolConc.ratio_range,
        seq_calls_s: seq.calls_s,
        c_seq_calls_s: seq.c_calls_s,
        conc_calls_s: conc.calls_s,
        c_conc_calls_s: conc.c_calls_s,
        pool_conc_calls_s: poolConc.calls_s,
        // µs of CPU per call, per phase: our client, the C client (python3-libvirt), and
        // libvirtd while serving each of them.
        cpu_us_per_call: byPhase("cpu_us_per_call"),
        c_cpu_us_per_call: byPhase("c_cpu_us_per_call"),
        daemon_cpu_us_per_call: byPhase("daemon_cpu_us_per_call"),
        c_daemon_cpu_us_per_call: byPhase("c_daemon_cpu_us_per_call"),
        // libvirtd's context switches per call (all its threads): its thread hand-offs and wake-ups.
        daemon_csw_per_call: byPhase("daemon_csw_per_call"),
        c_daemon_csw_per_call: byPhase("c_daemon_csw_per_call"),
        // Per pair the most either side reached with 32 callers on 8 connections (median, range).
        daemon_ceiling_calls_s: r1(ceilingMedian),
        daemon_ceiling_range: [r1(Math.min(...ceilings)), r1(Math.max(...ceilings))],
        wide_calls_s: ceiling.calls_s,
        c_wide_calls_s: ceiling.c_calls_s,
        c_conc_of_ceiling: r2(conc.c_calls_s / ceilingMedian),
        conc_ratio_bound: r2(ceilingMedian / conc.c_calls_s),
        busy_poll_us: clientOpts.busyPollUs ?? "default",
        pairs,
        round_seconds: roundSeconds,
        warmup_seconds: warmupSeconds,
        concurrency,
        domains: domainCount,
      }),
    );
  } finally {
    await cside.close().catch(() => {});
    await floor.close().catch(() => {});
    bunFloor.close();
    rmSync(buildDir, { recursive: true, force: true });
    await pool.close();
    await wide.close();
    for (const dom of doms) await client.call(P.domainUndefine, { dom }).catch(() => {});
    await client.close();
  }
} finally {
  if (startedRig) sh(["bash", "scripts/lib/rig.sh", "down"]);
}
