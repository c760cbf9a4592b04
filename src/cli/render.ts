/** How the CLI shows API objects to a person: tables and field lists (`-o table`). */
import type { ApiConsole, ApiHost, ApiImage, ApiPendingChanges, ApiStatus, ApiVm } from "../api-types/json.ts";
import { HOST_STATES } from "../api-types/values.ts";
import { formatFields, formatTable } from "./table.ts";
import { formatAge, formatGiB, formatMiB } from "./units.ts";

export function vmTable(vms: ApiVm[], now = Date.now()): string {
  return formatTable(
    ["NAME", "ID", "STATE", "HOST", "VCPUS", "MEMORY", "IP", "SSH", "IMAGE", "AGE"],
    vms.map((v) => [v.name, v.id, v.state, hostColumn(v), v.vcpus, formatMiB(v.memory_mb), v.ip_address, sshColumn(v), v.image, formatAge(v.created_at, now)]),
  );
}

/** The VM's host, with the host's state when it is not plainly online (why a VM shows `unknown`). */
function hostColumn(v: ApiVm): string {
  return v.host_state === "online" ? v.host : `${v.host} (${v.host_state})`;
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
    ["Host", hostColumn(v)],
    ["Placement group", v.placement_group],
    ["vCPUs", v.max_vcpus > v.vcpus ? `${v.vcpus} (up to ${v.max_vcpus} without a restart)` : v.vcpus],
    ["Memory", `${formatMiB(v.memory_mb)} (${v.memory_mb} MiB)${v.max_memory_mb > v.memory_mb ? `, up to ${formatMiB(v.max_memory_mb)} without a restart` : ""}`],
    ["Pending", v.pending ? `${pendingText(v.pending)} at the next stop and start` : null],
    ["Image", v.image],
    ["Network", netText],
    ["MAC", net.mac_address],
    ["IP", v.ip_address],
    ["SSH", sshCommand(v)],
    ["GDB port", v.gdb_port],
    ["On panic", v.on_panic],
    ["Crash reason", v.crash_reason],
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
  // Old servers send no shares.
  const shares = (v.shares ?? []).length
    ? formatTable(["TAG", "HOST PATH", "TRANSPORT", "ACCESS", "GUEST"], (v.shares ?? []).map((s) => [s.tag, s.host_path, s.transport, s.readonly ? "ro" : "rw", `/mnt/${s.tag}`]))
    : null;
  return `${head}\nDisks:\n${disks.replace(/^/gm, "  ")}${shares ? `\nShares:\n${shares.replace(/^/gm, "  ")}` : ""}`;
}

/** What waits for a VM's next stop and start, in words. */
export function pendingText(p: ApiPendingChanges): string {
  return [
    p.vcpus !== undefined ? `${p.vcpus} vCPUs` : null,
    p.max_vcpus !== undefined ? `max ${p.max_vcpus} vCPUs` : null,
    p.memory_mb !== undefined ? `${formatMiB(p.memory_mb)} memory` : null,
    p.max_memory_mb !== undefined ? `max ${formatMiB(p.max_memory_mb)} memory` : null,
    p.kernel !== undefined ? (p.kernel === null ? "boot from disk" : `kernel ${p.kernel}`) : null,
    p.kernel !== undefined && p.kernel !== null && p.cmdline ? `cmdline ${p.cmdline}` : null,
  ]
    .filter((x) => x !== null)
    .join(", ");
}

export function imageTable(images: ApiImage[]): string {
  return formatTable(
    ["NAME", "ID", "FILE", "FORMAT", "SIZE", "ON DISK", "HOSTS"],
    images.map((i) => [i.alias ?? i.name, i.id, i.file_name, i.format, `${i.virtual_size_gb}G`, formatMiB(Math.round(i.disk_size_mb)), i.hosts.join(",")]),
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
    ["Hosts", img.hosts.length ? img.hosts.join(", ") : "none"],
  ]);
}

/** `vm console` without following: where the console is and how to reach it. */
export function consoleDetails(info: ApiConsole, ref: string, readable: boolean): string {
  return formatFields([
    ["Console", info.type],
    ["Log file", info.log_file ? `${info.log_file}${readable ? "" : " (not readable on this machine)"}` : "none"],
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
    [s.hosts.total > 1 ? "Fleet" : "Host", `${s.hostname !== null ? `${s.hostname}: ` : ""}${s.cpus} CPUs, ${formatMiB(s.memory_mb)} memory${s.free_memory_mb !== null ? `, ${formatMiB(s.free_memory_mb)} free` : ""}`],
    ["Hosts", hostCounts(s.hosts)],
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

/** "3 (2 online, 1 offline)": only the states some host is in. */
function hostCounts(h: ApiStatus["hosts"]): string {
  const parts = HOST_STATES.filter((k) => h[k] > 0).map((k) => `${h[k]} ${k}`);
  return `${h.total}${parts.length ? ` (${parts.join(", ")})` : ""}`;
}

/** Memory in MiB as GiB with one decimal (hosts: 7834 → "7.7G"); null stays null. */
function hostMemory(mib: number | null): string | null {
  return mib === null ? null : formatGiB(mib * 1024 ** 2);
}

/** What rcloud's VMs are given on the host: "3 vCPUs, 384M". */
function allocation(h: ApiHost): string {
  return `${h.allocated.vcpus} vCPU${h.allocated.vcpus === 1 ? "" : "s"}, ${formatMiB(h.allocated.memory_mb)}`;
}

function lastContact(h: ApiHost, now: number): string {
  return h.last_contact === null ? "never" : `${formatAge(h.last_contact, now)} ago`;
}

export function hostTable(hosts: ApiHost[], now = Date.now()): string {
  return formatTable(
    ["NAME", "STATE", "CPUS", "MEMORY", "ALLOCATED", "VMS", "LAST-CONTACT", "URI"],
    hosts.map((h) => [h.name, h.state, h.cpus, hostMemory(h.memory_mb), allocation(h), h.vms, lastContact(h, now), h.uri]),
  );
}

export function hostDetails(h: ApiHost, now = Date.now()): string {
  const labels = Object.entries(h.labels).map(([k, v]) => `${k}=${v}`);
  const cap = h.capacity;
  return formatFields([
    ["Name", h.name],
    ["State", h.state],
    ["URI", h.uri],
    ["Driver", h.driver],
    ["Labels", labels.length ? labels.join(", ") : "none"],
    ["Hostname", h.hostname],
    ["CPUs", h.cpus],
    ["Memory", h.memory_mb === null ? null : `${hostMemory(h.memory_mb)}${h.available_memory_mb !== null ? `, ${hostMemory(h.available_memory_mb)} available` : ""}`],
    ["Allocated", allocation(h)],
    ["Capacity", cap.vcpus === null || cap.memory_mb === null ? null : `${cap.vcpus} vCPUs, ${hostMemory(cap.memory_mb)} (with overcommit)`],
    ["VMs", h.vms],
    ["Hypervisor", h.versions.hypervisor],
    ["libvirt", h.versions.libvirt],
    ["Last contact", h.last_contact === null ? "never" : `${h.last_contact} (${lastContact(h, now)})`],
    ["Last error", h.last_error],
  ]);
}
