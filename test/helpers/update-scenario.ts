/**
 * PATCH /vms/{id} end to end, the same on every driver (test/qemu/update.test.ts,
 * test/e2e/libvirt-update.test.ts): a TCG guest from the tiny disk image with an SSH key is
 * changed while it runs, and the guest itself is asked what it has (block devices with their
 * serials and sizes from sysfs — busybox has no udev for /dev/disk/by-id — /proc/meminfo,
 * CPUs); a marker file in its tmpfs and its boot id show it was never rebooted, until the
 * `restart: true` change that must reboot it.
 */
import { expect } from "bun:test";
import { BLOCK_SERIAL_LINES } from "./guest.ts";
import type { TestServer } from "./server.ts";
import { makeSshKey, sshRun, waitForSsh } from "./ssh.ts";

const GiB = 1024 ** 3;

/** Every block device as "name serial bytes" (serial "-" when none), then MemTotal (KiB), CPUs present, boot id, marker. */
const PROBE = [
  "for d in /sys/block/*; do",
  "  n=${d##*/}",
  ...BLOCK_SERIAL_LINES,
  "  echo \"disk $n ${s:--} $(( $(cat $d/size) * 512 ))\"",
  "done",
  "echo \"mem $(awk '/^MemTotal:/ {print $2}' /proc/meminfo)\"",
  "echo \"cpus $(ls -d /sys/devices/system/cpu/cpu[0-9]* | wc -l) online $(grep -c ^processor /proc/cpuinfo)\"",
  "echo \"boot $(cat /proc/sys/kernel/random/boot_id)\"",
  "echo \"marker $(cat /tmp/rcloud-marker 2>/dev/null || echo none)\"",
].join("\n");

export interface GuestView {
  /** Disks by serial: size in bytes. */
  disks: Map<string, { name: string; bytes: number }>;
  memTotalKiB: number;
  cpus: number;
  cpusOnline: number;
  bootId: string;
  marker: string;
  raw: string;
}

function parseProbe(out: string): GuestView {
  const v: GuestView = { disks: new Map(), memTotalKiB: 0, cpus: 0, cpusOnline: 0, bootId: "", marker: "", raw: out };
  for (const line of out.trim().split("\n")) {
    const f = line.trim().split(/\s+/);
    if (f[0] === "disk" && f[1] && f[2]) v.disks.set(f[2] === "-" ? f[1] : f[2], { name: f[1], bytes: Number(f[3]) });
    if (f[0] === "mem") v.memTotalKiB = Number(f[1]);
    if (f[0] === "cpus") {
      v.cpus = Number(f[1]);
      v.cpusOnline = Number(f[3]);
    }
    if (f[0] === "boot") v.bootId = f[1] ?? "";
    if (f[0] === "marker") v.marker = f[1] ?? "";
  }
  return v;
}

type Vm = Record<string, any>;

export class GuestUnderTest {
  private constructor(
    readonly server: TestServer,
    public vm: Vm,
    private readonly ssh: { port: number; user: string; key: string },
  ) {}

  /** Creates the VM (restricted user networking, root over SSH) and waits until SSH answers. */
  static async create(server: TestServer, body: Record<string, unknown>): Promise<GuestUnderTest> {
    const key = makeSshKey();
    const res = await server.req("POST", "/api/v1/vms", { image: "rcloud-tiny", ssh_public_key: key.publicKey, network: { mode: "user", restrict: true }, ...body });
    expect({ status: res.status, error: res.json?.error }).toEqual({ status: 201, error: undefined });
    const g = new GuestUnderTest(server, res.json, { port: res.json.ssh_port, user: "root", key: key.privateKey });
    await waitForSsh(g.ssh, "true");
    return g;
  }

  /** What the guest sees now. */
  async look(): Promise<GuestView> {
    return parseProbe(await sshRun(this.ssh, PROBE, 20));
  }

  /** Polls the guest until `ok` holds (hot-plug and the balloon take a moment), up to `timeoutMs`. */
  async until(what: string, ok: (v: GuestView) => boolean, timeoutMs = 60_000): Promise<GuestView> {
    const deadline = Date.now() + timeoutMs;
    let last: GuestView | null = null;
    for (;;) {
      last = await this.look().catch(() => last);
      if (last && ok(last)) return last;
      if (Date.now() > deadline) throw new Error(`the guest did not show ${what} within ${timeoutMs} ms; last probe:\n${last?.raw ?? "(no answer)"}`);
      await Bun.sleep(1000);
    }
  }

  run(command: string): Promise<string> {
    return sshRun(this.ssh, command, 20);
  }

