/**
 * QEMU processes: the accelerator choice, the command line (an argument array, never a
 * shell), the detached launch, and PID checks that resist PID reuse (the process must
 * be alive, not a zombie, and carry our QMP socket path on its command line).
 */
import { closeSync, openSync, readFileSync, statSync } from "node:fs";
import { DriverError } from "../types.ts";
import { dataDiskId, maxima, type StoredVm, type VmPaths } from "./state.ts";
import { allocateDiskSlots } from "../shared/disk-slots.ts";
import { optValue } from "../shared/qemu-opts.ts";
import { sandboxArgs } from "./confine.ts";

export type Accel = "kvm" | "tcg";
export type AccelChoice = Accel | "auto";

export function parseAccel(v: string | undefined): AccelChoice {
  if (v === undefined || v === "") return "auto";
  if (v === "auto" || v === "kvm" || v === "tcg") return v;
  throw new Error(`RCLOUD_QEMU_ACCEL must be auto, kvm or tcg, got ${JSON.stringify(v)}`);
}

/**
 * kvm when /dev/kvm opens read-write *and* a throwaway QEMU can start a vCPU with it (nested
 * or partial KVM can pass the first check and still abort QEMU, e.g. "failed to set MSR"),
 * else TCG; an explicit "kvm" that cannot work is an error.
 */
export async function resolveAccel(want: AccelChoice, binary = "qemu-system-x86_64", prefix: string[] = []): Promise<Accel> {
  if (want === "tcg") return "tcg";
  let why = "";
  try {
    closeSync(openSync("/dev/kvm", "r+"));
    why = await probeKvm(binary, prefix);
  } catch (e) {
    why = (e as Error).message;
  }
  if (!why) return "kvm";
  if (want === "kvm") throw new DriverError("unavailable", `KVM requested (qemu.accel: kvm) but it does not work here: ${why}`);
  return "tcg";
}

/** Starts and quits a paused KVM guest (as the user VMs run as: `prefix`); "" when that works, else QEMU's complaint. */
async function probeKvm(binary: string, prefix: string[]): Promise<string> {
  const p = Bun.spawn([...prefix, binary, "-accel", "kvm", "-machine", "q35", "-cpu", "host", "-m", "16", "-nodefaults", "-display", "none", "-S", "-qmp", "stdio"], {
    stdin: "pipe",
    stdout: "ignore",
    stderr: "pipe",
  });
  p.stdin.write('{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n');
  await p.stdin.end();
  const timer = setTimeout(() => p.kill("SIGKILL"), 10_000);
  const [code, err] = await Promise.all([p.exited, new Response(p.stderr).text()]);
  clearTimeout(timer);
  return code === 0 ? "" : err.trim().split("\n")[0] || `QEMU exited with ${code}`;
}

/** Alive and not a zombie (nobody reaps an orphaned QEMU whose new parent is a container's init). */
export function pidAlive(pid: number): boolean {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return false;
  }
  const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
  return state !== "Z" && state !== "X" && state !== "";
}

/** `pid` is a live QEMU started for the VM whose QMP socket is `qmpPath`. */
export function isOurQemu(pid: number, qmpPath: string): boolean {
  if (!pidAlive(pid)) return false;
  try {
    const args = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    const want = `path=${optValue(qmpPath)},`;
    return args.some((a) => a.startsWith("socket,id=qmp,") && a.includes(want));
  } catch {
    return false;
  }
}

export function readPidfile(path: string): number | null {
  try {
    const n = Number(readFileSync(path, "utf8").trim());
    return Number.isInteger(n) && n > 1 ? n : null;
  } catch {
    return null;
  }
}

/** CPU time (user + system) of a process, in nanoseconds; 0 when unknown. */
export function cpuTimeNs(pid: number): bigint {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // fields 14 and 15 (utime, stime) are at 11 and 12 after the state; USER_HZ is 100 on Linux.
    return (BigInt(f[11] ?? "0") + BigInt(f[12] ?? "0")) * 10_000_000n;
  } catch {
    return 0n;
  }
}

/** Polls until `gone()` or the deadline; true when gone. */
export async function waitUntil(gone: () => boolean, timeoutMs: number, stepMs = 50): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (gone()) return true;
    if (Date.now() >= deadline) return false;
    await Bun.sleep(stepMs);
  }
}

export const BRIDGE_HELPER = "/usr/lib/qemu/qemu-bridge-helper";

/**
 * The full QEMU command line for a VM, started paused (-S), in the foreground: not -daemonize,
 * whose fork the seccomp sandbox (spawn=deny) forbids; startQemu detaches it instead.
 */
