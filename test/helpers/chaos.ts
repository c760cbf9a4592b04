/**
 * The reliability harness shared by test/reliability/*.test.ts and `bun run chaos`
 * (bench/chaos.ts): a real rcloud server as a child process, armed with a fault point
 * (RCLOUD_FAULT_POINTS, src/util/fault-points.ts) so that it SIGKILLs itself at one step of a
 * create or delete, then restarted without it; and an independent look at what rcloud left on
 * the hypervisor (files in the pool or state directory, domains, QEMU processes), to check
 * that after reconcile every VM is complete and listed or gone, and its name can be reused.
 */
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import type { Subprocess } from "bun";
import { stringify } from "yaml";
import { FAULT_POINTS, type FaultPoint } from "../../src/util/fault-points.ts";
import { LibvirtClient, remoteProcedures as P } from "../../src/libvirt/index.ts";
import { tinyDiskImageDir } from "./guest.ts";
import { removePool, rig, rigCommand, unixUri, waitFor } from "./rig.ts";

const repo = resolve(import.meta.dir, "../..");

export type ChaosDriverKind = "libvirt" | "qemu";

/** The data disk, seed (an SSH key) and user networking (a forwarded port) give every point something to leave. */
export const TEST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMzIXpWn6P7v5mvbM5kL2Ccm9lmB6u3HdKA3q2nyRz6J chaos@rcloud";

export function vmBody(name: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { name, image: "rcloud-tiny", start: true, extra_disks: [{ size_gb: 1 }], ssh_public_key: TEST_KEY, ...extra };
}

/** rcloud's artefacts as the hypervisor has them, by VM id. */
export interface Artefacts {
  /** Files named after a VM id (pool volumes, console logs; the QEMU driver's VM directories). */
  files: Map<string, string[]>;
  /** Domains of rcloud (libvirt only), by VM id → name. */
  domains: Map<string, string>;
  /** Live QEMU processes whose command line names one of the run's VM files, by VM id → PID. */
  processes: Map<string, number>;
}

function freePort(): number {
  const l = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const p = l.port;
  l.stop(true);
  return p;
}

/** QEMU processes whose command line mentions `dir`, by the VM id in it. */
function qemuProcessesUnder(dir: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const pid of readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      if (/\) [ZX] /.test(stat)) continue;
      const cmd = readFileSync(`/proc/${pid}/cmdline`, "utf8");
      if (!cmd.startsWith("qemu-system") && !cmd.includes("/qemu-system")) continue;
      if (!cmd.includes(dir)) continue;
      const id = /(vm-[a-z0-9]{8})/.exec(cmd)?.[1];
      if (id) out.set(id, Number(pid));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** A place rcloud runs on for the campaign: its configuration and how to look at what it made. */
export class ChaosSite {
  readonly root: string;
  readonly port: number;
  readonly url: string;
  readonly configFile: string;
  private readonly poolName: string;
  private readonly poolPath: string;
  private readonly stateDir: string;
  private children: Subprocess[] = [];
  private logs = 0;
  private readonly instance: "main" | "fault";
  /** The log file of the last rcloud started. */
  lastLog = "";

  constructor(
    readonly kind: ChaosDriverKind,
    opts: { onCrash?: "restart" | "stop" | "preserve"; instance?: "main" | "fault" } = {},
  ) {
    // Short (QEMU's socket paths must fit 108 bytes) and searchable by QEMU's own user (qemu.run_as).
    this.root = mkdtempSync(join("/tmp", `rcc-${kind === "qemu" ? "q" : "l"}-`));
    chmodSync(this.root, 0o711);
    this.instance = opts.instance ?? "main";
    this.port = freePort();
    this.url = `http://127.0.0.1:${this.port}`;
    this.poolName = `rctest-chaos-${process.pid}-${Math.floor(Math.random() * 1e6)}`;
    this.poolPath = join(rig().rigDir, "pools", this.poolName);
    this.stateDir = join(this.root, "state");
    const images = tinyDiskImageDir(`${this.poolName}-images`);
    const common = {
      logging: { level: "info", format: "text" },
      server: { bind_address: `127.0.0.1:${this.port}`, state_dir: join(this.root, "server") },
      images: { base_images_dir: images },
      // vcpu_overcommit: fault 2's 50 one-vCPU creates must fit a 2-core host (16 × 2 = 32 would refuse 18 with 422).
      vm_defaults: { network_mode: "user", user_network_restrict: true, memory_mb: 128, vcpus: 1, root_disk_gb: 1, stop_timeout_s: 5, on_crash: opts.onCrash ?? "stop", vcpu_overcommit: 64 },
    };
    const config =
      kind === "libvirt"
        ? { ...common, driver: "libvirt", libvirt: { uri: unixUri("qemu", this.instance), storage_pool_name: this.poolName, storage_pool_path: this.poolPath, domain_type: "qemu" } }
        : { ...common, driver: "qemu", qemu: { accel: "tcg", state_dir: this.stateDir } };
    this.configFile = join(this.root, "rcloud.yaml");
    writeFileSync(this.configFile, stringify(config));
  }

