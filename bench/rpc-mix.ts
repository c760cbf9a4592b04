/** The call mix bench:rpc measures, shared with bench/rpc-loop.ts (the profiling driver). */
import { LibvirtClient, remoteProcedures as P, type RemoteNonnullDomain } from "../src/libvirt/index.ts";

export type Caller = Pick<LibvirtClient, "call">;

/** Lookup by name + XML + info, round robin over `names`, until `stopAt`; returns the calls made. */
export async function mix(client: Caller, names: string[], stopAt: number, offset: number): Promise<number> {
  let i = offset;
  let calls = 0;
  while (performance.now() < stopAt) {
    const { dom } = await client.call(P.domainLookupByName, { name: names[i % names.length]! });
    await client.call(P.domainGetXmlDesc, { dom, flags: 0 });
    await client.call(P.domainGetInfo, { dom });
    calls += 3;
    i++;
  }
  return calls;
}

/** Defines `count` test-driver domains named `${prefix}-${i}`. */
export async function defineDomains(client: Caller, prefix: string, count: number): Promise<{ names: string[]; doms: RemoteNonnullDomain[] }> {
  const names = Array.from({ length: count }, (_, i) => `${prefix}-${i}`);
  const doms: RemoteNonnullDomain[] = [];
  for (const name of names) {
    const xml = `<domain type='test'><name>${name}</name><memory>65536</memory><vcpu>1</vcpu><os><type>hvm</type></os></domain>`;
    doms.push((await client.call(P.domainDefineXml, { xml })).dom);
  }
  return { names, doms };
}
