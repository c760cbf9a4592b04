/**
 * bun run chaos [--rounds N] [--lanes L] [--creates C] [--fuzz-requests F (default 20,000)] [--max-minutes M]
 *
 * The reliability campaign of docs/reliability.md against the test rig (started if it is not
 * running, and stopped again then):
 *
 * - fault 1: rcloud SIGKILLed at every fault point (src/util/fault-points.ts) on both drivers,
 *   N rounds (default 6), L sites per driver at once (default 2), no new kill after M minutes
 *   (default: no limit; the JSON line then says how many rounds were done); after each kill a restart,
 *   POST /reconcile and an independent look at the pool / state directory, the domains and
 *   the QEMU processes (test/helpers/chaos.ts: killAt);
 * - fault 2: libvirtd SIGKILLed during C concurrent creates (default 50) on the rig's `fault`
 *   daemon, then restarted (libvirtdKilledDuringCreates), once;
 * - fault 3: the QEMU process of a running VM SIGKILLed on both drivers, once per round: the
 *   time until the API shows the crash;
 * - fault 4: a create on a nearly full pool (bench/storage-full.ts), libvirt and the QEMU driver;
 * - the fuzzer (bench/fuzz.ts): F requests against a served rcloud.
 *
 * Prints one JSON line: kill_points, kills, orphans_after_reconcile, lost_vms, hung_requests,
 * fuzz_requests, fuzz_5xx, max_rss_mb, and the details (per-driver counts, fault 2's answers,
 * crash detection times, findings).
 */
import { runStorageFull, runStorageFullQemu } from "./storage-full.ts";
import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { FAULT_POINTS, type FaultPoint } from "../src/util/fault-points.ts";
import { ChaosSite, type ChaosDriverKind, keptAfter, killAt, libvirtdKilledDuringCreates, vmBody } from "../test/helpers/chaos.ts";
import { waitFor } from "../test/helpers/rig.ts";

const repo = resolve(import.meta.dir, "..");
const rigDir = process.env.RCLOUD_RIG_DIR ?? "/tmp/rcloud-rig";
const arg = (name: string, def: number) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : def;
};
const rounds = arg("--rounds", 6);
const lanes = arg("--lanes", 2);
const creates = arg("--creates", 50);
const fuzzRequests = arg("--fuzz-requests", 20_000);
const maxMinutes = arg("--max-minutes", Infinity);

function sh(cmd: string[]): void {
  const r = Bun.spawnSync(cmd, { cwd: repo, stdout: "inherit", stderr: "inherit" });
  if (r.exitCode !== 0) throw new Error(`${cmd.join(" ")} failed (${r.exitCode})`);
}

const startedRig = !existsSync(join(rigDir, "env.json"));
if (startedRig) {
  sh(["bash", "scripts/lib/install-deps.sh"]);
  sh(["bash", "scripts/lib/disk-image.sh"]);
  sh(["bash", "scripts/lib/rig.sh", "up"]);
}

const findings: string[] = [];
const killed = new Set<string>();
let kills = 0;
let orphans = 0;
let lost = 0;
let hung = 0;
let nameReuseFailures = 0;
let unexpectedOutcome = 0;
const crashDetectMs: Record<ChaosDriverKind, number[]> = { libvirt: [], qemu: [] };
const perDriver: Record<ChaosDriverKind, { kills: number; kept: number; removed: number }> = { libvirt: { kills: 0, kept: 0, removed: 0 }, qemu: { kills: 0, kept: 0, removed: 0 } };
const sites: ChaosSite[] = [];
const roundsDone: Record<ChaosDriverKind, number> = { libvirt: 0, qemu: 0 };

/** Fault 3 once on `site`: a running VM's QEMU SIGKILLed; ms until the API shows crash_reason. */
async function qemuKill(site: ChaosSite, name: string): Promise<void> {
  await site.start();
  const made = await site.req("POST", "/api/v1/vms", vmBody(name, { extra_disks: [] }));
  if (made?.status !== 201) throw new Error(`fault 3 create: ${JSON.stringify(made)}`);
  const id = made.json.id as string;
  const pid = (await site.artefacts()).processes.get(id);
  if (!pid) throw new Error(`fault 3: no QEMU for ${id}`);
  const t0 = Date.now();
  process.kill(pid, "SIGKILL");
  await waitFor("the crash to show", async () => (await site.req("GET", `/api/v1/vms/${id}`))?.json?.crash_reason, 60_000, 20);
  crashDetectMs[site.kind].push(Date.now() - t0);
  await site.req("DELETE", `/api/v1/vms/${id}`);
  await site.stopChildren();
}

/** One lane: a site of `kind` with a VM that must survive everything, then its share of the rounds. */
async function lane(kind: ChaosDriverKind, index: number, myRounds: number): Promise<void> {
  const site = new ChaosSite(kind);
  sites.push(site);
  const keep = `keep-${index}`;
  await site.start();
  const made = await site.req("POST", "/api/v1/vms", vmBody(keep));
  if (made?.status !== 201) throw new Error(`${kind} lane ${index}: bystander create ${JSON.stringify(made)}`);
  await site.stopChildren();
  for (let r = 0; r < myRounds; r++) {
    // Alternate the order of the points between rounds.
    const points: FaultPoint[] = r % 2 === 0 ? [...FAULT_POINTS] : [...FAULT_POINTS].reverse();
    for (const point of points) {
      if (Date.now() - t0 > maxMinutes * 60_000) return;
      const o = await killAt(site, point, `c${index}-${r}-${FAULT_POINTS.indexOf(point)}`, [keep]);
      if (o.killed) {
        kills++;
        killed.add(`${kind}:${point}`);
        perDriver[kind].kills++;
      } else findings.push(`${kind} ${point}: rcloud did not die at the point`);
      if (o.kept) perDriver[kind].kept++;
      perDriver[kind].removed += o.reconcile.removed;
      orphans += o.orphans.length;
      lost += o.lost.length;
      if (!o.nameReused) nameReuseFailures++;
      if (o.kept !== keptAfter(kind, point)) unexpectedOutcome++;
      for (const f of [...o.orphans, ...o.lost]) findings.push(`${kind} ${point}: ${f}`);
      console.error(`chaos: ${kind}#${index} round ${r} ${point}: killed=${o.killed} kept=${o.kept} orphans=${o.orphans.length} lost=${o.lost.length} ${JSON.stringify(o.phases)}`);
    }
    await qemuKill(site, `q${index}-${r}`);
    roundsDone[kind]++;
  }
}