  /** Where a VM's files are: the pool (libvirt) or the state directory (QEMU driver). */
  get dataDir(): string {
    return this.kind === "libvirt" ? this.poolPath : this.stateDir;
  }

  /** Starts rcloud (`bun src/main.ts serve`) as a child, armed with `fault` if given; resolves when it is healthy. */
  async start(fault: FaultPoint | null = null): Promise<Subprocess> {
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith("RCLOUD_")) env[k] = v;
    if (fault) env["RCLOUD_FAULT_POINTS"] = `${fault}:kill`;
    const log = join(this.root, `rcloud-${this.logs++}.log`);
    this.lastLog = log;
    const child = Bun.spawn([process.execPath, join(repo, "src/main.ts"), "serve", "--config", this.configFile], {
      cwd: repo,
      env,
      stdin: "ignore",
      stdout: Bun.file(log),
      stderr: Bun.file(log),
    });
    this.children.push(child);
    await waitFor(
      "rcloud (child) to become healthy",
      async () => {
        if (child.exitCode !== null || child.signalCode !== null) throw new Error(`rcloud exited (${child.exitCode ?? child.signalCode}): ${readFileSync(log, "utf8").slice(-2000)}`);
        const r = await fetch(`${this.url}/api/v1/health`, { signal: AbortSignal.timeout(3_000) }).catch(() => null);
        return r?.status === 200;
      },
      180_000,
      100,
    );
    return child;
  }

  /** One API call with a deadline; `null` when the connection broke (rcloud died under it). */
  async req(method: string, path: string, body?: unknown, timeoutMs = 120_000): Promise<{ status: number; json: any } | null> {
    try {
      const res = await fetch(`${this.url}${path}`, {
        method,
        headers: body !== undefined ? { "content-type": "application/json" } : {},
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(timeoutMs),
      });
      const text = await res.text();
      return { status: res.status, json: text ? JSON.parse(text) : null };
    } catch (e) {
      if ((e as Error).name === "TimeoutError") throw new Error(`${method} ${path}: no answer within ${timeoutMs} ms`);
      return null;
    }
  }

  /** Every VM file, domain and QEMU process of this site, by VM id. */
  async artefacts(): Promise<Artefacts> {
    const files = new Map<string, string[]>();
    const add = (id: string, f: string) => files.set(id, [...(files.get(id) ?? []), f]);
    const domains = new Map<string, string>();
    if (this.kind === "libvirt") {
      if (existsSync(this.poolPath)) {
        for (const f of readdirSync(this.poolPath)) {
          const id = /^(vm-[a-z0-9]{8})-/.exec(f)?.[1];
          if (id) add(id, f);
        }
      }
      const lv = await LibvirtClient.connect(unixUri("qemu", this.instance));
      try {
        const { domains: doms } = await lv.call(P.connectListAllDomains, { need_results: 1, flags: 0 });
        for (const dom of doms) {
          const { xml } = await lv.call(P.domainGetXmlDesc, { dom, flags: 0 });
          // Our disks live in our pool: a domain naming a file there is ours.
          if (!xml.includes(this.poolPath)) continue;
          const id = /(vm-[a-z0-9]{8})-root/.exec(xml)?.[1];
          if (id) domains.set(id, dom.name);
        }
      } finally {
        await lv.close();
      }
    } else {
      const vms = join(this.stateDir, "vms");
      if (existsSync(vms)) for (const id of readdirSync(vms)) for (const f of readdirSync(join(vms, id))) add(id, f);
    }
    return { files, domains, processes: qemuProcessesUnder(this.dataDir) };
  }

  /** Peak RSS (VmHWM) of the rcloud children stopped by stopChildren, MiB. */
  peakRssMb = 0;

  /** Stops every rcloud child still running: SIGTERM (graceful), SIGKILL after 20 s. */
  async stopChildren(): Promise<void> {
    for (const c of this.children) {
      try {
        const kb = Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${c.pid}/status`, "utf8"))?.[1] ?? 0);
        this.peakRssMb = Math.max(this.peakRssMb, Math.round(kb / 1024));
      } catch {
        // gone already
      }
      if (c.exitCode === null && c.signalCode === null) c.kill("SIGTERM");
      const done = await Promise.race([c.exited.then(() => true), Bun.sleep(20_000).then(() => false)]);
      if (!done) c.kill("SIGKILL");
      await c.exited;
    }
    this.children = [];
  }

  /** Kills (SIGKILL, by PID) every rcloud child still running. */
  async killChildren(): Promise<void> {
    for (const c of this.children) {
      if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
      await c.exited;
    }
    this.children = [];
  }

  /** Deletes every VM through a fresh rcloud, stops it, kills leftover QEMUs by PID, removes the pool and files. */
  async cleanup(): Promise<void> {
    await this.killChildren();
    const left = await this.artefacts().catch(() => null);
    if (!left || left.files.size > 0 || left.domains.size > 0 || left.processes.size > 0) {
      try {
        await this.start();
        const list = await this.req("GET", "/api/v1/vms");
        for (const vm of list?.json?.vms ?? []) await this.req("DELETE", `/api/v1/vms/${vm.id}`);
      } catch {
        // cleaned up below as far as possible
      }
    }
    await this.killChildren();
    for (const pid of qemuProcessesUnder(this.dataDir).values()) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // gone
      }
    }
    if (this.kind === "libvirt") {
      const lv = await LibvirtClient.connect(unixUri("qemu", this.instance));
      await removePool(lv, this.poolName);
      await lv.close();
      rmSync(this.poolPath, { recursive: true, force: true });
    }
    rmSync(join(rig().rigDir, `${this.poolName}-images`), { recursive: true, force: true });
    rmSync(this.root, { recursive: true, force: true });
  }
}

/** Points a create passes with the request of vmBody (every one of them). */
export const CREATE_POINTS = FAULT_POINTS.filter((p) => p.startsWith("create."));
export const DELETE_POINTS = FAULT_POINTS.filter((p) => p.startsWith("delete."));

/**
 * Whether a kill at `point` leaves the VM kept (listed, complete) rather than removed: after
 * the driver's commit point (libvirt: the define; QEMU driver: vm.json, written after the
 * start), and in a delete before it (libvirt: the undefine; QEMU driver: removing vm.json).
 */
export function keptAfter(kind: ChaosDriverKind, point: FaultPoint): boolean {
  const kept: Record<ChaosDriverKind, FaultPoint[]> = {
    libvirt: ["create.after-define", "create.before-start", "create.after-start", "delete.after-destroy"],
    qemu: ["create.after-define", "delete.after-destroy"],
  };
  return kept[kind].includes(point);
}

/** What one kill at one point came to, after the restart and reconcile. */
export interface KillOutcome {
  driver: ChaosDriverKind;
  point: FaultPoint;
  /** rcloud did die at the point (its child was SIGKILLed). */
  killed: boolean;
  /** The VM was listed complete after reconcile (else it was gone). */
  kept: boolean;
  /** Artefacts of VMs not listed, and parts missing of listed ones, after reconcile. */
  orphans: string[];
  /** VMs that had answered 201 and were not being deleted, gone or incomplete after the restart. */
  lost: string[];
  /** The name was free again (created anew with it). */
  nameReused: boolean;
  /** Milliseconds each phase took (start armed, until killed, restart, reconcile, check, name reuse, stop). */
  phases: Record<string, number>;
  /** What the reconcile at start and POST /reconcile reported, in all. */
  reconcile: { removed: number; adopted: number };
}

/** What a complete VM has: files (and a domain on libvirt). */
function missingParts(site: ChaosSite, a: Artefacts, id: string): string[] {
  const files = a.files.get(id) ?? [];
  const need = site.kind === "libvirt" ? [`${id}-root.qcow2`, `${id}-data0.qcow2`, `${id}-seed.iso`] : ["vm.json", "root.qcow2", "data0.qcow2", "seed.iso"];
  const missing = need.filter((f) => !files.includes(f)).map((f) => `${id}: missing ${f}`);
  if (site.kind === "libvirt" && !a.domains.has(id)) missing.push(`${id}: missing its domain`);
  return missing;
}

/** Artefacts of VMs not in `listed`. */
function orphansOf(a: Artefacts, listed: Set<string>): string[] {
  const out: string[] = [];
  for (const [id, files] of a.files) if (!listed.has(id)) out.push(...files.map((f) => `${id}: file ${f}`));
  for (const [id, name] of a.domains) if (!listed.has(id)) out.push(`${id}: domain ${name}`);
  for (const [id, pid] of a.processes) if (!listed.has(id)) out.push(`${id}: QEMU PID ${pid}`);
  return out;
}

/**
 * One kill: rcloud armed with `point` runs a create (or a create, then a delete) of `name`
 * and dies at the point; restarted, then POST /reconcile. Checks that every VM of the site
 * is complete and listed or gone (no orphans), that `survivors` (VMs answered 201 earlier)
 * are all still there and whole, and that the name can be used again. Stops rcloud at the end.
 */
export async function killAt(site: ChaosSite, point: FaultPoint, name: string, survivors: string[]): Promise<KillOutcome> {
  const phases: Record<string, number> = {};
  let t = Date.now();
  const lap = (what: string) => {
    phases[what] = Date.now() - t;
    t = Date.now();
  };
  const child = await site.start(point);
  lap("start-armed");
  let deleting: string | null = null;
  if (point.startsWith("delete.")) {
    const made = await site.req("POST", "/api/v1/vms", vmBody(name));
    if (made?.status !== 201) throw new Error(`create before ${point}: ${JSON.stringify(made)}`);
    deleting = made.json.id;
    await site.req("DELETE", `/api/v1/vms/${made.json.id}`);
  } else {
    const r = await site.req("POST", "/api/v1/vms", vmBody(name));
    if (r !== null) throw new Error(`rcloud answered ${r.status} instead of dying at ${point}: ${JSON.stringify(r.json)}`);
  }
  const dead = await Promise.race([child.exited.then(() => true), Bun.sleep(30_000).then(() => false)]);
  const killed = dead && child.signalCode === "SIGKILL";
  if (!dead) child.kill("SIGKILL");
  await child.exited;
  lap("until-killed");

  await site.start();
  lap("restart");
  // The restart reconciles each host as it connects (logged); POST /reconcile reports what is left to do.
  const atStart = await waitFor("the reconcile at start", () => /reconciled at start.*?removed=(\d+)/.exec(readFileSync(site.lastLog, "utf8")), 30_000, 100);
  const rec = await site.req("POST", "/api/v1/reconcile", undefined);
  if (rec?.status !== 200) throw new Error(`POST /reconcile: ${JSON.stringify(rec)}`);
  const removed = Number(atStart[1]) + rec.json.hosts.reduce((n: number, h: { removed: unknown[] }) => n + h.removed.length, 0);
  const adopted = rec.json.hosts.reduce((n: number, h: { adopted: unknown[] }) => n + h.adopted.length, 0);
  const hostErrors = rec.json.hosts.filter((h: { error: string | null }) => h.error);
  if (hostErrors.length) throw new Error(`reconcile failed on a host: ${JSON.stringify(hostErrors)}`);

  lap("reconcile");
  const a = await site.artefacts();
  // rclouds sharing a libvirtd list each other's VMs: ours are those with files or a domain in
  // our pool, and the ones this kill is about.
  const all = ((await site.req("GET", "/api/v1/vms"))?.json?.vms ?? []) as { id: string; name: string; state: string }[];
  const vms = all.filter((v) => a.files.has(v.id) || a.domains.has(v.id) || v.name === name || survivors.includes(v.name));
  const listed = new Set(all.map((v) => v.id));
  const orphans = orphansOf(a, listed);
  for (const v of vms) orphans.push(...missingParts(site, a, v.id));
  const lost: string[] = [];
  for (const s of survivors) {
    const v = vms.find((x) => x.name === s);
    if (!v) lost.push(`${s}: not listed`);
    else if (missingParts(site, a, v.id).length > 0) lost.push(`${s}: incomplete`);
  }
  lap("check");
  const mine = vms.find((v) => v.name === name);
  const kept = mine !== undefined;
  if (deleting && mine && mine.id !== deleting) orphans.push(`${name}: listed with another id`);

  // The name is free again once the VM is gone (deleted if it was kept).
  if (mine) await site.req("DELETE", `/api/v1/vms/${mine.id}`);
  const again = await site.req("POST", "/api/v1/vms", vmBody(name, { start: false, extra_disks: [] }));
  const nameReused = again?.status === 201;
  if (nameReused) await site.req("DELETE", `/api/v1/vms/${again!.json.id}`);
  lap("reuse");
  await site.stopChildren();
  lap("stop");
  return { driver: site.kind, point, killed, kept, orphans, lost, nameReused, reconcile: { removed, adopted }, phases };
}


/** What fault 2 came to: creates racing a libvirtd SIGKILL and restart. */
export interface LibvirtdKillOutcome {
  creates: number;
  /** Answered 201 before libvirtd was killed. */
  createdBeforeKill: number;
  /** Requests still unanswered when libvirtd was killed. */
  openAtKill: number;
  created: number;
  /** 503 answers, each with a message. */
  refused: number;
  /** Answers other than 201 and 503-with-a-message (each described). */
  badAnswers: string[];
  /** Requests with no answer within the deadline. */
  hung: number;
  /** Slowest answer, ms. */
  maxAnswerMs: number;
  /** VMs answered 201 that do not exist or do not run once libvirtd is back. */
  lost: string[];
  /** After reconcile: artefacts of VMs not listed, and VMs listed that were never answered 201. */
  orphans: string[];
}

/**
 * Fault 2: `n` creates at once on a site on the rig's `fault` daemon; libvirtd is SIGKILLed
 * (by PID) once a fifth of them (at least one) are answered 201 — so that enough VMs made
 * before the kill must be shown to survive it, while the rest are in every phase of a
 * create — or after 30 s, and started again. Every request must be answered (201, or 503 with
 * a message) within `deadlineMs`; every VM answered 201 must exist and run once libvirtd is
 * back; after reconcile nothing else may remain. Deletes every VM at the end.
 */
export async function libvirtdKilledDuringCreates(site: ChaosSite, n: number, deadlineMs: number, prefix: string): Promise<LibvirtdKillOutcome> {
  const names = Array.from({ length: n }, (_, i) => `${prefix}-${i}`);
  const t0 = Date.now();
  const killAfter = Math.max(1, Math.floor(n / 5));
  let answered201 = 0;
  let answeredAll = 0;
  let enoughCreated!: () => void;
  const enough = new Promise<void>((resolve) => (enoughCreated = resolve));
  const pending = names.map(async (name) => {
    try {
      const r = await site.req("POST", "/api/v1/vms", vmBody(name, { extra_disks: [], network: { mode: "none" } }), deadlineMs);
      answeredAll++;
      if (r?.status === 201 && ++answered201 === killAfter) enoughCreated();
      return { name, r, ms: Date.now() - t0, hung: false };
    } catch {
      return { name, r: null, ms: Date.now() - t0, hung: true };
    }
  });
  await Promise.race([enough, Promise.all(pending), Bun.sleep(30_000)]);
  const createdBeforeKill = answered201;
  const openAtKill = n - answeredAll;
  process.kill(rig().instances.fault.libvirtdPid, "SIGKILL");
  const results = await Promise.all(pending);
  rigCommand("start-instance", "fault");
  await waitFor("rcloud to answer again", async () => (await site.req("GET", "/api/v1/health", undefined, 5_000).catch(() => null))?.status === 200, 60_000, 250);

  const created = results.filter((x) => x.r?.status === 201);
  const badAnswers = results
    .filter((x) => !x.hung && !(x.r?.status === 201 || (x.r?.status === 503 && typeof x.r.json?.error?.message === "string" && x.r.json.error.message.length > 0)))
    .map((x) => `${x.name}: ${x.r === null ? "connection broken" : `${x.r.status} ${JSON.stringify(x.r.json)}`}`);
  const lost: string[] = [];
  for (const c of created) {
    const id = c.r!.json.id as string;
    const ok = await waitFor(`${c.name} to run`, async () => (await site.req("GET", `/api/v1/vms/${id}`))?.json?.state === "running", 60_000, 250).catch(() => false);
    if (!ok) lost.push(`${c.name} (${id}): ${JSON.stringify((await site.req("GET", `/api/v1/vms/${id}`))?.json)}`);
  }
  const rec = await site.req("POST", "/api/v1/reconcile");
  const orphans: string[] = rec?.status === 200 ? [] : [`POST /reconcile: ${JSON.stringify(rec)}`];
  const vms = ((await site.req("GET", "/api/v1/vms"))?.json?.vms ?? []) as { id: string; name: string }[];
  const answered = new Set(created.map((c) => c.r!.json.id as string));
  for (const v of vms) if (!answered.has(v.id) && names.includes(v.name)) orphans.push(`${v.id} (${v.name}): listed but answered ${JSON.stringify(results.find((x) => x.name === v.name)?.r?.status ?? "nothing")}`);
  const a = await site.artefacts();
  orphans.push(...orphansOf(a, new Set(vms.map((v) => v.id))));
  for (const v of vms) await site.req("DELETE", `/api/v1/vms/${v.id}`);
  return {
    creates: n,
    createdBeforeKill,
    openAtKill,
    created: created.length,
    refused: results.filter((x) => x.r?.status === 503).length,
    badAnswers,
    hung: results.filter((x) => x.hung).length,
    maxAnswerMs: Math.max(...results.map((x) => x.ms)),
    lost,
    orphans,
  };
}