  async patch(body: Record<string, unknown>): Promise<{ status: number; json: any }> {
    const res = await this.server.req("PATCH", `/api/v1/vms/${this.vm.id}`, body);
    if (res.status === 200) this.vm = res.json;
    return res;
  }

  async get(): Promise<Vm> {
    const res = await this.server.req("GET", `/api/v1/vms/${this.vm.id}`);
    expect(res.status).toBe(200);
    return res.json;
  }

  async qmp(execute: string): Promise<any> {
    const res = await this.server.req("POST", `/api/v1/vms/${this.vm.id}/qmp`, { execute });
    expect(res.status).toBe(200);
    return res.json.return;
  }

  async delete(): Promise<void> {
    await this.server.req("DELETE", `/api/v1/vms/${this.vm.id}`);
  }
}

export const dataDisks = (vm: Vm): [string, string, number][] =>
  vm.disks.filter((d: Vm) => d.type === "data").map((d: Vm) => [d.serial, d.driver, d.size_gb]);

/** MemTotal in the guest for `mb` of memory: the kernel keeps some for itself, never more than it has. */
export function memTotalFits(kib: number, mb: number): boolean {
  return kib <= mb * 1024 && kib >= mb * 1024 - 96 * 1024;
}

/** The VM the scenario starts from: 256 MiB (max 384), 1 vCPU (max 2), one virtio data disk (kdevops0). */
export function scenarioVm(name: string): Record<string, unknown> {
  return { name, memory_mb: 256, max_memory_mb: 384, vcpus: 1, max_vcpus: 2, extra_disks: [{ size_gb: 1, type: "virtio" }] };
}

/**
 * The scenario, on a running VM made from scenarioVm(): hot-plug, grow, balloon, hot-plug a vCPU, unplug, refusals,
 * pending changes, a change that fails midway, and `restart: true`.
 * `blockAddition(serial)` makes creating the volume of the data disk with that serial fail
 * (the driver's own files are the only way to fail a real hypervisor midway).
 */
