/**
 * The API's view of a VM (ApiVm) from a driver's record, and its JSON text kept between
 * listings. A listing of a large fleet is mostly VMs that did not change since the last one;
 * serialising 900 of them again took longer than reading them from libvirt
 * (docs/benchmarks.md, bench:hosts), so each VM's JSON is kept with what it was made from.
 */
import type { ApiDisk, ApiPendingChanges, ApiVm } from "../api-types/json.ts";
import type { HostState } from "../api-types/values.ts";
import type { PendingChanges, VmRecord } from "../drivers/types.ts";

/** One VM as a listing shows it: its record, where it lives, and its address. */
export interface ListedVm {
  rec: VmRecord;
  host: string;
  /** The host's state when its listing is current; "offline" when it is the host's last listing. */
  hostState: HostState;
  /** false: its host did not answer in time, so its state is not known now. */
  fresh: boolean;
  ip: string | null;
}

export function toApiVm(v: ListedVm): ApiVm {
  const r = v.rec;
  const disks: ApiDisk[] = r.disks
    .filter((d) => d.type === "root" || d.type === "data")
    .map((d) => ({ type: d.type as "root" | "data", size_gb: d.size_gb, driver: d.driver, format: d.format, serial: d.serial }));
  return {
    id: r.id,
    name: r.name,
    uuid: r.uuid,
    state: v.fresh ? r.state : "unknown",
    vcpus: r.vcpus,
    max_vcpus: r.maxVcpus,
    memory_mb: r.memoryMb,
    max_memory_mb: r.maxMemoryMb,
    disks,
    restart_required: r.pending !== null,
    pending: r.pending ? toApiPending(r.pending) : null,
    network: { mode: r.network.mode, bridge: r.network.bridge, ip_address: v.ip, mac_address: r.network.mac, ssh_port: r.network.sshPort },
    image: r.image,
    ip_address: v.ip,
    ssh_port: r.network.sshPort,
    ssh_user: r.sshUser,
    kernel: r.boot?.kernel ?? null,
    initrd: r.boot?.initrd ?? null,
    cmdline: r.boot?.cmdline ?? null,
    created_at: r.createdAt,
    updated_at: r.updatedAt,
    project: r.owner,
    host: v.host,
    host_state: v.fresh ? v.hostState : "offline",
    placement_group: r.placementGroup,
    gdb_port: r.gdbPort,
    on_panic: r.onPanic,
    crash_reason: r.crashReason,
    shares: r.shares.map((s) => ({ host_path: s.hostPath, tag: s.tag, readonly: s.readonly, transport: s.transport })),
  };
}

function toApiPending(p: PendingChanges): ApiPendingChanges {
  const out: ApiPendingChanges = {};
  if (p.vcpus !== undefined) out.vcpus = p.vcpus;
  if (p.maxVcpus !== undefined) out.max_vcpus = p.maxVcpus;
  if (p.memoryMb !== undefined) out.memory_mb = p.memoryMb;
  if (p.maxMemoryMb !== undefined) out.max_memory_mb = p.maxMemoryMb;
  if (p.boot !== undefined) {
    out.kernel = p.boot?.kernel ?? null;
    out.initrd = p.boot?.initrd ?? null;
    out.cmdline = p.boot?.cmdline ?? null;
  }
  return out;
}

const created = (v: ListedVm) => v.rec.createdAt;

/**
 * One listing of several hosts' VMs, oldest first. Each host's list is normally in that order
 * already (the drivers sort theirs), so the lists are merged; one that is not (a VM just
 * created added at its end) is sorted first. ISO 8601 times are in time order as strings.
 */
export function byCreation(perHost: ListedVm[][]): ListedVm[] {
  let out: ListedVm[] = [];
  for (const list of perHost) out = merge(out, isSorted(list) ? list : [...list].sort((a, b) => (created(a) < created(b) ? -1 : created(a) > created(b) ? 1 : 0)));
  return out;
}

function isSorted(list: ListedVm[]): boolean {
  for (let i = 1; i < list.length; i++) if (created(list[i - 1]!) > created(list[i]!)) return false;
  return true;
}

/** a and b, each in order, as one list in order; on equal times a's first. */
function merge(a: ListedVm[], b: ListedVm[]): ListedVm[] {
  if (a.length === 0) return b;
  if (b.length === 0) return a;
  const out: ListedVm[] = new Array(a.length + b.length);
  let i = 0;
  let j = 0;
  let k = 0;
  while (i < a.length && j < b.length) out[k++] = created(b[j]!) < created(a[i]!) ? b[j++]! : a[i++]!;
  while (i < a.length) out[k++] = a[i++]!;
  while (j < b.length) out[k++] = b[j++]!;
  return out;
}

const encoder = new TextEncoder();
const OPEN = encoder.encode('{"vms":[');
const COMMA = encoder.encode(",");
const CLOSE = encoder.encode("]}");
/** A VM not listed for this many listings is forgotten. */
const KEEP_LISTINGS = 64;

interface Kept {
  rec: VmRecord;
  host: string;
  hostState: HostState;
  fresh: boolean;
  ip: string | null;
  json: string;
  bytes: Uint8Array;
  /** The listing that last showed it. */
  seen: number;
}

/**
 * Each VM's JSON, UTF-8 encoded, and the last body made of them. A record is never changed
 * once a driver hands it out (VmRecord), and the libvirt driver hands out the same record
 * again while nothing in it changed (records.ts), so kept bytes are current while the record
 * and the rest of what they were made from (host, host state, freshness, address) are the
 * same. A new record whose JSON is the same as before (a running VM: only its CPU time, which
 * the API does not show, moved) keeps its bytes too, so a listing in which nothing the API
 * shows changed gets the last body again, as it is: an immutable Blob, which the server
 * sends without copying (a Buffer is copied into each Response).
 */
export class VmJsonCache {
  private readonly kept = new Map<string, Kept>();
  private listings = 0;
  private last: { parts: Uint8Array[]; body: Blob } | null = null;

  private bytes(v: ListedVm): Uint8Array {
    const k = this.kept.get(v.rec.id);
    if (k && k.rec === v.rec && k.ip === v.ip && k.fresh === v.fresh && k.hostState === v.hostState && k.host === v.host) {
      k.seen = this.listings;
      return k.bytes;
    }
    const json = JSON.stringify(toApiVm(v));
    const bytes = k && k.json === json ? k.bytes : encoder.encode(json);
    this.kept.set(v.rec.id, { rec: v.rec, host: v.host, hostState: v.hostState, fresh: v.fresh, ip: v.ip, json, bytes, seen: this.listings });
    return bytes;
  }

  /** `{"vms":[...]}`, the body of GET /vms. */
  list(vms: ListedVm[]): Blob {
    const n = ++this.listings;
    const parts = vms.map((v) => this.bytes(v));
    if (n % KEEP_LISTINGS === 0) for (const [id, k] of this.kept) if (n - k.seen > KEEP_LISTINGS) this.kept.delete(id);
    const last = this.last;
    if (last && last.parts.length === parts.length && last.parts.every((p, i) => p === parts[i])) return last.body;
    const pieces: Uint8Array[] = [OPEN];
    for (let i = 0; i < parts.length; i++) {
      if (i > 0) pieces.push(COMMA);
      pieces.push(parts[i]!);
    }
    pieces.push(CLOSE);
    this.last = { parts, body: new Blob(pieces, { type: "application/json" }) };
    return this.last.body;
  }
}
