/**
 * rcloud entry point. Until the API server lands this connects to the configured hypervisor
 * and prints what it is, which is also a quick check that libvirtd is reachable.
 */
import { LibvirtClient } from "./libvirt/index.ts";

function formatVersion(v: bigint): string {
  const n = Number(v);
  return `${Math.floor(n / 1_000_000)}.${Math.floor((n % 1_000_000) / 1000)}.${n % 1000}`;
}

const uri = process.env.RCLOUD_LIBVIRT_URI ?? process.argv[2] ?? "qemu:///system";
try {
  const client = await LibvirtClient.connect(uri, { connectTimeoutMs: 5000 });
  const info = await client.info();
  console.log(
    JSON.stringify({ uri: info.uri, hypervisor: info.hvType, hypervisor_version: formatVersion(info.hvVersion), libvirt_version: formatVersion(info.libVersion) }),
  );
  await client.close();
} catch (e) {
  console.error(`rcloud: ${(e as Error).message}`);
  process.exit(1);
}
