/**
 * bun bench/rpc-loop.ts [--callers 1] [--seconds 5] [--busy-poll-us 0] [--pool N] [--warmup 0.3] [--max-in-flight 5] [--c | --floor]
 *
 * One side of bench:rpc alone, for profilers (perf, strace -c, bun --cpu-prof): the same call
 * mix against the rig's main libvirtd for a fixed time, through our client, (--c) through
 * python3-libvirt (bench/rpc_c_client.py, a child process: attach to it, or to libvirtd), or
 * (--floor, one caller) through the Bun floor client (bench/rpc-bun-floor.ts).
 * Prints calls/s and the client's CPU per call. Needs a running rig (scripts/lib/rig.sh up).
 */
import { join } from "node:path";
import { LibvirtClient, LibvirtPool, remoteProcedures as P } from "../src/libvirt/index.ts";
import { BunFloorClient } from "./rpc-bun-floor.ts";
import { arg, daemonMark, defineDomains, mix } from "./rpc-mix.ts";

const callers = arg("callers", 1);
const seconds = arg("seconds", 5);
const busyPollUs = arg("busy-poll-us", 0);
const poolSessions = arg("pool", 0);
const warmupSeconds = arg("warmup", 0.3);
const maxInFlight = arg("max-in-flight", 5);

const rigDir = process.env.RCLOUD_RIG_DIR ?? "/tmp/rcloud-rig";
const env = JSON.parse(await Bun.file(join(rigDir, "env.json")).text()) as { instances: { main: { socket: string; libvirtdPid: number } } };
const daemonPid = env.instances.main.libvirtdPid;
const uri = `test+unix:///default?socket=${env.instances.main.socket}`;
const client = await LibvirtClient.connect(uri, { busyPollUs, maxInFlight });
const target = poolSessions > 0 ? await LibvirtPool.connect(uri, { busyPollUs, maxInFlight, minSessions: poolSessions }) : client;
const { names, doms } = await defineDomains(client, `rcloop-${process.pid}`, 16);

let result: { calls: number; seconds: number; cpuUs: number };
let daemon = daemonMark(daemonPid);
let ru0: ReturnType<typeof process.resourceUsage> | null = null;
if (process.argv.includes("--c")) {
  const py = Bun.spawn(["/usr/bin/python3", `${import.meta.dir}/rpc_c_client.py`, uri, ...names], {
    stdin: "pipe",
    stdout: "pipe",
    stderr: "inherit",
  });
  py.stdin.write(JSON.stringify({ callers, sessions: Math.max(1, poolSessions), seconds }) + "\n");
  await py.stdin.end();
  const lines = (await new Response(py.stdout).text()).trim().split("\n");
  const r = JSON.parse(lines[lines.length - 1]!) as { calls: number; seconds: number; cpu_us: number };
  result = { calls: r.calls, seconds: r.seconds, cpuUs: r.cpu_us };
} else if (process.argv.includes("--floor")) {
  const floor = await BunFloorClient.connect(env.instances.main.socket, names, doms);
  await floor.round(warmupSeconds);
  daemon = daemonMark(daemonPid);
  ru0 = process.resourceUsage();
  result = await floor.round(seconds);
  floor.close();
} else {
  await mix(target, names, performance.now() + warmupSeconds * 1000, 0); // warm-up (JIT)
  daemon = daemonMark(daemonPid);
  const cpu0 = process.cpuUsage();
  ru0 = process.resourceUsage();
  const t0 = performance.now();
  const perCaller = await Promise.all(Array.from({ length: callers }, (_, k) => mix(target, names, t0 + seconds * 1000, k)));
  const cpu = process.cpuUsage(cpu0);
  result = { calls: perCaller.reduce((a, b) => a + b, 0), seconds: (performance.now() - t0) / 1000, cpuUs: cpu.user + cpu.system };
}
const { daemonCpuUs, daemonCsw } = daemon();
const daemonCsPerCall = Math.round((daemonCsw / result.calls) * 100) / 100;
const daemonPerCall = Math.round((daemonCpuUs / result.calls) * 10) / 10;
const side = process.argv.includes("--c") ? "c" : process.argv.includes("--floor") ? "bun_floor" : "ours";
const perCall = Math.round((result.cpuUs / result.calls) * 10) / 10;
// Our process only: page faults and context switches per call (kernel work besides syscalls).
const ru1 = process.resourceUsage();
const per = (n: number) => Math.round((n / result.calls) * 100) / 100;
const counters = ru0
  ? {
      faults_per_call: per(ru1.minorPageFault - ru0.minorPageFault),
      vcsw_per_call: per(ru1.voluntaryContextSwitches - ru0.voluntaryContextSwitches),
      ivcsw_per_call: per(ru1.involuntaryContextSwitches - ru0.involuntaryContextSwitches),
    }
  : {};
console.log(
  JSON.stringify({
    side,
    callers,
    calls_s: Math.round(result.calls / result.seconds),
    cpu_us_per_call: perCall,
    ...(ru0 ? { user_us_per_call: Math.round(((ru1.userCPUTime - ru0.userCPUTime) / result.calls) * 10) / 10 } : {}),
    daemon_cpu_us_per_call: daemonPerCall,
    daemon_csw_per_call: daemonCsPerCall,
    ...counters,
  }),
);
for (const dom of doms) await client.call(P.domainUndefine, { dom });
if (target !== client) await (target as LibvirtPool).close();
await client.close();
