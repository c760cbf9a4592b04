/**
 * bun run bench:create [--n 20] [--rounds 2] [--warmup 5] [--timeline] [--virsh-first]
 *
 * Creates N tiny direct-kernel-boot VMs concurrently through rcloud's REST API (a separate
 * `rcloud serve` process) and, in the same run against the same libvirtd, the same VMs with
 * plain virsh (vol-create-as + define + start, N processes at once). Each phase ends when
 * every VM is running; VMs are removed between phases, and the order alternates per round.
 * Prints one JSON line: {rcloud_s, virsh_s (means), ratio, failures (rcloud_failures +
 * virsh_failures: creates that did not end with a running VM, over every phase including the
 * warm-up), rcloud_peak_rss_mb, n, runs}.
 * Starts the test rig if it is not running, and stops it again if it started it.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync, copyFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { stringify } from "yaml";
import { renderDomainXml, loadTemplate, METADATA_NS } from "../src/drivers/libvirt/domain-xml.ts";
import { LibvirtClient, remoteProcedures as P } from "../src/libvirt/index.ts";
import { removeDomains } from "../test/helpers/domains.ts";

const repo = resolve(import.meta.dir, "..");
const rigDir = process.env.RCLOUD_RIG_DIR ?? "/tmp/rcloud-rig";
const argN = process.argv.indexOf("--n");
/** --timeline: per phase, when the VMs reached running (percentiles), CPU used, RPC counts and mean latencies. */
const timeline = process.argv.includes("--timeline");
/** --warmup K: VMs per side in the unmeasured warm-up (default 5). */
const argWarm = process.argv.indexOf("--warmup");
const warmup = argWarm > 0 ? Number(process.argv[argWarm + 1]) : 5;
/** --virsh-first: virsh takes the first measured round (rcloud does by default). */
const virshFirst = process.argv.includes("--virsh-first");
const n = argN > 0 ? Number(process.argv[argN + 1]) : 20;

function sh(cmd: string[]): string {
  const r = Bun.spawnSync(cmd, { cwd: repo, stdout: "pipe", stderr: "inherit" });
  if (r.exitCode !== 0) throw new Error(`${cmd.join(" ")} failed (${r.exitCode})`);
  return r.stdout.toString();
}

const startedRig = !existsSync(join(rigDir, "env.json"));
if (startedRig) {
  sh(["bash", "scripts/lib/install-deps.sh"]);
  sh(["bash", "scripts/lib/rig.sh", "up"]);
}
const guest = sh(["bash", "scripts/lib/guest-image.sh"]).trim().split("\n");
const disk = sh(["bash", "scripts/lib/disk-image.sh"]).trim().split("\n")[0]!;
const env = JSON.parse(readFileSync(join(rigDir, "env.json"), "utf8")) as { instances: { main: { socket: string; libvirtdPid: number } } };
const libvirtdPid = env.instances.main.libvirtdPid;
const uri = `qemu+unix:///system?socket=${env.instances.main.socket}`;
const [kernel, initrd] = [guest[0]!, guest[1]!];

const work = mkdtempSync(join(tmpdir(), "rcloud-bench-"));
const imagesDir = join(rigDir, "bench-images");
mkdirSync(imagesDir, { recursive: true });
copyFileSync(disk, join(imagesDir, "rcloud-tiny.qcow2"));
const kernelDir = join(rigDir, "bench-kernel");
mkdirSync(kernelDir, { recursive: true });
copyFileSync(kernel, join(kernelDir, "vmlinuz"));
copyFileSync(initrd, join(kernelDir, "initrd.img"));
const poolA = `rcbench-api-${process.pid}`;
const poolB = `rcbench-virsh-${process.pid}`;
const poolImg = `rcbench-img-${process.pid}`;

const lv = await LibvirtClient.connect(uri);
let rcloudFailures = 0;
let virshFailures = 0;
let rcloudS = 0;
let virshS = 0;
let peakRssMb = 0;

const cleanupDomains = (prefix: string) => removeDomains(lv, prefix);

