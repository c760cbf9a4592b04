/** libvirt networks and bridges a VM attaches to, and where to reach a running VM. */
import { remoteProcedures as P } from "../../libvirt/index.ts";
import type { RemoteNonnullDomain, RemoteNonnullNetwork } from "../../libvirt/index.ts";
import type { VmRecord } from "../types.ts";
import type { Sessions } from "./storage.ts";

const NETWORK_CACHE_MS = 10_000;
const LIST_ACTIVE = 2;
const ADDRESS_SOURCES = [1, 2]; // the guest agent, then the host's ARP table

export class Networks {
  /** networkFor answers, briefly cached: listing VMs asks once per VM for the same bridge. */
  private readonly cache = new Map<string, { at: number; net: Promise<RemoteNonnullNetwork | null> }>();

  constructor(private readonly sessions: Sessions) {}

  /** The libvirt network called `name`, or the one whose bridge device is `name`. */
  networkFor(name: string): Promise<RemoteNonnullNetwork | null> {
    const hit = this.cache.get(name);
    if (hit && Date.now() - hit.at < NETWORK_CACHE_MS) return hit.net;
    const net = this.find(name);
    this.cache.set(name, { at: Date.now(), net });
    net.catch(() => this.cache.delete(name));
    return net;
  }

  private async find(name: string): Promise<RemoteNonnullNetwork | null> {
    const c = this.sessions();
    try {
      return (await c.call(P.networkLookupByName, { name })).net;
    } catch {
      const { nets } = await c.call(P.connectListAllNetworks, { need_results: 1, flags: LIST_ACTIVE });
      for (const net of nets) {
        const bridge = await c.call(P.networkGetBridgeName, { net }).then((r) => r.name, () => null);
        if (bridge === name) return net;
      }
      return null;
    }
  }

  /** A name is a libvirt network if one exists by that name, else a host bridge. */
  async interfaceType(bridge: string): Promise<"network" | "bridge"> {
    try {
      await this.sessions().call(P.networkLookupByName, { name: bridge });
      return "network";
    } catch {
      return "bridge";
    }
  }

  /** Where to reach a running VM: the host's forward address in user mode, else its IPv4 address if one is known. */
  async ipAddress(rec: VmRecord, forwardAddress: string, domain: () => Promise<RemoteNonnullDomain>): Promise<string | null> {
    if (rec.state !== "running") return null;
    if (rec.network.mode === "user") return forwardAddress;
    if (rec.network.mode !== "bridge" || !rec.network.mac) return null;
    const c = this.sessions();
    const mac = rec.network.mac.toLowerCase();
    // 1. DHCP leases, by MAC, of the libvirt network named so or owning that bridge
    //    (kdevops says virbr0, the bridge of the network "default").
    if (rec.network.bridge) {
      try {
        const net = await this.networkFor(rec.network.bridge);
        if (net) {
          const { leases } = await c.call(P.networkGetDhcpLeases, { net, mac, need_results: 1, flags: 0 });
          const v4 = leases.find((l) => l.type === 0 && l.mac?.toLowerCase() === mac);
          if (v4) return v4.ipaddr;
        }
      } catch {
        // no lease support on this host
      }
    }
    // 2. the guest agent, 3. the host's ARP table.
    const dom = await domain();
    for (const source of ADDRESS_SOURCES) {
      try {
        const { ifaces } = await c.call(P.domainInterfaceAddresses, { dom, source, flags: 0 });
        for (const i of ifaces) {
          if (i.hwaddr?.toLowerCase() !== mac) continue;
          const a = i.addrs.find((x) => x.type === 0);
          if (a) return a.addr;
        }
      } catch {
        // agent not configured or not running; ARP not available
      }
    }
    return null;
  }
}