export function qemuArgs(binary: string, accel: Accel, vm: StoredVm, p: VmPaths): string[] {
  const o = optValue;
  const args: string[] = [binary];
  const add = (...a: string[]) => args.push(...a);
  add("-name", `${vm.name},debug-threads=on`);
  add("-uuid", vm.uuid);
  const shares = vm.shares ?? [];
  // virtiofsd reads and writes the guest's memory: it must be shared memory (memfd).
  const virtiofs = shares.some((s) => s.transport === "virtiofs");
  add("-machine", virtiofs ? "q35,memory-backend=mem" : "q35");
  add("-accel", accel);
  if (accel === "kvm") add("-cpu", "host");
  // Memory up to the maximum, the balloon takes it down to memory_mb (set before the guest runs);
  // vCPUs up to the maximum can be hot-plugged.
  const { maxVcpus, maxMemoryMb } = maxima(vm);
  add("-m", String(maxMemoryMb));
  if (virtiofs) add("-object", `memory-backend-memfd,id=mem,size=${maxMemoryMb}M,share=on`);
  add("-smp", `${vm.vcpus},maxcpus=${maxVcpus}`);
  add("-nodefaults", "-no-user-config", "-display", "none");
  add("-S");
  add(...sandboxArgs(vm.network.mode === "bridge"));
  add("-pidfile", p.pidfile);
  add("-chardev", `socket,id=qmp,path=${o(p.qmp)},server=on,wait=off`, "-mon", "chardev=qmp,mode=control");
  add("-chardev", `socket,id=serial0,path=${o(p.serial)},server=on,wait=off,logfile=${o(p.serialLog)},logappend=on`, "-serial", "chardev:serial0");

  // The NIC first, so its fixed slot is free before devices get automatic addresses.
  const n = vm.network;
  if (n.mode === "user") {
    if (!n.ssh_port) throw new DriverError("failed", `${vm.name}: user networking needs an SSH port`);
    add("-netdev", `user,id=net0,hostfwd=tcp:127.0.0.1:${n.ssh_port}-:22${n.restrict ? ",restrict=on" : ""}`);
  } else if (n.mode === "bridge") {
    add("-netdev", `bridge,id=net0,br=${o(n.bridge ?? "")},helper=${BRIDGE_HELPER}`);
  }
  if (n.mode === "none") add("-nic", "none");
  else add("-device", `virtio-net-pci,netdev=net0,mac=${n.mac},bus=pcie.0,addr=0x10`);

  // PCIe root ports, before any device takes an automatic slot: one per virtio data disk (a
  // device on pcie.0 itself cannot be unplugged) and spares for disks plugged in later.
  const data = vm.disks.filter((d) => d.type === "data");
  const ports = [...data.filter((d) => d.driver === "virtio").map((d) => `port-${dataDiskId(d, vm.disks.indexOf(d))}`), ...hotplugPortIds()];
  ports.forEach((id, i) => add("-device", rootPort(id, i)));

  // The same slots as the libvirt driver: the seed on SATA port 0, SCSI disks as LUNs of one
  // virtio-scsi controller, SATA ports on q35's AHCI (ide.0-5), then on added AHCI controllers.
  const slots = allocateDiskSlots(data.map((d) => d.driver), { seed: vm.disks.some((d) => d.type === "seed") });
  const sataBus = ({ controller, unit }: { controller: number; unit: number }) => (controller === 0 ? `ide.${unit}` : `ahci${controller}.${unit}`);
  const ahciControllers = Math.max(0, ...slots.data.map((s) => (s.bus === "sata" ? s.drive!.controller : 0)));
  for (let c = 1; c <= ahciControllers; c++) add("-device", `ich9-ahci,id=ahci${c}`);
  if (slots.data.some((s) => s.bus === "scsi")) add("-device", "virtio-scsi-pci,id=scsi0");
  for (const [i, d] of vm.disks.entries()) {
    const id = d.type === "seed" ? "seed" : d.type === "root" ? "root" : dataDiskId(d, i);
    const ro = d.type === "seed" ? ",readonly=on" : ",discard=unmap";
    add("-drive", `if=none,id=${id},file=${o(p.disk(d.file))},format=${d.format}${ro}`);
    const serial = d.serial ? `,serial=${d.serial}` : "";
    if (d.type === "seed") add("-device", `ide-cd,drive=seed,bus=${sataBus(slots.seed!.drive!)}`);
    else if (d.type === "root") add("-device", `virtio-blk-pci,drive=root,bootindex=1`);
    else {
      const slot = slots.data[data.indexOf(d)]!;
      const dev = `id=disk-${id},drive=${id}`;
      if (slot.bus === "virtio") add("-device", `virtio-blk-pci,${dev},bus=port-${id}${serial}`);
      else if (slot.bus === "nvme") add("-device", `nvme,${dev}${serial}`);
      else if (slot.bus === "scsi") add("-device", `scsi-hd,${dev},bus=scsi0.0,channel=0,scsi-id=0,lun=${slot.drive!.unit}${serial}`);
      else add("-device", `ide-hd,${dev},bus=${sataBus(slot.drive!)}${serial}`);
    }
  }

  // Shared directories: virtiofs through the share's virtiofsd (virtiofsd.ts), 9p served by QEMU.
  for (const [i, s] of shares.entries()) {
    if (s.transport === "virtiofs") {
      add("-chardev", `socket,id=fs${i},path=${o(p.share(i).socket)}`);
      add("-device", `vhost-user-fs-pci,chardev=fs${i},tag=${s.tag},queue-size=1024`);
    } else {
      add("-fsdev", `local,id=fs${i},path=${o(s.host_path)},security_model=none${s.readonly ? ",readonly=on" : ""}`);
      add("-device", `virtio-9p-pci,fsdev=fs${i},mount_tag=${s.tag}`);
    }
  }

  add("-chardev", `socket,id=qga0,path=${o(p.qga)},server=on,wait=off`);
  add("-device", "virtio-serial-pci,id=vserial0", "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0");
  add("-object", "rng-random,id=rng0,filename=/dev/urandom", "-device", "virtio-rng-pci,rng=rng0");
  add("-device", "virtio-balloon-pci,id=balloon0");
  // pvpanic on the ISA bus (what libvirt 9.0's <panic model='isa'/> gives, so both drivers
  // show guests the same device); a panic halts the guest and rcloud applies on_panic.
  add("-device", "pvpanic", "-action", "panic=pause");
  if (vm.gdb_port) add("-gdb", `tcp:127.0.0.1:${vm.gdb_port}`);

  if (vm.boot) {
    add("-kernel", vm.boot.kernel);
    if (vm.boot.initrd) add("-initrd", vm.boot.initrd);
    if (vm.boot.cmdline) add("-append", vm.boot.cmdline);
  }
  return args;
}