async function dropPool(name: string): Promise<void> {
  try {
    const { pool } = await lv.call(P.storagePoolLookupByName, { name });
    const { vols } = await lv.call(P.storagePoolListAllVolumes, { pool, need_results: 1, flags: 0 });
    for (const vol of vols) await lv.call(P.storageVolDelete, { vol, flags: 0 }).catch(() => {});
    await lv.call(P.storagePoolDestroy, { pool }).catch(() => {});
    await lv.call(P.storagePoolUndefine, { pool }).catch(() => {});
  } catch {
    // not there
  }
}

/**
 * Waits until the host is quiet (under 15 % busy over half a second, at most 20 s), so a
 * phase does not start while the previous one's QEMUs are still exiting.
 */
async function settle(): Promise<void> {
  const sample = () => {
    const f = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
    const idle = f[3]! + f[4]!;
    return { idle, total: f.reduce((a, b) => a + b, 0) };
  };
  const deadline = performance.now() + 20_000;
  while (performance.now() < deadline) {
    const a = sample();
    await Bun.sleep(500);
    const b = sample();
    if (1 - (b.idle - a.idle) / Math.max(1, b.total - a.total) < 0.15) return;
  }
}

/** CPU seconds (user + system) a process has used so far. */
function procCpu(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(f[11]) + Number(f[12])) / 100;
}

/** Completion times (s) at the 10th/50th/90th percentile and the last, for --timeline. */
function pct(xs: number[]): string {
  const s = [...xs].sort((a, b) => a - b);
  const at = (q: number) => (s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? 0).toFixed(1);
  return `p10 ${at(0.1)} p50 ${at(0.5)} p90 ${at(0.9)} last ${at(1)}`;
}

