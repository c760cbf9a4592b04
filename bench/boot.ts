/**
 * bun run bench:boot [--rounds 3]
 *
 * Boots the small bootable disk image (scripts/lib/disk-image.sh) until its SSH server
 * answers (the "SSH-2.0" banner through the forwarded port), two ways, alternating:
 *   rcloud:   POST /api/v1/vms to an in-process rcloud on the direct QEMU driver (user
 *             networking with restrict=on, an SSH key → cloud-init seed ISO);
 *   raw QEMU: qemu-img create of the same overlay + the equivalent qemu-system-x86_64
 *             command line (same machine, devices, seed ISO and hostfwd), no rcloud.
 * Both under TCG (RCLOUD_QEMU_ACCEL=tcg) so the comparison is fair. Prints one JSON line
 * with the medians: {rcloud_s, raw_qemu_s, ratio, post_to_running_ms, rounds, ...}
 * (post_to_running_ms: POST /vms until it answered with QEMU running, not booted).
 */
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { buildSeedIso } from "../src/cloudinit/index.ts";
import { benchDisk, sh, startBenchServer } from "./bench-server.ts";
import { freePort, median, r3, waitSsh } from "./ssh-wait.ts";

const argR = process.argv.indexOf("--rounds");
const rounds = argR > 0 ? Number(process.argv[argR + 1]) : 3;

const bench = await startBenchServer({ prefix: "/tmp/rcb-", disk: benchDisk(), memoryMb: 256 });
const { work, images, keyFile, publicKey } = bench;

async function rcloudRound(i: number): Promise<{ s: number; postMs: number }> {
  const t0 = performance.now();
  const res = await fetch(`${bench.url}/api/v1/vms`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ name: `bench-${i}`, image: "rcloud-tiny", ssh_public_key: publicKey, network: { mode: "user", restrict: true } }),
  });
  const postMs = performance.now() - t0;
  const vm = (await res.json()) as any;
  if (res.status !== 201 || vm.state !== "running") throw new Error(`create failed: ${res.status} ${JSON.stringify(vm)}`);
  const s = await waitSsh(vm.ssh_port, t0);
  if (i === 0) {
    // Once, untimed: the key really logs in.
    sh([
      "ssh",
      "-i",
      keyFile,
      "-p",
      String(vm.ssh_port),
      "-o",
      "StrictHostKeyChecking=no",
      "-o",
      "UserKnownHostsFile=/dev/null",
      "-o",
      "BatchMode=yes",
      "-o",
      "LogLevel=ERROR",
      "kdevops@127.0.0.1",
      "true",
    ]);
  }
  await fetch(`${bench.url}/api/v1/vms/${vm.id}`, { method: "DELETE" });
  return { s, postMs };
}

async function rawRound(i: number): Promise<number> {
  const dir = join(work, `raw-${i}`);
  mkdirSync(dir);
  const port = freePort();
  const t0 = performance.now();
  // The same seed rcloud builds (cloud-init NoCloud, label cidata).
  writeFileSync(
    join(dir, "seed.iso"),
    buildSeedIso({ instanceId: `raw-${i}`, hostname: `raw-${i}`, user: "kdevops", sshAuthorizedKeys: [publicKey] }),
  );
  sh(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", join(images, "rcloud-tiny.qcow2"), join(dir, "root.qcow2"), String(1024 ** 3)]);
  // prettier-ignore
  const qemu = Bun.spawn([
    "qemu-system-x86_64",
    "-name", `raw-${i},debug-threads=on`,
    "-machine", "q35", "-accel", "tcg", "-m", "256", "-smp", "1",
    "-nodefaults", "-no-user-config", "-display", "none",
    "-chardev", `socket,id=serial0,path=${dir}/serial.sock,server=on,wait=off,logfile=${dir}/serial.log`, "-serial", "chardev:serial0",
    "-netdev", `user,id=net0,hostfwd=tcp:127.0.0.1:${port}-:22,restrict=on`,
    "-device", "virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56,bus=pcie.0,addr=0x10",
    "-drive", `if=none,id=root,file=${dir}/root.qcow2,format=qcow2,discard=unmap`, "-device", "virtio-blk-pci,drive=root,bootindex=1",
    "-drive", `if=none,id=seed,file=${dir}/seed.iso,format=raw,readonly=on`, "-device", "ide-cd,drive=seed,bus=ide.0",
    "-chardev", `socket,id=qga0,path=${dir}/qga.sock,server=on,wait=off`,
    "-device", "virtio-serial-pci,id=vserial0", "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
    "-object", "rng-random,id=rng0,filename=/dev/urandom", "-device", "virtio-rng-pci,rng=rng0",
  ], { stdin: "ignore", stdout: "ignore", stderr: "inherit" });
  try {
    return await waitSsh(port, t0);
  } finally {
    qemu.kill("SIGKILL");
    await qemu.exited;
    rmSync(dir, { recursive: true, force: true });
  }
}

const rc: number[] = [];
const raw: number[] = [];
const post: number[] = [];
try {
  for (let i = 0; i < rounds; i++) {
    // Alternate which goes first, so neither always meets a warmer page cache.
    const order = i % 2 === 0 ? ["rcloud", "raw"] : ["raw", "rcloud"];
    for (const which of order) {
      if (which === "rcloud") {
        const r = await rcloudRound(i);
        rc.push(r.s);
        post.push(r.postMs);
      } else raw.push(await rawRound(i));
    }
  }
  console.log(
    JSON.stringify({
      rcloud_s: r3(median(rc)),
      raw_qemu_s: r3(median(raw)),
      ratio: r3(median(rc) / median(raw)),
      post_to_running_ms: Math.round(median(post)),
      rounds,
      accel: "tcg",
      rcloud_runs_s: rc.map(r3),
      raw_qemu_runs_s: raw.map(r3),
      post_to_running_runs_ms: post.map((x) => Math.round(x)),
    }),
  );
} finally {
  await bench.stop();
}
