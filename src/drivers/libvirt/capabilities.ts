/** What rcloud reads from libvirt's host capabilities XML (CONNECT_GET_CAPABILITIES). */
import { XMLParser } from "fast-xml-parser";
import type { DomainType } from "./domain-xml.ts";

const parser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: "",
  parseTagValue: false,
  parseAttributeValue: false,
  isArray: (name) => ["guest", "domain", "secmodel", "baselabel"].includes(name),
});

type Node = Record<string, unknown>;
const nodes = (v: unknown): Node[] => (Array.isArray(v) ? v.filter((x): x is Node => typeof x === "object" && x !== null) : []);
const text = (v: unknown): string | null => (typeof v === "string" ? v : typeof v === "object" && v !== null && typeof (v as Node)["#text"] === "string" ? ((v as Node)["#text"] as string) : null);

export interface HostCapabilities {
  /** Domain types some guest architecture offers (`<domain type='kvm'>`, qemu, test …). */
  domainTypes: ReadonlySet<string>;
  /** QEMU's uid:gid from the DAC security model's base label, per domain type ("+64055:+64055"). */
  dacOwner(domainType: string): { uid: number; gid: number } | null;
}

export function readCapabilities(xml: string): HostCapabilities {
  const caps = (parser.parse(xml) as Node).capabilities as Node | undefined;
  const guests = nodes(caps?.guest);
  const domainTypes = new Set(guests.flatMap((g) => nodes((g.arch as Node | undefined)?.domain).map((d) => String(d.type))));
  const dac = nodes((caps?.host as Node | undefined)?.secmodel).find((m) => text(m.model) === "dac");
  const labels = new Map<string, { uid: number; gid: number }>();
  for (const label of nodes(dac?.baselabel)) {
    const ids = /^\+?(\d+):\+?(\d+)$/.exec(text(label) ?? "");
    if (typeof label.type === "string" && ids) labels.set(label.type, { uid: Number(ids[1]), gid: Number(ids[2]) });
  }
  return { domainTypes, dacOwner: (domainType) => labels.get(domainType) ?? null };
}

/**
 * The domain type to render: the configured one, or for "auto" kvm when the host offers it,
 * else qemu (TCG), else the one kind the host has (libvirt's test driver offers only "test").
 */
export function pickDomainType(configured: "auto" | "kvm" | "qemu", caps: HostCapabilities): DomainType {
  if (configured !== "auto") return configured;
  return (["kvm", "qemu", "test"] as const).find((t) => caps.domainTypes.has(t)) ?? "qemu";
}
