/**
 * bun run bench:revert [--rounds 3]
 *
 * How long a revert to a memory snapshot takes on the direct QEMU driver (TCG), for a 512 MiB
 * guest (the small bootable disk image, scripts/lib/disk-image.sh) with a snapshot taken once
 * it answered SSH. Compared, in the same run and alternating which goes first, with the other
 * way back to a fresh guest: a forced stop and a start until SSH answers again.
 *   revert_s:     POST /vms/{id}/snapshots/{name}/revert until rcloud answers (the guest runs
 *                 from the snapshot);
 *   revert_ssh_s: the same until the guest's SSH banner arrives;
 *   boot_ssh_s:   POST /vms/{id}/start (after a forced stop) until the SSH banner;
 *   ratio:        revert_ssh_s / boot_ssh_s.
 * Medians of `rounds`. Prints one JSON line. `benchRevert` is exported for bench:kernel.
 */
import { benchDisk, sh, startBenchServer } from "./bench-server.ts";
import { median, r3, waitSsh } from "./ssh-wait.ts";

const MEMORY_MB = 512;
/** TCG boots on a shared 2-core host can take minutes. */
const SSH_DEADLINE_MS = 900_000;

export interface RevertResult {
  revert_s: number;
  revert_ssh_s: number;
  boot_ssh_s: number;
  ratio: number;
  memory_mb: number;
  vm_state_mb: number | null;
  rounds: number;
  accel: "tcg";
  revert_runs_s: number[];
  boot_runs_s: number[];
}

export async function benchRevert(opts: { rounds?: number } = {}): Promise<RevertResult> {
  const rounds = opts.rounds ?? 3;
  const bench = await startBenchServer({ prefix: "/tmp/rcb-revert-", disk: benchDisk(), memoryMb: MEMORY_MB });
  const { keyFile, publicKey, api } = bench;
  let vmId: string | null = null;
  try {
    const vm = await api("POST", "/vms", { name: "bench-revert", image: "rcloud-tiny", ssh_public_key: publicKey, network: { mode: "user", restrict: true } });
    vmId = vm.id;
    const booted = await waitSsh(vm.ssh_port, performance.now(), SSH_DEADLINE_MS).catch((e: Error) => {
      throw new Error(`first boot: ${e.message}`);
    });
    console.error(`bench:revert: first boot answered SSH after ${booted.toFixed(1)} s`);
    // A real login first, then a quiet moment: the snapshot holds no half-open connection
    // (slirp's and the guest's TCP state are part of it).
    sh(["ssh", "-i", keyFile, "-p", String(vm.ssh_port), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "root@127.0.0.1", "true"]);
    await Bun.sleep(3000);
    const snap = await api("POST", `/vms/${vm.id}/snapshots`, { name: "warm", memory: true });

    const revert = async () => {
      const t0 = performance.now();
      const after = await api("POST", `/vms/${vm.id}/snapshots/warm/revert`);
      if (after.state !== "running") throw new Error(`after the revert the VM is ${after.state}`);
      const answered = (performance.now() - t0) / 1000;
      const ssh = await waitSsh(vm.ssh_port, t0, SSH_DEADLINE_MS).catch((e: Error) => {
        throw new Error(`after the revert (rcloud answered in ${answered.toFixed(1)} s): ${e.message}`);
      });
      return { answered, ssh };
    };
    const boot = async () => {
      await api("POST", `/vms/${vm.id}/stop?force=true`);
      const t0 = performance.now();
      await api("POST", `/vms/${vm.id}/start`);
      return waitSsh(vm.ssh_port, t0, SSH_DEADLINE_MS).catch((e: Error) => {
        throw new Error(`after a start: ${e.message}`);
      });
    };

    const reverts: { answered: number; ssh: number }[] = [];
    const boots: number[] = [];
    for (let i = 0; i < rounds; i++) {
      // Alternate which goes first, so neither always meets a warmer page cache.
      if (i % 2 === 0) {
        reverts.push(await revert());
        boots.push(await boot());
      } else {
        boots.push(await boot());
        reverts.push(await revert());
      }
    }
    await api("DELETE", `/vms/${vm.id}`);
    vmId = null;
    const revertSsh = median(reverts.map((r) => r.ssh));
    return {
      revert_s: r3(median(reverts.map((r) => r.answered))),
      revert_ssh_s: r3(revertSsh),
      boot_ssh_s: r3(median(boots)),
      ratio: r3(revertSsh / median(boots)),
      memory_mb: MEMORY_MB,
      vm_state_mb: snap.vm_state_bytes !== null ? Math.round(snap.vm_state_bytes / 1024 ** 2) : null,
      rounds,
      accel: "tcg",
      revert_runs_s: reverts.map((r) => r3(r.answered)),
      boot_runs_s: boots.map(r3),
    };
  } finally {
    // VMs outlive rcloud by design: a failed run deletes its guest before stopping the server.
    if (vmId !== null) await fetch(`${bench.url}/api/v1/vms/${vmId}`, { method: "DELETE" }).catch(() => {});
    await bench.stop();
  }
}

if (import.meta.main) {
  const argR = process.argv.indexOf("--rounds");
  console.log(JSON.stringify(await benchRevert({ rounds: argR > 0 ? Number(process.argv[argR + 1]) : 3 })));
  process.exit(0);
}
