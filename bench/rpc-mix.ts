/** The call mix bench:rpc measures, shared with bench/rpc-loop.ts (the profiling driver). */
import { readdirSync, readFileSync } from "node:fs";
import { LibvirtClient, remoteProcedures as P, type RemoteNonnullDomain } from "../src/libvirt/index.ts";

export type Caller = Pick<LibvirtClient, "call">;

/** `--name N` from the command line, or `fallback`. */
export function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
}

/** Lookup by name + XML + info, round robin over `names`, until `stopAt`; returns the calls made. */
export async function mix(client: Caller, names: string[], stopAt: number, offset: number): Promise<number> {
  let i = offset;
  let calls = 0;
  while (performance.now() < stopAt) {
    const { dom } = await client.call(P.domainLookupByName, { name: names[i % names.length]! });
    await client.call(P.domainGetXmlDesc, { dom, flags: 0 });
    await client.call(P.domainGetInfo, { dom });
    calls += 3;
    i++;
  }
  return calls;
}

/** Defines `count` test-driver domains named `${prefix}-${i}`. */
export async function defineDomains(client: Caller, prefix: string, count: number): Promise<{ names: string[]; doms: RemoteNonnullDomain[] }> {
  const names = Array.from({ length: count }, (_, i) => `${prefix}-${i}`);
  const doms: RemoteNonnullDomain[] = [];
  for (const name of names) {
    const xml = `<domain type='test'><name>${name}</name><memory>65536</memory><vcpu>1</vcpu><os><type>hvm</type></os></domain>`;
    doms.push((await client.call(P.domainDefineXml, { xml })).dom);
  }
  return { names, doms };
}

const clockTicks = Number(Bun.spawnSync(["getconf", "CLK_TCK"]).stdout.toString().trim()) || 100;

/** A process's user + system CPU so far, µs (all its threads, from /proc/<pid>/stat). */
export function daemonCpuUs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
  return ((Number(fields[11]) + Number(fields[12])) * 1e6) / clockTicks;
}

/** Context switches of all of a process's threads so far (voluntary + involuntary, /proc/<pid>/task/<tid>/status). */
function contextSwitches(pid: number): number {
  let n = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const status = readFileSync(`/proc/${pid}/task/${tid}/status`, "utf8");
      for (const m of status.matchAll(/^(?:non)?voluntary_ctxt_switches:\s+(\d+)$/gm)) n += Number(m[1]);
    } catch {
      // the thread ended meanwhile
    }
  }
  return n;
}

/** libvirtd's CPU and context switches from now until the returned function is called. */
export function daemonMark(pid: number): () => { daemonCpuUs: number; daemonCsw: number } {
  const cpu = daemonCpuUs(pid);
  const csw = contextSwitches(pid);
  return () => ({ daemonCpuUs: daemonCpuUs(pid) - cpu, daemonCsw: contextSwitches(pid) - csw });
}
