/**
 * The shared REST API cases (test/api/cases.ts) on the direct QEMU driver, with real QEMU
 * processes under TCG: tiny guests (128 MiB, no network unless a case needs it, direct
 * kernel boot of the rig's guest), a temporary state directory, every QEMU killed by PID
 * at the end.
 */
import { afterAll, expect } from "bun:test";
import { join } from "node:path";
import { apiSuite, type SuiteDirs } from "../api/cases.ts";
import { brokenQemu, cleanupState, GUEST, stateFiles, tempDir } from "./helpers.ts";

const root = tempDir("api");
const stateDir = join(root, "state");
const others: string[] = [];

function config(dirs: SuiteDirs, extra: Record<string, unknown> = {}, state = stateDir) {
  return {
    driver: "qemu",
    qemu: { accel: "tcg", state_dir: state },
    images: { base_images_dir: dirs.imagesDir },
    vm_defaults: { network_mode: "none", user_network_restrict: true, memory_mb: 128, vcpus: 1, root_disk_gb: 2, kernel_dir: dirs.kernelDir, stop_timeout_s: 10 },
    ...extra,
  };
}

afterAll(async () => {
  for (const d of others) await cleanupState(d);
  await cleanupState(root);
});

apiSuite("qemu", config, {
  driver: "qemu",
  artifacts: async () => stateFiles(stateDir),
  guest: GUEST,
  vmExtras: (dirs) => ({ kernel: join(dirs.kernelDir, "vmlinuz"), initrd: join(dirs.kernelDir, "initrd.img"), cmdline: "console=ttyS0 panic=-1 quiet" }),
  memoryMb: 128,
  // User networking (restricted to the host) to cover the MAC, the SSH forward and 127.0.0.1.
  lifecycleNetwork: { request: { mode: "user", restrict: true }, expect: { mode: "user", bridge: null, ip_address: "127.0.0.1", ssh_port: expect.any(Number) }, mac: true },
  checkStatus: (json) => {
    expect(json.hypervisor).toBe("QEMU");
    expect(json.hypervisor_version).toMatch(/^\d+\.\d+/);
    expect(json.libvirt_version).toBeNull();
    expect(json.storage).toMatchObject({ pool: "state_dir", path: stateDir });
    expect(json.storage.capacity_bytes).toBeGreaterThan(0);
  },
  broken: (dirs) => {
    const state = join(tempDir("broken"), "state");
    others.push(join(state, ".."));
    return { config: config(dirs, { qemu: { accel: "tcg", state_dir: state, binary: brokenQemu(join(state, "..")) } }, state), artifacts: async () => stateFiles(state) };
  },
  unreachable: (dirs) => {
    const state = join(tempDir("down"), "state");
    others.push(join(state, ".."));
    return config(dirs, { qemu: { accel: "tcg", state_dir: state, binary: "/nonexistent/qemu-system-x86_64" } }, state);
  },
  exclusiveState: true,
  sshKeys: true,
});
