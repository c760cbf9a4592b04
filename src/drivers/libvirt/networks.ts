/** libvirt networks and bridges a VM attaches to, and where to reach a running VM. */
import { remoteProcedures as P } from "../../libvirt/index.ts";
import type { RemoteNonnullDomain, RemoteNonnullNetwork } from "../../libvirt/index.ts";
import type { VmRecord } from "../types.ts";
import { uuidBytes } from "./domain-state.ts";
import type { Sessions } from "./storage.ts";

const NETWORK_CACHE_MS = 10_000;
/** How long an address (or its absence) is reused: a new VM's address shows within this. */
const ADDRESS_CACHE_MS = 3_000;
const LIST_ACTIVE = 2;
const ADDRESS_SOURCES = [1, 2]; // the guest agent, then the host's ARP table

export class Networks {
  /** networkFor answers, briefly cached: listing VMs asks once per VM for the same bridge. */
  private readonly cache = new Map<string, { at: number; net: Promise<RemoteNonnullNetwork | null> }>();
  /** Bridge name → its network's leases; "<uuid> <mac>" → the address the guest agent or ARP gave. */
  private readonly leases = new Map<string, { at: number; value: Promise<Map<string, string> | null> }>();
  private readonly guestAddresses = new Map<string, { at: number; value: Promise<string | null> }>();

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

  /**
   * Where to reach a running VM: the host's forward address in user mode, else its IPv4
   * address if one is known. A listing asks this for every running VM, so answers are kept for
   * a few seconds: one DHCP-lease call per network, and per VM without a lease one
   * guest-agent/ARP lookup.
   */
  async ipAddress(rec: VmRecord, forwardAddress: string): Promise<string | null> {
    if (rec.state !== "running") return null;
    if (rec.network.mode === "user") return forwardAddress;
    if (rec.network.mode !== "bridge" || !rec.network.mac) return null;
    const mac = rec.network.mac.toLowerCase();
    // 1. DHCP leases, by MAC, of the libvirt network named so or owning that bridge
    //    (kdevops says virbr0, the bridge of the network "default").
    if (rec.network.bridge) {
      const ip = (await this.dhcpLeases(rec.network.bridge))?.get(mac);
      if (ip) return ip;
    }
    // 2. the guest agent, 3. the host's ARP table.
    return this.recent(this.guestAddresses, `${rec.uuid} ${mac}`, () => this.guestAddress(rec, mac));
  }

  /** The IPv4 leases (MAC → address) of the network for `bridge`; null when it has none or the host cannot say. */
  private dhcpLeases(bridge: string): Promise<Map<string, string> | null> {
    return this.recent(this.leases, bridge, async () => {
      try {
        const net = await this.networkFor(bridge);
        if (!net) return null;
        const { leases } = await this.sessions().call(P.networkGetDhcpLeases, { net, mac: null, need_results: 1, flags: 0 });
        return new Map(leases.filter((l) => l.type === 0 && l.mac).map((l) => [l.mac!.toLowerCase(), l.ipaddr]));
      } catch {
        return null; // no lease support on this host
      }
    });
  }

  private async guestAddress(rec: VmRecord, mac: string): Promise<string | null> {
    const dom: RemoteNonnullDomain = { name: rec.name, uuid: uuidBytes(rec.uuid), id: -1 };
    for (const source of ADDRESS_SOURCES) {
      try {
        const { ifaces } = await this.sessions().call(P.domainInterfaceAddresses, { dom, source, flags: 0 });
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

  /**
   * Forgets the addresses kept for a domain that changed (a restart may bring a new one), and
   * every network's leases; null: everything (events may have been missed).
   */
  forget(uuid: string | null): void {
    this.leases.clear();
    if (uuid === null) this.guestAddresses.clear();
    else for (const k of this.guestAddresses.keys()) if (k.startsWith(`${uuid} `)) this.guestAddresses.delete(k);
  }

  /** `read()`'s answer for `key`, shared by callers within ADDRESS_CACHE_MS of the first. */
  private recent<T>(cache: Map<string, { at: number; value: Promise<T> }>, key: string, read: () => Promise<T>): Promise<T> {
    const now = Date.now();
    const hit = cache.get(key);
    if (hit && now - hit.at < ADDRESS_CACHE_MS) return hit.value;
    if (cache.size > 10_000) for (const [k, v] of cache) if (now - v.at >= ADDRESS_CACHE_MS) cache.delete(k);
    const value = read();
    cache.set(key, { at: now, value });
    return value;
  }
}