/** Spare PCIe root ports of every VM, for data disks plugged in while it runs. */
export const HOTPLUG_PORTS = 8;

export function hotplugPortIds(): string[] {
  return Array.from({ length: HOTPLUG_PORTS }, (_, i) => `hotplug${i}`);
}

/** The `i`-th root port: 8 functions per slot from pcie.0 slot 0x18 up (56 ports fit in 0x18-0x1e). */
function rootPort(id: string, i: number): string {
  const slot = 0x18 + Math.floor(i / 8);
  if (slot > 0x1e) throw new DriverError("unsupported", "too many PCIe root ports (data disks plus hot-plug spares)");
  const fn = i % 8;
  return `pcie-root-port,id=${id},chassis=${i + 1},bus=pcie.0,addr=0x${slot.toString(16)}.${fn}${fn === 0 ? ",multifunction=on" : ""}`;
}

/**
 * Starts QEMU detached (its own session, stdout and stderr appended to `p.qemuLog`, not a pipe
 * that would break when rcloud exits) and waits until its QMP socket exists. The spawned PID is
 * QEMU's: every prefix program execs in place. Fails with the log's last lines if it exits first.
 */
export async function startQemu(argv: string[], p: VmPaths, timeoutMs = 60_000): Promise<number> {
  const logFd = openSync(p.qemuLog, "a", 0o640);
  const logStart = statSync(p.qemuLog).size;
  let proc;
  try {
    proc = Bun.spawn(argv, { stdin: "ignore", stdout: logFd, stderr: logFd, detached: true });
  } catch (e) {
    throw new DriverError("unavailable", `cannot run ${argv[0]}: ${(e as Error).message}`, { cause: e });
  } finally {
    closeSync(logFd);
  }
  let code: number | null = null;
  void proc.exited.then((c) => void (code = c));
  const isSocket = () => {
    try {
      return statSync(p.qmp).isSocket();
    } catch {
      return false;
    }
  };
  const ready = await waitUntil(() => code !== null || isSocket(), timeoutMs, 20);
  if (code !== null) {
    const said = qemuLogTail(p, logStart);
    throw new DriverError("failed", `QEMU failed to start: ${said || `exit status ${code}`}`);
  }
  if (!ready) {
    proc.kill("SIGKILL");
    throw new DriverError("failed", `QEMU did not open its QMP socket within ${timeoutMs / 1000} s (see ${p.qemuLog})`);
  }
  proc.unref(); // it may outlive rcloud; Bun still reaps it if it exits first
  return proc.pid;
}

/** The last lines QEMU wrote to qemu.log since byte `from`, joined; "" when none. */
export function qemuLogTail(p: VmPaths, from: number): string {
  try {
    return readFileSync(p.qemuLog).subarray(from).toString("utf8").trim().split("\n").slice(-5).join("; ");
  } catch {
    return "";
  }
}

/** Runs a short command (qemu-img, --version); resolves stdout, throws DriverError with stderr. */
export async function run(args: string[], what: string, timeoutMs = 60_000): Promise<string> {
  let proc;
  try {
    proc = Bun.spawn(args, { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  } catch (e) {
    throw new DriverError("unavailable", `${what}: cannot run ${args[0]}: ${(e as Error).message}`, { cause: e });
  }
  const timer = setTimeout(() => proc.kill("SIGKILL"), timeoutMs);
  try {
    const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
    if (code !== 0) throw new DriverError("failed", `${what}: ${err.trim() || `${args[0]} exited with status ${code}`}`);
    return out;
  } finally {
    clearTimeout(timer);
  }
}