export async function updateScenario(g: GuestUnderTest, blockAddition: (serial: string) => Promise<void>): Promise<void> {
  // The guest's balloon driver takes the 256 MiB target (below the 384 maximum) once it has
  // loaded, which may be a moment after SSH answers on a busy host.
  let first = await g.look();
  for (let i = 0; i < 30 && !memTotalFits(first.memTotalKiB, 256); i++) {
    await Bun.sleep(1000);
    first = await g.look();
  }
  expect(first.disks.get("kdevops0")?.bytes).toBe(1 * GiB);
  expect(memTotalFits(first.memTotalKiB, 256)).toBe(true);
  await g.run("echo kept > /tmp/rcloud-marker");

  // Two data disks plugged in: one virtio, one SCSI (the VM had no SCSI controller yet).
  let r = await g.patch({ extra_disks: { add: [{ size_gb: 2, type: "virtio" }, { size_gb: 3, type: "scsi" }] } });
  expect({ status: r.status, error: r.json?.error }).toEqual({ status: 200, error: undefined });
  expect(r.json.restart_required).toBe(false);
  expect(r.json.pending).toBeNull();
  expect(dataDisks(r.json)).toEqual([
    ["kdevops0", "virtio", 1],
    ["kdevops1", "virtio", 2],
    ["kdevops2", "scsi", 3],
  ]);
  let seen = await g.until("kdevops1 and kdevops2", (v) => v.disks.has("kdevops1") && v.disks.has("kdevops2"));
  expect(seen.disks.get("kdevops1")!.bytes).toBe(2 * GiB);
  expect(seen.disks.get("kdevops1")!.name).toMatch(/^vd[b-z]$/);
  expect(seen.disks.get("kdevops2")!.bytes).toBe(3 * GiB);
  expect(seen.disks.get("kdevops2")!.name).toMatch(/^sd[a-z]$/);

  // The root disk grows online; memory (within max_memory_mb) and a vCPU (within max_vcpus) live.
  const rootName = [...seen.disks.values()].find((d) => d.name === "vda");
  expect(rootName).toBeDefined();
  r = await g.patch({ root_disk_gb: 2, memory_mb: 352, vcpus: 2 });
  expect({ status: r.status, error: r.json?.error }).toEqual({ status: 200, error: undefined });
  expect({ restart: r.json.restart_required, memory: r.json.memory_mb, max: r.json.max_memory_mb, vcpus: r.json.vcpus }).toEqual({ restart: false, memory: 352, max: 384, vcpus: 2 });
  expect(r.json.disks.find((d: Vm) => d.type === "root").size_gb).toBe(2);
  seen = await g.until("the root disk at 2 GiB and 96 MiB more memory", (v) => v.disks.get("vda")?.bytes === 2 * GiB && v.memTotalKiB >= first.memTotalKiB + 90 * 1024);
  expect(memTotalFits(seen.memTotalKiB, 352)).toBe(true);
  expect((await g.qmp("query-cpus-fast")).length).toBe(2);
  seen = await g.until("a second CPU", (v) => v.cpus === 2);

  // Unplugged: gone from the guest and from the VM.
  r = await g.patch({ extra_disks: { remove: ["kdevops1"] } });
  expect({ status: r.status, error: r.json?.error }).toEqual({ status: 200, error: undefined });
  expect(dataDisks(r.json)).toEqual([
    ["kdevops0", "virtio", 1],
    ["kdevops2", "scsi", 3],
  ]);
  seen = await g.until("kdevops1 gone", (v) => !v.disks.has("kdevops1"));
  expect([...seen.disks.keys()].filter((s) => s.startsWith("kdevops")).sort()).toEqual(["kdevops0", "kdevops2"]);

  // Refusals name the field and change nothing.
  const before = await g.get();
  for (const [body, field] of [
    [{ root_disk_gb: 1 }, "root_disk_gb"],
    [{ extra_disks: { add: [{ size_gb: 1, type: "nvme" }] } }, "extra_disks.add[0].type"],
    [{ extra_disks: { remove: ["kdevops9"] } }, "extra_disks.remove[0]"],
    [{ vcpus: 3, max_vcpus: 2 }, "max_vcpus"],
    [{ memory_mb: 64, extra_disks: { add: [{ size_gb: 1, type: "ide" }] } }, "extra_disks.add[0].type"],
  ] as const) {
    const bad = await g.patch(body);
    expect({ status: bad.status, code: bad.json?.error?.code, field: bad.json?.error?.field }).toEqual({ status: 422, code: "validation_error", field });
  }
  expect(await g.get()).toMatchObject({ memory_mb: before.memory_mb, vcpus: before.vcpus, disks: before.disks });

  // A change that fails midway (the second new disk's volume cannot be made): memory and the
  // first new disk are taken back, the guest never keeps the disk.
  await blockAddition("kdevops4");
  r = await g.patch({ memory_mb: 288, extra_disks: { add: [{ size_gb: 1, type: "virtio" }, { size_gb: 1, type: "virtio" }] } });
  expect(r.status).toBe(409);
  expect(r.json.error.message).toContain("exists already");
  const after = await g.get();
  expect({ memory: after.memory_mb, disks: dataDisks(after), restart: after.restart_required }).toEqual({ memory: 352, disks: dataDisks(before), restart: false });
  seen = await g.until("no kdevops3 after the rollback", (v) => !v.disks.has("kdevops3"), 45_000);
  expect(memTotalFits(seen.memTotalKiB, 352)).toBe(true);

  // Beyond the maxima: pending until the next stop and start; the guest was never rebooted so far.
  r = await g.patch({ memory_mb: 512, vcpus: 3 });
  expect({ status: r.status, error: r.json?.error }).toEqual({ status: 200, error: undefined });
  expect({ restart: r.json.restart_required, memory: r.json.memory_mb, vcpus: r.json.vcpus, pending: r.json.pending }).toEqual({
    restart: true,
    memory: 352,
    vcpus: 2,
    pending: { memory_mb: 512, max_memory_mb: 512, vcpus: 3, max_vcpus: 3 },
  });
  expect((await g.get()).pending).toEqual(r.json.pending);
  seen = await g.look();
  expect({ marker: seen.marker, boot: seen.bootId }).toEqual({ marker: "kept", boot: first.bootId });

  // restart: true applies them: graceful stop, start, answered when it runs again.
  r = await g.patch({ restart: true });
  expect({ status: r.status, error: r.json?.error }).toEqual({ status: 200, error: undefined });
  expect({ state: r.json.state, restart: r.json.restart_required, pending: r.json.pending, memory: r.json.memory_mb, vcpus: r.json.vcpus }).toEqual({
    state: "running",
    restart: false,
    pending: null,
    memory: 512,
    vcpus: 3,
  });
  seen = await g.until("a rebooted guest with 512 MiB and 3 CPUs", (v) => v.bootId !== first.bootId && v.cpusOnline === 3, 180_000);
  expect(memTotalFits(seen.memTotalKiB, 512)).toBe(true);
  expect(seen.marker).toBe("none");
  expect([...seen.disks.keys()].filter((s) => s.startsWith("kdevops")).sort()).toEqual(["kdevops0", "kdevops2"]);
  expect(seen.disks.get("vda")?.bytes).toBe(2 * GiB);
}