const rounds = Math.max(1, Number(process.argv[process.argv.indexOf("--rounds") + 1]) || 2);
const rcloudRuns: number[] = [];
const virshRuns: number[] = [];
let server: ReturnType<typeof Bun.spawn> | null = null;
try {
  // ---- rcloud, as a separate `rcloud serve` process ----
  const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = probe.port;
  probe.stop(true);
  const cfg = join(work, "rcloud.yaml");
  writeFileSync(
    cfg,
    stringify({
      server: { bind_address: `127.0.0.1:${port}` },
      libvirt: { uri, storage_pool_name: poolA, storage_pool_path: join(rigDir, "pools", poolA), domain_type: "qemu" },
      images: { base_images_dir: imagesDir },
      vm_defaults: { network_mode: "none", vcpus: 1, memory_mb: 128, root_disk_gb: 1, kernel_dir: kernelDir, vcpu_overcommit: 64 }, // n VMs of 1 vCPU on a 2-CPU host
      logging: { level: "warn", format: "text" },
    }),
  );
  const srv = Bun.spawn(["node_modules/.bin/bun", "src/main.ts", "serve", "--config", cfg], { cwd: repo, stdout: "inherit", stderr: "inherit" });
  server = srv;
  const api = `http://127.0.0.1:${port}/api/v1`;
  let healthy = false;
  for (let i = 0; i < 150 && !healthy; i++) {
    healthy = await fetch(`${api}/health`).then(
      (r) => r.ok,
      () => false,
    );
    if (!healthy) await Bun.sleep(100);
  }
  if (!healthy) throw new Error(`rcloud did not become healthy on port ${port}`);
  const rssTimer = setInterval(() => {
    try {
      const hwm = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${srv.pid}/status`, "utf8"));
      if (hwm) peakRssMb = Math.max(peakRssMb, Number(hwm[1]) / 1024);
    } catch {
      // exited
    }
  }, 200);

  async function rpcCounts(): Promise<Map<string, number>> {
    const text = await fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.text());
    const out = new Map<string, number>();
    for (const m of text.matchAll(/^rcloud_libvirt_rpc_duration_seconds_count\{procedure="([^"]+)"\} (\d+)/gm)) out.set(m[1]!, Number(m[2]));
    for (const m of text.matchAll(/^rcloud_libvirt_rpc_duration_seconds_sum\{procedure="([^"]+)"\} ([\d.e+-]+)/gm))
      out.set(`${m[1]!}:ms`, Number(m[2]) * 1000);
    return out;
  }

  /** N concurrent POST /vms; ends when every VM is running. Deletes them afterwards. */
  async function rcloudPhase(count = n): Promise<number> {
    await settle();
    const names = Array.from({ length: count }, (_, i) => `rcbench-a${i}`);
    const m0 = timeline ? await rpcCounts() : null;
    const cpu0 = procCpu(srv.pid);
    const l0 = procCpu(libvirtdPid);
    const t0 = performance.now();
    const results = await Promise.all(
      names.map((name) =>
        fetch(`${api}/vms`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({
            name,
            image: "rcloud-tiny",
            kernel: join(kernelDir, "vmlinuz"),
            initrd: join(kernelDir, "initrd.img"),
            cmdline: "console=ttyS0 quiet",
          }),
          // Wait as long as virsh does: Bun's fetch gives up after 5 idle minutes by default,
          // which a loaded 2-core host reaches with 50 TCG starts.
          timeout: false,
        }).then(
          async (r) => ({ status: r.status, body: (await r.json().catch(() => ({}))) as { state?: string }, at: (performance.now() - t0) / 1000 }),
          // A dropped connection is a failed create too, not the end of the benchmark.
          (e: Error) => ({ status: 0, body: { error: e.message } as { state?: string }, at: (performance.now() - t0) / 1000 }),
        ),
      ),
    );
    const s = (performance.now() - t0) / 1000;
    if (timeline)
      console.error(
        "rcloud",
        pct(results.map((r) => r.at)),
        `server cpu ${(procCpu(srv.pid) - cpu0).toFixed(2)} s, libvirtd cpu ${(procCpu(libvirtdPid) - l0).toFixed(2)} s`,
      );
    if (m0) {
      const m1 = await rpcCounts();
      const d = (k: string) => (m1.get(k) ?? 0) - (m0.get(k) ?? 0);
      const procs = [...m1.keys()].filter((k) => !k.endsWith(":ms") && d(k) > 0);
      console.error(procs.map((k) => `${k}=${d(k)} (mean ${(d(`${k}:ms`) / d(k)).toFixed(0)} ms)`).join(" "));
    }
    const bad = results.filter((r) => r.status !== 201 || r.body.state !== "running");
    for (const r of bad) console.error(`rcloud create failed: ${r.status} ${JSON.stringify(r.body)}`);
    rcloudFailures += bad.length;
    const d0 = performance.now();
    await Promise.all(names.map((name) => fetch(`${api}/vms/${name}`, { method: "DELETE" })));
    if (timeline) console.error(`rcloud deleted ${count} VMs in ${((performance.now() - d0) / 1000).toFixed(2)} s`);
    return s;
  }

  // ---- plain virsh: one process per step per VM, all VMs at once ----
  const poolDir = join(rigDir, "pools", poolB);
  mkdirSync(poolDir, { recursive: true });
  sh(["virsh", "-q", "-c", uri, "pool-create-as", poolB, "dir", "--target", poolDir]);
  // virsh needs the backing image to be a volume of some pool.
  sh(["virsh", "-q", "-c", uri, "pool-create-as", poolImg, "dir", "--target", imagesDir]);
  const template = loadTemplate(null);
  const xmlFiles = Array.from({ length: n }, (_, i) => {
    const name = `rcbench-v${i}`;
    const xml = renderDomainXml(template, {
      domain_type: "qemu",
      name,
      uuid: crypto.randomUUID(),
      id: `vm-bench${String(i).padStart(4, "0")}`,
      image: "rcloud-tiny",
      created_at: new Date().toISOString(),
      owner: "",
      placement_group: "",
      ssh_user: "kdevops",
      root_disk_gb: 1,
      memory_mb: 128,
      max_memory_mb: 128,
      vcpus: 1,
      max_vcpus: 1,
      pcie_root_ports: 16,
      metadata_ns: METADATA_NS,
      boot: { kernel: join(kernelDir, "vmlinuz"), initrd: join(kernelDir, "initrd.img"), cmdline: "console=ttyS0 quiet" },
      disks: [
        {
          device: "disk",
          format: "qcow2",
          path: join(poolDir, `${name}.qcow2`),
          target: "vda",
          bus: "virtio",
          readonly: false,
          serial: null,
          drive: null,
        },
      ],
      nvme_disks: [],
      network: { mode: "none", bridge: "", interface_type: "network", mac: "52:54:00:00:00:01", ssh_port: "", restrict: false, netdev: "" },
      console_log: join(poolDir, `${name}-serial.log`),
      on_panic: "preserve",
      on_crash: "preserve",
      gdb: null,
      shares: [],
    });
    const file = join(work, `${name}.xml`);
    writeFileSync(file, xml);
    return { name, file };
  });
  const base = join(imagesDir, "rcloud-tiny.qcow2");

  async function virshPhase(count = n): Promise<number> {
    await settle();
    const l0 = procCpu(libvirtdPid);
    const t0 = performance.now();
    const ats: number[] = [];
    const codes: number[] = await Promise.all(
      xmlFiles.slice(0, count).map(async ({ name, file }) => {
        for (const args of [
          ["vol-create-as", poolB, `${name}.qcow2`, "1G", "--format", "qcow2", "--backing-vol", base, "--backing-vol-format", "qcow2"],
          ["define", file],
          ["start", name],
        ]) {
          const p = Bun.spawn(["virsh", "-q", "-c", uri, ...args], { stdout: "ignore", stderr: "inherit" });
          if ((await p.exited) !== 0) return 1;
        }
        ats.push((performance.now() - t0) / 1000);
        return 0;
      }),
    );
    const s = (performance.now() - t0) / 1000;
    if (timeline) console.error("virsh ", pct(ats), `libvirtd cpu ${(procCpu(libvirtdPid) - l0).toFixed(2)} s`);
    virshFailures += codes.reduce((a, b) => a + b, 0);
    await cleanupDomains("rcbench-v");
    const { pool } = await lv.call(P.storagePoolLookupByName, { name: poolB });
    await lv.call(P.storagePoolRefresh, { pool, flags: 0 });
    for (const vol of (await lv.call(P.storagePoolListAllVolumes, { pool, need_results: 1, flags: 0 })).vols) {
      await lv.call(P.storageVolDelete, { vol, flags: 0 }).catch(() => {});
    }
    return s;
  }

  // Warm-up (not measured): the first domain starts on a fresh daemon are slower for
  // whoever goes first. Then alternate the order each round.
  await rcloudPhase(Math.min(warmup, n));
  await virshPhase(Math.min(warmup, n));
  for (let r = 0; r < rounds; r++) {
    if ((r + (virshFirst ? 1 : 0)) % 2 === 0) {
      rcloudRuns.push(await rcloudPhase());
      virshRuns.push(await virshPhase());
    } else {
      virshRuns.push(await virshPhase());
      rcloudRuns.push(await rcloudPhase());
    }
  }
  clearInterval(rssTimer);
  rcloudS = rcloudRuns.reduce((a, b) => a + b, 0) / rcloudRuns.length;
  virshS = virshRuns.reduce((a, b) => a + b, 0) / virshRuns.length;
} finally {
  if (server) {
    server.kill("SIGTERM");
    await server.exited;
  }
  await cleanupDomains("rcbench-");
  await dropPool(poolA);
  await dropPool(poolB);
  await lv.call(P.storagePoolLookupByName, { name: poolImg }).then(
    ({ pool }) => lv.call(P.storagePoolDestroy, { pool }),
    () => {},
  );
  await lv.close();
  if (startedRig) sh(["bash", "scripts/lib/rig.sh", "down"]);
}
console.log(
  JSON.stringify({
    n,
    rcloud_s: Math.round(rcloudS * 100) / 100,
    virsh_s: Math.round(virshS * 100) / 100,
    ratio: Math.round((rcloudS / virshS) * 100) / 100,
    failures: rcloudFailures + virshFailures,
    rcloud_failures: rcloudFailures,
    virsh_failures: virshFailures,
    rcloud_peak_rss_mb: Math.round(peakRssMb),
    rounds,
    rcloud_runs_s: rcloudRuns.map((x) => Math.round(x * 100) / 100),
    virsh_runs_s: virshRuns.map((x) => Math.round(x * 100) / 100),
  }),
);
