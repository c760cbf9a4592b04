/** How the CLI shows API objects to a person: tables and field lists (`-o table`). */
import type { ApiConsole, ApiImage, ApiStatus, ApiVm } from "../api-types/json.ts";
import { formatFields, formatTable } from "./table.ts";
import { formatAge, formatGiB, formatMiB } from "./units.ts";

export function vmTable(vms: ApiVm[], now = Date.now()): string {
  return formatTable(
    ["NAME", "ID", "STATE", "VCPUS", "MEMORY", "IP", "SSH", "IMAGE", "AGE"],
    vms.map((v) => [v.name, v.id, v.state, v.vcpus, formatMiB(v.memory_mb), v.ip_address, sshColumn(v), v.image, formatAge(v.created_at, now)]),
  );
}

function sshColumn(v: ApiVm): string | null {
  if (!v.ip_address) return null;
  return `${v.ssh_user}@${v.ip_address}${v.ssh_port !== null ? `:${v.ssh_port}` : ""}`;
}

function sshCommand(v: ApiVm): string | null {
  if (!v.ip_address) return null;
  return `ssh ${v.ssh_port !== null ? `-p ${v.ssh_port} ` : ""}${v.ssh_user}@${v.ip_address}  (or: rcloud vm ssh ${v.name})`;
}

export function vmDetails(v: ApiVm, now = Date.now()): string {
  const net = v.network;
  const netText =
    net.mode === "bridge"
      ? `bridge ${net.bridge ?? ""}`.trim()
      : net.mode === "user"
        ? `user${net.ssh_port !== null ? ` (ssh forwarded from 127.0.0.1:${net.ssh_port})` : ""}`
        : net.mode;
  const head = formatFields([
    ["Name", v.name],
    ["ID", v.id],
    ["UUID", v.uuid],
    ["State", v.state],
    ["vCPUs", v.vcpus],
    ["Memory", `${formatMiB(v.memory_mb)} (${v.memory_mb} MiB)`],
    ["Image", v.image],
    ["Network", netText],
    ["MAC", net.mac_address],
    ["IP", v.ip_address],
    ["SSH", sshCommand(v)],
    ["Kernel", v.kernel],
    ["Initrd", v.initrd],
    ["Cmdline", v.cmdline],
    ["Created", `${v.created_at} (${formatAge(v.created_at, now)} ago)`],
    ["Updated", v.updated_at],
  ]);
  const disks = formatTable(
    ["DISK", "SIZE", "BUS", "FORMAT", "SERIAL"],
    v.disks.map((d) => [d.type, `${d.size_gb}G`, d.driver, d.format, d.serial]),
  );
  return `${head}\nDisks:\n${disks.replace(/^/gm, "  ")}`;
}

export function imageTable(images: ApiImage[]): string {
  return formatTable(
    ["NAME", "ID", "FILE", "FORMAT", "SIZE", "ON DISK"],
    images.map((i) => [i.alias ?? i.name, i.id, i.file_name, i.format, `${i.virtual_size_gb}G`, formatMiB(Math.round(i.disk_size_mb))]),
  );
}

export function imageDetails(img: ApiImage): string {
  return formatFields([
    ["Name", img.name],
    ["ID", img.id],
    ["Alias", img.alias ?? "-"],
    ["File", img.file_name],
    ["Format", img.format],
    ["Virtual size", `${img.virtual_size_gb}G`],
    ["On disk", formatMiB(Math.round(img.disk_size_mb))],
  ]);
}

/** `vm console` without following: where the console is and how to reach it. */
export function consoleDetails(info: ApiConsole, ref: string, readable: boolean): string {
  return formatFields([
    ["Console", info.type],
    ["Log file", info.logFile ? `${info.logFile}${readable ? "" : " (not readable on this machine)"}` : "none"],
    ["Attach", info.command ? `${info.command}  (on the server)` : null],
    ["SSH", info.ssh ? `ssh -p ${info.ssh.port} ${info.ssh.user}@${info.ssh.host}  (or: rcloud vm ssh ${ref})` : null],
  ]);
}

export function statusText(endpoint: string, s: ApiStatus): string {
  const states = Object.entries(s.vms_by_state ?? {}).map(([k, n]) => `${n} ${k}`);
  return formatFields([
    ["Server", `${endpoint} (rcloud ${s.version}, ${s.status})`],
    ["Project", s.project ?? null],
    ["Driver", s.uri !== null ? `${s.driver} ${s.uri}` : s.driver],
    ["Hypervisor", `${s.hypervisor} ${s.hypervisor_version}${s.libvirt_version ? ` (libvirt ${s.libvirt_version})` : ""}`],
    ["Host", `${s.hostname !== null ? `${s.hostname}: ` : ""}${s.cpus} CPUs, ${formatMiB(s.memory_mb)} memory${s.free_memory_mb !== null ? `, ${formatMiB(s.free_memory_mb)} free` : ""}`],
    ["Allocated", `${s.allocated.vms} VMs, ${s.allocated.vcpus} vCPUs, ${formatMiB(s.allocated.memory_mb)} memory`],
    ["VMs", states.length ? states.join(", ") : "none"],
    [
      "Storage",
      s.storage
        ? `pool ${s.storage.pool} (${s.storage.path}): ${formatGiB(s.storage.allocation_bytes)} of ${formatGiB(s.storage.capacity_bytes)} used, ${formatGiB(s.storage.available_bytes)} available`
        : null,
    ],
  ]);
}
