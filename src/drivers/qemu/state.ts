/**
 * The qemu driver's state directory: one JSON record per VM next to its disks, sockets,
 * pidfile and logs, written atomically (temp file + rename); lock.ts holds the lock file
 * so two rcloud instances never manage the same VMs.
 *
 *   <state_dir>/rcloud.lock
 *   <state_dir>/vms/<id>/{vm.json, root.qcow2, data<N>.qcow2, seed.iso,
 *                         qmp.sock, serial.sock, serial.log, qga.sock, qemu.pid, qemu.log,
 *                         fs<N>.sock, fs<N>.pid, fs<N>.log (virtiofsd of the N-th share)}
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { BRIDGE_PATTERN, DISK_ROLES, type DiskRole, isNetworkMode, isOneOf, SHARE_TAG_PATTERN, SHARE_TRANSPORTS, type ShareTransport, VM_ID_PATTERN, VM_NAME_PATTERN } from "../../api-types/values.ts";
import { writeAtomic } from "../../util/atomic-file.ts";
import { DriverError, type NetworkMode, type OnPanic, type ReportedDiskBus } from "../types.ts";

export const ID_RE = new RegExp(VM_ID_PATTERN);
const NAME_RE = new RegExp(VM_NAME_PATTERN);
const TAG_RE = new RegExp(SHARE_TAG_PATTERN);
const BRIDGE_RE = new RegExp(BRIDGE_PATTERN);
const FILE_RE = /^[a-z0-9][a-z0-9.-]{0,63}$/;
const MAC_RE = /^52:54:00(:[0-9a-f]{2}){3}$/;

export interface StoredDisk {
  type: DiskRole;
  /** File name inside the VM's directory (never a path). */
  file: string;
  size_gb: number;
  driver: ReportedDiskBus;
  format: string;
  serial: string | null;
}

/** What a running QEMU was launched with (and changed to live since): the VM's pending changes are the difference. */
export interface LiveConfig {
  vcpus: number;
  max_vcpus: number;
  memory_mb: number;
  max_memory_mb: number;
  boot: { kernel: string; initrd: string | null; cmdline: string | null } | null;
}

/** vm.json: everything needed to (re)launch the VM and to answer the API. */
export interface StoredVm {
  version: 1;
  id: string;
  name: string;
  uuid: string;
  /** vCPUs and memory for the next launch; the maxima are absent in files written before PATCH existed. */
  vcpus: number;
  max_vcpus?: number;
  memory_mb: number;
  max_memory_mb?: number;
  /** Set at launch while the VM runs; null or absent when stopped. */
  live?: LiveConfig | null;
  image: string;
  image_path: string;
  root_disk_gb: number;
  disks: StoredDisk[];
  network: { mode: NetworkMode; bridge: string | null; mac: string | null; ssh_port: number | null; restrict: boolean };
  ssh_user: string;
  boot: { kernel: string; initrd: string | null; cmdline: string | null } | null;
  created_at: string;
  updated_at: string;
  owner: string | null;
  /** Absent in files written before placement groups existed. */
  placement_group?: string | null;
  /** Host port of the gdbstub on 127.0.0.1; absent or null: none. */
  gdb_port?: number | null;
  /** Absent in files written before panics were handled: preserve. */
  on_panic?: OnPanic;
  /** Set when the guest crashed (driver.ts recordCrash), cleared by the next launch. */
  crash?: { reason: string; at: string } | null;
  /** Shared host directories (real paths); absent in files written before shares existed. */
  shares?: StoredShare[];
}

export interface StoredShare {
  host_path: string;
  tag: string;
  readonly: boolean;
  transport: ShareTransport;
}

export interface VmPaths {
  dir: string;
  json: string;
  qmp: string;
  serial: string;
  serialLog: string;
  qga: string;
  pidfile: string;
  /** QEMU's stdout and stderr. */
  qemuLog: string;
  disk(file: string): string;
  /** A guest memory dump (a DUMP_NAME_PATTERN name, checked by the caller). */
  dump(name: string): string;
  /** The virtiofsd of the `i`-th share: its vhost-user socket, pidfile and log. */
  share(i: number): { socket: string; pidfile: string; log: string };
}

export function vmPaths(stateDir: string, id: string): VmPaths {
  const dir = join(stateDir, "vms", id);
  return {
    dir,
    json: join(dir, "vm.json"),
    qmp: join(dir, "qmp.sock"),
    serial: join(dir, "serial.sock"),
    serialLog: join(dir, "serial.log"),
    qga: join(dir, "qga.sock"),
    pidfile: join(dir, "qemu.pid"),
    qemuLog: join(dir, "qemu.log"),
    disk: (file) => join(dir, file),
    dump: (name) => join(dir, name),
    share: (i) => ({ socket: join(dir, `fs${i}.sock`), pidfile: join(dir, `fs${i}.pid`), log: join(dir, `fs${i}.log`) }),
  };
}