let fault2: Awaited<ReturnType<typeof libvirtdKilledDuringCreates>> | null = null;
const storageFull: Record<string, { ok: boolean; orphans: number }> = {};
let fuzz: { requests: number; fiveXx: number; maxRssMb: number; findings: string[] } | null = null;
const notRun: string[] = [];
const t0 = Date.now();
try {
  // Fault 2: libvirtd killed under many creates.
  const site2 = new ChaosSite("libvirt", { instance: "fault" });
  sites.push(site2);
  try {
    await site2.start();
    fault2 = await libvirtdKilledDuringCreates(site2, creates, 180_000, "lk");
    hung += fault2.hung;
    lost += fault2.lost.length;
    orphans += fault2.orphans.length;
    findings.push(...fault2.badAnswers, ...fault2.lost, ...fault2.orphans);
  } catch (e) {
    findings.push(`fault 2 failed: ${(e as Error).message}`);
  }
  await site2.stopChildren();
  console.error(`chaos: fault 2 done after ${Math.round((Date.now() - t0) / 1000)} s: ${JSON.stringify(fault2 && { ...fault2, badAnswers: fault2.badAnswers.length })}`);

  // Fault 1 and 3: lanes of both drivers at once; each lane takes its share of the rounds.
  const jobs: Promise<void>[] = [];
  for (const kind of ["libvirt", "qemu"] as ChaosDriverKind[]) {
    for (let l = 0; l < lanes; l++) {
      const share = Math.floor(rounds / lanes) + (l < rounds % lanes ? 1 : 0);
      if (share > 0) jobs.push(lane(kind, l, share));
    }
  }
  const settled = await Promise.allSettled(jobs);
  for (const s of settled) if (s.status === "rejected") findings.push(`lane failed: ${(s.reason as Error).message}`);

  console.error(`chaos: fault 1 and 3 done after ${Math.round((Date.now() - t0) / 1000)} s: kills=${kills} points=${killed.size} orphans=${orphans} lost=${lost}`);

  // Fault 4: a create that does not fit a nearly full pool (bench/storage-full.ts), both drivers.
  for (const [kind, run] of [["libvirt", runStorageFull], ["qemu", runStorageFullQemu]] as const) {
    try {
      const r = await run();
      storageFull[kind] = { ok: r.ok, orphans: r.orphans };
      orphans += r.orphans;
      if (!r.ok) findings.push(`storage full (${kind}): ${r.detail}`);
    } catch (e) {
      findings.push(`storage full (${kind}) failed: ${(e as Error).message}`);
    }
  }

  // The fuzzer: bench/fuzz.ts.
  const fuzzModule = join(import.meta.dir, "fuzz.ts");
  if (existsSync(fuzzModule)) {
    const mod = (await import(fuzzModule)) as { runFuzz?: (o: { baseUrl: string; token: string; requests: number; pid?: number }) => Promise<typeof fuzz> };
    if (mod.runFuzz) {
      const child = await site2.start();
      fuzz = await mod.runFuzz({ baseUrl: site2.url, token: "", requests: fuzzRequests, pid: child.pid });
      if (fuzz) findings.push(...fuzz.findings);
      await site2.stopChildren();
    } else notRun.push("fuzzer: bench/fuzz.ts has no runFuzz");
  } else notRun.push("fuzzer: bench/fuzz.ts is missing");
  await site2.stopChildren();
} finally {
  for (const s of sites) await s.cleanup().catch((e: unknown) => findings.push(`cleanup: ${(e as Error).message}`));
  if (startedRig) sh(["bash", "scripts/lib/rig.sh", "down"]);
}

const max = (xs: number[]) => (xs.length ? Math.max(...xs) : null);
console.log(
  JSON.stringify({
    kill_points: killed.size,
    kills,
    orphans_after_reconcile: orphans,
    lost_vms: lost,
    hung_requests: hung,
    fuzz_requests: fuzz?.requests ?? null,
    fuzz_5xx: fuzz?.fiveXx ?? null,
    max_rss_mb: Math.max(fuzz?.maxRssMb ?? 0, ...sites.map((s) => s.peakRssMb)),
    not_run: notRun,
    name_reuse_failures: nameReuseFailures,
    unexpected_outcomes: unexpectedOutcome,
    per_driver: perDriver,
    storage_full: storageFull,
    fault2: fault2 && { creates: fault2.creates, answered_201_before_kill: fault2.createdBeforeKill, open_at_kill: fault2.openAtKill, answered_201: fault2.created, answered_503: fault2.refused, other_answers: fault2.badAnswers.length, hung: fault2.hung, max_answer_ms: fault2.maxAnswerMs },
    crash_detect_ms_max: { libvirt: max(crashDetectMs.libvirt), qemu: max(crashDetectMs.qemu) },
    rounds,
    rounds_done: roundsDone,
    seconds: Math.round((Date.now() - t0) / 1000),
    findings: findings.slice(0, 50),
  }),
);
