/**
 * Internal snapshots through libvirt's snapshot API: taken, listed, reverted and deleted by
 * name. The snapshot XML is built by fast-xml-parser's builder (every value escaped) and read
 * by its parser. The seed CD-ROM is excluded (`snapshot='no'`): it is read-only raw.
 */
import { XMLBuilder, XMLParser } from "fast-xml-parser";
import { ErrorCode, LibvirtError, remoteProcedures as P, type LibvirtPool } from "../../libvirt/index.ts";
import type { RemoteNonnullDomain, RemoteNonnullDomainSnapshot } from "../../libvirt/index.ts";
import { DriverError, type DiskInfo, type SnapshotInfo } from "../types.ts";

const builder = new XMLBuilder({ ignoreAttributes: false, attributeNamePrefix: "@_", suppressEmptyNode: true });
const parser = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: "", parseTagValue: false, parseAttributeValue: false });

/** virDomainSnapshotRevertFlags: end up running whatever the snapshot's own state. */
const REVERT_RUNNING = 1;

/** The snapshot document: memory internal (running VM) or none (stopped VM); read-only disks left out. */
export function snapshotXml(name: string, memory: boolean, disks: Pick<DiskInfo, "type" | "path">[]): string {
  const excluded = disks.filter((d) => d.type === "seed").map((d) => ({ "@_name": d.path, "@_snapshot": "no" }));
  return builder.build({
    domainsnapshot: {
      name,
      memory: { "@_snapshot": memory ? "internal" : "no" },
      ...(excluded.length ? { disks: { disk: excluded } } : {}),
    },
  });
}

type Node = Record<string, unknown>;
const node = (v: unknown): Node => (v !== null && typeof v === "object" && !Array.isArray(v) ? (v as Node) : {});
const text = (v: unknown): string | null => (typeof v === "string" ? v : typeof node(v)["#text"] === "string" ? (node(v)["#text"] as string) : null);

/** What rcloud reports of a snapshot's XML (SNAPSHOT_GET_XML_DESC). */
export function parseSnapshotXml(xml: string): SnapshotInfo {
  const snap = node(parser.parse(xml).domainsnapshot);
  const name = text(snap.name);
  if (name === null) throw new Error("snapshot XML without a name");
  const seconds = Number(text(snap.creationTime) ?? "0");
  const memory = node(snap.memory).snapshot === "internal";
  const state = text(snap.state);
  return {
    name,
    createdAt: new Date((Number.isFinite(seconds) ? seconds : 0) * 1000).toISOString(),
    memory,
    state: state === "shutoff" || state === "disk-snapshot" ? "stopped" : "running",
    vmStateBytes: null,
  };
}

export class DomainSnapshots {
  constructor(private readonly sessions: () => LibvirtPool) {}

  async list(dom: RemoteNonnullDomain): Promise<SnapshotInfo[]> {
    const { snapshots } = await this.sessions().call(P.domainListAllSnapshots, { dom, need_results: 1, flags: 0 });
    const out: SnapshotInfo[] = [];
    for (const snap of snapshots) {
      try {
        out.push(parseSnapshotXml((await this.sessions().call(P.domainSnapshotGetXmlDesc, { snap, flags: 0 })).xml));
      } catch (e) {
        if (!isNoSnapshot(e)) throw e; // deleted meanwhile
      }
    }
    return out.sort((a, b) => (a.createdAt < b.createdAt ? -1 : a.createdAt > b.createdAt ? 1 : a.name.localeCompare(b.name)));
  }

  async create(dom: RemoteNonnullDomain, name: string, memory: boolean, disks: DiskInfo[]): Promise<SnapshotInfo> {
    // NVMe disks are QEMU arguments: a running VM's savevm holds them, libvirt's offline qemu-img does not know them.
    const nvme = disks.filter((d) => d.driver === "nvme");
    if (!memory && nvme.length > 0) {
      throw new DriverError("unsupported", `libvirt snapshots a stopped VM's disks itself and does not know its NVMe disks (${nvme.map((d) => d.serial).join(", ")}); take a memory snapshot of the running VM instead`);
    }
    const { snap } = await this.sessions().call(P.domainSnapshotCreateXml, { dom, xml_desc: snapshotXml(name, memory, disks), flags: 0 });
    return parseSnapshotXml((await this.sessions().call(P.domainSnapshotGetXmlDesc, { snap, flags: 0 })).xml);
  }

  /** `beforeStart`: run first when the revert starts the VM (a snapshot with memory). */
  async revert(dom: RemoteNonnullDomain, name: string, beforeStart: () => Promise<void>): Promise<void> {
    const snap = await this.lookup(dom, name);
    const info = parseSnapshotXml((await this.sessions().call(P.domainSnapshotGetXmlDesc, { snap, flags: 0 })).xml);
    if (info.memory) await beforeStart();
    await this.sessions().call(P.domainRevertToSnapshot, { snap, flags: info.memory ? REVERT_RUNNING : 0 });
  }

  async delete(dom: RemoteNonnullDomain, name: string): Promise<void> {
    await this.sessions().call(P.domainSnapshotDelete, { snap: await this.lookup(dom, name), flags: 0 });
  }

  private async lookup(dom: RemoteNonnullDomain, name: string): Promise<RemoteNonnullDomainSnapshot> {
    try {
      return (await this.sessions().call(P.domainSnapshotLookupByName, { dom, name, flags: 0 })).snap;
    } catch (e) {
      if (isNoSnapshot(e)) throw new DriverError("not_found", `${dom.name} has no snapshot named ${name}`, { cause: e });
      throw e;
    }
  }
}

function isNoSnapshot(e: unknown): boolean {
  return e instanceof LibvirtError && e.code === ErrorCode.NO_DOMAIN_SNAPSHOT;
}