/** The vCPU and memory maxima of a record (files from before PATCH have none: the values themselves). */
export function maxima(vm: StoredVm): { maxVcpus: number; maxMemoryMb: number } {
  return { maxVcpus: vm.max_vcpus ?? vm.vcpus, maxMemoryMb: vm.max_memory_mb ?? vm.memory_mb };
}

/** The device-model name of a data disk: `data<N>` for serial kdevops<N> (stable while disks come and go). */
export function dataDiskId(disk: StoredDisk, index: number): string {
  const n = /^kdevops(\d+)$/.exec(disk.serial ?? "")?.[1];
  return `data${n ?? `i${index}`}`;
}

/** Longest unix socket path we create must fit sun_path (108 bytes with the NUL). */
export function checkSocketPaths(stateDir: string): void {
  const longest = vmPaths(stateDir, "vm-xxxxxxxx").serial;
  if (Buffer.byteLength(longest) > 107) {
    throw new DriverError("failed", `qemu.state_dir ${stateDir} is too long: socket paths such as ${longest} must stay under 108 bytes`);
  }
}

export function writeVm(stateDir: string, vm: StoredVm): void {
  writeAtomic(vmPaths(stateDir, vm.id).json, JSON.stringify(vm, null, 2) + "\n");
}

const isStr = (v: unknown): v is string => typeof v === "string";
const isInt = (v: unknown): v is number => typeof v === "number" && Number.isInteger(v);

/** Parses and checks a vm.json; returns null (with a reason) when it is not one of ours. */
export function parseVm(text: string, id: string): { vm: StoredVm } | { error: string } {
  let v: any;
  try {
    v = JSON.parse(text);
  } catch (e) {
    return { error: `not JSON: ${(e as Error).message}` };
  }
  if (typeof v !== "object" || v === null) return { error: "not an object" };
  if (v.version !== 1) return { error: `unknown version ${String(v.version)}` };
  if (v.id !== id || !ID_RE.test(v.id)) return { error: "id does not match its directory" };
  if (!isStr(v.name) || !NAME_RE.test(v.name)) return { error: "bad name" };
  if (!isStr(v.uuid) || !/^[0-9a-f-]{36}$/.test(v.uuid)) return { error: "bad uuid" };
  if (!isInt(v.vcpus) || v.vcpus < 1 || !isInt(v.memory_mb) || v.memory_mb < 1) return { error: "bad vcpus/memory" };
  if ((v.max_vcpus !== undefined && !(isInt(v.max_vcpus) && v.max_vcpus >= v.vcpus)) || (v.max_memory_mb !== undefined && !(isInt(v.max_memory_mb) && v.max_memory_mb >= v.memory_mb))) {
    return { error: "bad max_vcpus/max_memory_mb" };
  }
  if (!Array.isArray(v.disks) || !v.disks.every((d: any) => d && isStr(d.file) && FILE_RE.test(d.file) && isOneOf(DISK_ROLES, d.type))) {
    return { error: "bad disks" };
  }
  const n = v.network;
  if (!n || !isNetworkMode(n.mode)) return { error: "bad network" };
  if (n.mac !== null && !(isStr(n.mac) && MAC_RE.test(n.mac))) return { error: "bad mac" };
  if (n.ssh_port !== null && !(isInt(n.ssh_port) && n.ssh_port > 0 && n.ssh_port < 65536)) return { error: "bad ssh_port" };
  if (v.gdb_port != null && !(isInt(v.gdb_port) && v.gdb_port > 0 && v.gdb_port < 65536)) return { error: "bad gdb_port" };
  // Shares go onto QEMU's command line: tags and paths as validated at create.
  const goodShare = (x: any) => x && isStr(x.host_path) && x.host_path.startsWith("/") && isStr(x.tag) && TAG_RE.test(x.tag) && typeof x.readonly === "boolean" && isOneOf(SHARE_TRANSPORTS, x.transport);
  if (v.shares !== undefined && !(Array.isArray(v.shares) && v.shares.every(goodShare))) return { error: "bad shares" };
  if (n.bridge !== null && !(isStr(n.bridge) && BRIDGE_RE.test(n.bridge))) return { error: "bad bridge" };
  if (v.boot !== null && !(v.boot && isStr(v.boot.kernel) && v.boot.kernel.startsWith("/"))) return { error: "bad boot" };
  return { vm: v as StoredVm };
}

/** Every VM directory: its id and its record, or why it has none. */
export function scanVms(stateDir: string): { id: string; vm: StoredVm | null; error: string | null }[] {
  const root = join(stateDir, "vms");
  let names: string[];
  try {
    names = readdirSync(root);
  } catch {
    return [];
  }
  const out: { id: string; vm: StoredVm | null; error: string | null }[] = [];
  for (const id of names.sort()) {
    if (!ID_RE.test(id)) continue; // not ours: never touched
    let text: string;
    try {
      text = readFileSync(vmPaths(stateDir, id).json, "utf8");
    } catch {
      out.push({ id, vm: null, error: null }); // a create that never completed
      continue;
    }
    const r = parseVm(text, id);
    out.push("vm" in r ? { id, vm: r.vm, error: null } : { id, vm: null, error: r.error });
  }
  return out;
}
