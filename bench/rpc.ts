/**
 * bun run bench:rpc [--seconds 5] [--concurrency 8] [--domains 16]
 *
 * Throughput of a fixed call mix (lookup by name + get XML desc + get info, round robin over
 * test-driver domains) through our client and, in the same run against the same libvirtd,
 * through libvirt's C client (python3-libvirt). Prints one JSON line with the ratios, and
 * the daemon's ceiling for the mix (the most any client reached, incl. 32 callers on 8
 * sessions), since concurrent throughput is bounded by libvirtd, not by either client.
 * Starts the test rig if it is not running, and stops it again if it started it.
 */
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { LibvirtClient, LibvirtPool, remoteProcedures as P } from "../src/libvirt/index.ts";

const repo = resolve(import.meta.dir, "..");
const rigDir = process.env.RCLOUD_RIG_DIR ?? "/tmp/rcloud-rig";

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
}
const seconds = arg("seconds", 5);
const concurrency = arg("concurrency", 8);
const domainCount = arg("domains", 16);

function sh(cmd: string[]): string {
  const r = Bun.spawnSync(cmd, { cwd: repo, stdout: "pipe", stderr: "inherit" });
  if (r.exitCode !== 0) throw new Error(`${cmd.join(" ")} failed (${r.exitCode})`);
  return r.stdout.toString();
}

async function mix(client: Pick<LibvirtClient, "call">, names: string[], stopAt: number, offset: number): Promise<number> {
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

/** Calls per second of `callers` concurrent mixes on one client for the benchmark's time. */
async function concurrentRate(client: Pick<LibvirtClient, "call">, names: string[], callers: number): Promise<number> {
  const t0 = performance.now();
  const stopAt = t0 + seconds * 1000;
  const per = await Promise.all(Array.from({ length: callers }, (_, k) => mix(client, names, stopAt, k)));
  return per.reduce((a, b) => a + b, 0) / ((performance.now() - t0) / 1000);
}

const startedRig = !existsSync(join(rigDir, "env.json"));
if (startedRig) {
  sh(["bash", "scripts/lib/install-deps.sh"]);
  sh(["bash", "scripts/lib/rig.sh", "up"]);
}
try {
  const env = JSON.parse(await Bun.file(join(rigDir, "env.json")).text()) as { instances: { main: { socket: string } } };
  const uri = `test+unix:///default?socket=${env.instances.main.socket}`;
  const client = await LibvirtClient.connect(uri);
  const names = Array.from({ length: domainCount }, (_, i) => `rcbench-${process.pid}-${i}`);
  const doms = [];
  for (const name of names) {
    const { dom } = await client.call(P.domainDefineXml, {
      xml: `<domain type='test'><name>${name}</name><memory>65536</memory><vcpu>1</vcpu><os><type>hvm</type></os></domain>`,
    });
    doms.push(dom);
  }
  try {
    await mix(client, names, performance.now() + 500, 0); // warm-up (JIT, caches)
    const t0 = performance.now();
    const seqCalls = await mix(client, names, t0 + seconds * 1000, 0);
    const seq = seqCalls / ((performance.now() - t0) / 1000);

    const conc = await concurrentRate(client, names, concurrency);

    // The same 8 callers through a LibvirtPool (what the libvirt driver uses): extra
    // sessions let libvirtd work on more than 5 of our calls at once.
    const pool = await LibvirtPool.connect(uri, { minSessions: 2 });
    const poolConc = await concurrentRate(pool, names, concurrency);
    await pool.close();

    // The daemon's own ceiling for this mix: 4x the callers over 8 sessions. No client can
    // go faster than libvirtd serves; with the C figure below it bounds conc_ratio.
    const wide = await LibvirtPool.connect(uri, { minSessions: 8 });
    const wideConc = await concurrentRate(wide, names, concurrency * 4);
    await wide.close();

    // Our connection stays open so the test driver keeps the domains for the C client.
    const c = JSON.parse(sh(["/usr/bin/python3", "bench/rpc_c_client.py", uri, String(seconds), String(concurrency), ...names])) as {
      c_seq_calls_s: number;
      c_conc_calls_s: number;
    };
    const round = (x: number) => Math.round(x * 10) / 10;
    const ceiling = Math.max(conc, poolConc, wideConc, c.c_conc_calls_s);
    console.log(
      JSON.stringify({
        seq_calls_s: round(seq),
        conc_calls_s: round(conc),
        c_seq_calls_s: c.c_seq_calls_s,
        c_conc_calls_s: c.c_conc_calls_s,
        seq_ratio: Math.round((seq / c.c_seq_calls_s) * 100) / 100,
        conc_ratio: Math.round((conc / c.c_conc_calls_s) * 100) / 100,
        pool_conc_calls_s: round(poolConc),
        pool_conc_ratio: Math.round((poolConc / c.c_conc_calls_s) * 100) / 100,
        // The most calls/s any client reached against this daemon in this run (incl. 32
        // callers on 8 sessions), and how close the C client came to it.
        daemon_ceiling_calls_s: round(ceiling),
        c_conc_of_ceiling: Math.round((c.c_conc_calls_s / ceiling) * 100) / 100,
        conc_ratio_bound: Math.round((ceiling / c.c_conc_calls_s) * 100) / 100,
        wide_calls_s: round(wideConc),
        seconds,
        concurrency,
        domains: domainCount,
      }),
    );
  } finally {
    for (const dom of doms) await client.call(P.domainUndefine, { dom }).catch(() => {});
    await client.close();
  }
} finally {
  if (startedRig) sh(["bash", "scripts/lib/rig.sh", "down"]);
}
