/**
 * bun run bench:kernel [--rounds 3]
 *
 * "Boot a kernel I just built", on the direct QEMU driver under TCG: the test disk's own
 * kernel and initramfs (scripts/lib/disk-image.sh) until the guest's SSH server answers (the
 * "SSH-2.0" banner through the forwarded port), two ways, alternating which goes first:
 *   ours: `rcloud vm boot VM --kernel K --initrd I --cmdline S` (the CLI as a child process:
 *         both uploads through the API, the restart on them) on a stopped VM of an in-process
 *         rcloud, then the banner;
 *   raw:  `qemu-system-x86_64 -kernel K -initrd I -append S` with the same disk (a qcow2
 *         overlay on the same image), seed ISO and devices, then the banner.
 * Then the revert of a memory snapshot of a 512 MiB guest (bench/snapshot-revert.ts).
 * Prints one JSON line of medians: {ours_s, raw_s, ratio, rounds, ..., revert_s}. Each boot
 * figure is one entry of `figures` below: a further measurement adds its own key there.
 */
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { buildSeedIso } from "../src/cloudinit/index.ts";
import { benchDisk, sh, startBenchServer } from "./bench-server.ts";
import { benchRevert } from "./snapshot-revert.ts";
import { freePort, median, r3, waitSsh } from "./ssh-wait.ts";

const repo = resolve(import.meta.dir, "..");
const argR = process.argv.indexOf("--rounds");
const rounds = argR > 0 ? Number(process.argv[argR + 1]) : 3;
const CMDLINE = "console=ttyS0,115200";
/** A TCG boot on a busy shared host can take minutes; this only stops a hang. */
const SSH_DEADLINE_MS = 900_000;

const disk = benchDisk();
const diskDir = join(disk, "..");
const kernel = process.env.RCLOUD_TEST_DISK_KERNEL ?? join(diskDir, "vmlinuz");
const initrd = process.env.RCLOUD_TEST_DISK_INITRD ?? join(diskDir, "initrd.img");
for (const f of [kernel, initrd]) if (!existsSync(f)) throw new Error(`${f} missing: run scripts/lib/disk-image.sh`);

const bench = await startBenchServer({ prefix: "/tmp/rckb-", disk, memoryMb: 256 });
const { work, images, publicKey, api } = bench;

// Our VM: made once, stopped between rounds (the stop is not timed).
const vm = await api("POST", "/vms", { name: "bench-kernel", image: "rcloud-tiny", ssh_public_key: publicKey, network: { mode: "user", restrict: true }, start: false });

async function oursRound(): Promise<number> {
  const t0 = performance.now();
  const cli = Bun.spawn([process.execPath, join(repo, "src/main.ts"), "vm", "boot", vm.name, "--kernel", kernel, "--initrd", initrd, "--cmdline", CMDLINE, "--force"], {
    cwd: repo,
    env: { ...process.env, RCLOUD_ENDPOINT: bench.url, RCLOUD_TOKEN: "" },
    stdin: "ignore",
    stdout: "ignore",
    stderr: "inherit",
  });
  if ((await cli.exited) !== 0) throw new Error("rcloud vm boot failed");
  // The forwarded port as the running VM has it (cheap: a GET on the same host).
  const running = await api("GET", `/vms/${vm.id}`);
  const s = await waitSsh(running.ssh_port, t0, SSH_DEADLINE_MS);
  await api("POST", `/vms/${vm.id}/stop?force=true`);
  return s;
}

// The raw side's disk and seed: the same image under an overlay, the same seed rcloud builds.
const raw = join(work, "raw");
mkdirSync(raw);
writeFileSync(join(raw, "seed.iso"), buildSeedIso({ instanceId: "raw", hostname: "raw", user: "kdevops", sshAuthorizedKeys: [publicKey] }));
sh(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", join(images, "rcloud-tiny.qcow2"), join(raw, "root.qcow2"), String(1024 ** 3)]);

async function rawRound(): Promise<number> {
  const port = freePort();
  const t0 = performance.now();
  // prettier-ignore
  const qemu = Bun.spawn([
    "qemu-system-x86_64",
    "-name", "raw,debug-threads=on",
    "-machine", "q35", "-accel", "tcg", "-m", "256", "-smp", "1",
    "-nodefaults", "-no-user-config", "-display", "none",
    "-kernel", kernel, "-initrd", initrd, "-append", CMDLINE,
    "-chardev", `socket,id=serial0,path=${raw}/serial.sock,server=on,wait=off,logfile=${raw}/serial.log`, "-serial", "chardev:serial0",
    "-netdev", `user,id=net0,hostfwd=tcp:127.0.0.1:${port}-:22,restrict=on`,
    "-device", "virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56,bus=pcie.0,addr=0x10",
    "-drive", `if=none,id=root,file=${raw}/root.qcow2,format=qcow2,discard=unmap`, "-device", "virtio-blk-pci,drive=root,bootindex=1",
    "-drive", `if=none,id=seed,file=${raw}/seed.iso,format=raw,readonly=on`, "-device", "ide-cd,drive=seed,bus=ide.0",
    "-object", "rng-random,id=rng0,filename=/dev/urandom", "-device", "virtio-rng-pci,rng=rng0",
  ], { stdin: "ignore", stdout: "ignore", stderr: "inherit" });
  try {
    return await waitSsh(port, t0, SSH_DEADLINE_MS);
  } finally {
    qemu.kill("SIGKILL");
    await qemu.exited;
  }
}

/** The figures and how each round measures them; a further one is one more entry. */
const figures: Record<string, { round: () => Promise<number>; runs: number[] }> = {
  ours_s: { round: oursRound, runs: [] },
  raw_s: { round: rawRound, runs: [] },
};

let result: Record<string, unknown> | null = null;
try {
  const names = Object.keys(figures);
  for (let i = 0; i < rounds; i++) {
    // Alternate which goes first, so neither always meets a warmer page cache.
    const order = i % 2 === 0 ? names : [...names].reverse();
    for (const n of order) {
      const v = await figures[n]!.round().catch((e: unknown) => {
        throw new Error(`round ${i + 1}, ${n}: ${(e as Error).message}`);
      });
      figures[n]!.runs.push(v);
      console.error(`round ${i + 1}: ${n} ${r3(v)}`);
    }
  }
  const medians = Object.fromEntries(names.map((n) => [n, r3(median(figures[n]!.runs))]));
  const runs = Object.fromEntries(names.map((n) => [n.replace(/_s$/, "_runs_s"), figures[n]!.runs.map(r3)]));
  result = { ...medians, ratio: r3(medians.ours_s! / medians.raw_s!), rounds, accel: "tcg", ...runs };
} finally {
  await fetch(`${bench.url}/api/v1/vms/${vm.id}`, { method: "DELETE" }).catch(() => {});
  await bench.stop();
}

// The second figure: reverting a memory snapshot of a 512 MiB guest (bench/snapshot-revert.ts).
const revert = await benchRevert({ rounds });
console.log(JSON.stringify({ ...result, revert_s: revert.revert_s, revert_ssh_s: revert.revert_ssh_s, revert_memory_mb: revert.memory_mb }));
