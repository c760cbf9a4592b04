/** The host's facts and capacity as libvirt reports them (GET /status, placement checks). */
import { formatVersion, LibvirtError, remoteProcedures as P } from "../../libvirt/index.ts";
import { hostMemoryMb, memoryStatsFromLibvirt } from "../../util/host-memory.ts";
import type { HostInfo } from "../types.ts";
import type { Sessions, VmStorage } from "./storage.ts";

const ALL_CELLS = -1; // VIR_NODE_MEMORY_STATS_ALL_CELLS

export class HostFacts {
  /** Facts that do not change while connected (CPUs, versions); cleared on reconnect. */
  private fixed: Omit<HostInfo, "freeMemoryMb" | "storage"> | null = null;

  constructor(
    private readonly sessions: Sessions,
    private readonly uri: string,
    private readonly storage: VmStorage,
  ) {}

  forget(): void {
    this.fixed = null;
  }

  async info(): Promise<HostInfo> {
    const c = this.sessions();
    if (!this.fixed) {
      const [node, host, info] = await Promise.all([c.call(P.nodeGetInfo, undefined), c.call(P.connectGetHostname, undefined), c.info()]);
      this.fixed = {
        hostname: host.hostname,
        cpus: node.cpus,
        memoryMb: Number(node.memory / 1024n),
        hypervisor: info.hvType,
        hypervisorVersion: formatVersion(info.hvVersion),
        libvirtVersion: formatVersion(info.libVersion),
        driver: "libvirt",
        uri: this.uri,
      };
    }
    const [memory, storage] = await Promise.all([this.memory(), this.storage.info()]);
    return {
      ...this.fixed,
      memoryMb: memory.totalMb ?? this.fixed.memoryMb,
      freeMemoryMb: memory.availableMb,
      storage: { pool: this.storage.name, path: this.storage.path, ...storage },
    };
  }

  /**
   * Total and available memory from NODE_GET_MEMORY_STATS for all cells: NODE_GET_INFO's
   * figure is the NUMA cells' sum, which on some hosts is a fraction of the RAM (4.8 of 24 GiB).
   * Hosts without the stats (the test driver) fall back to NODE_GET_INFO and NODE_GET_FREE_MEMORY.
   */
  private async memory(): Promise<{ totalMb: number | null; availableMb: number | null }> {
    const c = this.sessions();
    const stats = async () => {
      // libvirt's convention: nparams 0 asks how many fields there are.
      const { nparams } = await c.call(P.nodeGetMemoryStats, { nparams: 0, cellNum: ALL_CELLS, flags: 0 });
      if (nparams <= 0) return null;
      return memoryStatsFromLibvirt((await c.call(P.nodeGetMemoryStats, { nparams, cellNum: ALL_CELLS, flags: 0 })).params);
    };
    const kib = await stats().catch((e) => {
      if (e instanceof LibvirtError) return null;
      throw e;
    });
    if (kib !== null) return hostMemoryMb(kib);
    const free = await c.call(P.nodeGetFreeMemory, undefined).then((f) => f.freeMem, () => null); // not every host reports it
    return { totalMb: null, availableMb: free === null ? null : Number(free / 1024n / 1024n) };
  }
}
