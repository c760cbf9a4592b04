/** A LibvirtDriver on a rig daemon, to watch VMs changed behind its back (test/helpers/domains.ts). */
import { afterAll, beforeAll } from "bun:test";
import { join } from "node:path";
import { LibvirtDriver } from "../../src/drivers/libvirt/driver.ts";
import { LibvirtClient } from "../../src/libvirt/index.ts";
import { removeDomains } from "./domains.ts";
import { type InstanceName, removePool, rig, unixUri } from "./rig.ts";

export interface DriverFixture {
  driver(): LibvirtDriver;
  /** A bare client on the same daemon, for changes behind the driver's back. */
  lv(): LibvirtClient;
  /** Calls the driver made, by procedure (REMOTE_PROC_...), since the last reset. */
  calls: Map<string, number>;
}

/**
 * A LibvirtDriver on rig instance `instance` (libvirt driver `kind`) with a storage pool of its
 * own, and a bare client; set up and torn down (domains named `prefix`*, the pool) around the
 * enclosing describe block.
 */
export function driverFixture(kind: "test" | "qemu", instance: InstanceName, prefix: string): DriverFixture {
  const poolName = `${prefix}-pool`;
  let driver: LibvirtDriver;
  let lv: LibvirtClient;
  const calls = new Map<string, number>();
  beforeAll(async () => {
    const poolPath = kind === "test" ? `/rctest/${poolName}` : join(rig().rigDir, "pools", poolName);
    driver = new LibvirtDriver({
      uri: unixUri(kind, instance),
      poolName,
      poolPath,
      templatePath: null,
      domainType: "auto",
      consoleLogDir: null,
      baseImagesDir: `${poolPath}-images`,
      kernelDir: null,
      client: { onCallComplete: (procedure) => calls.set(procedure, (calls.get(procedure) ?? 0) + 1) },
    });
    await driver.init();
    lv = await LibvirtClient.connect(unixUri(kind, instance));
  });
  afterAll(async () => {
    await removeDomains(lv, prefix);
    await driver.close();
    await removePool(lv, poolName);
    await lv.close();
  });
  return { driver: () => driver, lv: () => lv, calls };
}
