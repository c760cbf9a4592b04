/**
 * Helpers for tests of the direct QEMU driver: a temporary state directory per test file,
 * what it holds, and killing (by PID, from the pidfiles) every QEMU a test left running.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, chmodSync } from "node:fs";
import { join } from "node:path";


export const GUEST = {
  kernel: process.env.RCLOUD_TEST_GUEST_KERNEL ?? "/var/cache/rcloud-test/guest/vmlinuz",
  initrd: process.env.RCLOUD_TEST_GUEST_INITRD ?? "/var/cache/rcloud-test/guest/initrd.img",
};
export const DISK_IMAGE = process.env.RCLOUD_TEST_DISK_IMAGE ?? "/var/cache/rcloud-test/disk/rcloud-tiny.qcow2";

/**
 * A fresh directory under /tmp (short: QEMU's unix socket paths must fit 108 bytes), searchable
 * by others (0711, not listable): QEMU runs as rcloud-qemu (qemu.run_as) and opens files below it.
 */
export function tempDir(prefix: string): string {
  const dir = mkdtempSync(join("/tmp", `rcq-${prefix}-`));
  chmodSync(dir, 0o711);
  return dir;
}

/** `<id>-<file>` for every file of every VM in a state directory. */
export function stateFiles(stateDir: string): string[] {
  const vms = join(stateDir, "vms");
  if (!existsSync(vms)) return [];
  const out: string[] = [];
  for (const id of readdirSync(vms)) {
    for (const f of readdirSync(join(vms, id))) out.push(`${id}-${f}`);
  }
  return out.sort();
}

/** PIDs of live QEMUs started under a directory (every qemu.pid below it whose process has the directory on its command line). */
export function qemuPids(dir: string): number[] {
  const pids: number[] = [];
  const walk = (d: string, depth: number) => {
    let entries;
    try {
      entries = readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      if (e.isDirectory() && depth < 4) walk(join(d, e.name), depth + 1);
      else if (e.name === "qemu.pid") {
        const pid = Number(readFileSync(join(d, e.name), "utf8").trim() || "0");
        if (pid > 1 && qemuAlive(pid, dir)) pids.push(pid);
      }
    }
  };
  walk(dir, 0);
  return pids;
}

export function qemuAlive(pid: number, stateDir: string): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    if (/\) [ZX] /.test(stat)) return false;
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(stateDir);
  } catch {
    return false;
  }
}

/** SIGKILLs every QEMU started under the directory (by PID, from the pidfiles), then removes it. */
export async function cleanupState(stateDir: string): Promise<void> {
  let pids: number[] = [];
  try {
    pids = qemuPids(stateDir);
  } catch {
    // unreadable pidfile: nothing of ours
  }
  for (const pid of pids) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // gone
    }
  }
  const deadline = Date.now() + 10_000;
  while (pids.some((p) => qemuAlive(p, stateDir)) && Date.now() < deadline) await Bun.sleep(50);
  rmSync(stateDir, { recursive: true, force: true });
}

/** A "QEMU" that answers --version like the real one and fails to start any VM. */
export function brokenQemu(dir: string): string {
  const path = join(dir, "broken-qemu");
  writeFileSync(path, '#!/bin/sh\nif [ "$1" = --version ]; then exec qemu-system-x86_64 --version; fi\necho "qemu-system-x86_64: simulated failure" >&2\nexit 1\n');
  chmodSync(path, 0o755);
  return path;
}

/**
 * A qcow2 image with nothing to boot: the firmware finds no boot sector and waits, so the
 * guest has no OS to act on the ACPI power button (a graceful stop can only time out).
 */
export function blankImage(dir: string, name: string): string {
  const path = join(dir, `${name}.qcow2`);
  const r = Bun.spawnSync(["qemu-img", "create", "-q", "-f", "qcow2", path, "64M"]);
  if (r.exitCode !== 0) throw new Error(`qemu-img create failed: ${r.stderr.toString()}`);
  return path;
}
