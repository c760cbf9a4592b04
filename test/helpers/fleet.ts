/**
 * A fleet of three rcloud hosts on the rig's libvirtd daemons serving libvirt's test driver
 * (cheap domains): alpha (main, unix socket), beta (remote, TCP) and gamma (fault, unix
 * socket). Used by the API, CLI and Terraform tests of many hosts.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LibvirtClient } from "../../src/libvirt/index.ts";
import { removePool, tcpUri, unixUri, waitFor } from "./rig.ts";
import { mirrorToTestDriver, startTestServer, type TestServer, waitHealthy } from "./server.ts";

export const FLEET_HOSTS = [
  { name: "alpha", uri: () => unixUri("test", "main") },
  { name: "beta", uri: () => tcpUri("test", "remote") },
  { name: "gamma", uri: () => unixUri("test", "fault") },
];

export interface Fleet {
  pool: string;
  /** server.state_dir: cordons live here across restarts. */
  stateDir: string;
  imagesDir: string;
}

export function newFleet(pool: string, imagesDir: string): Fleet {
  return { pool, stateDir: mkdtempSync(join(tmpdir(), "rcloud-fleet-state-")), imagesDir };
}

/** An rcloud configuration on the three hosts; alpha is labelled rack=a, the others rack=b. */
export function fleetConfig(f: Fleet, extra: Record<string, unknown> = {}) {
  return {
    driver: "libvirt",
    server: { state_dir: f.stateDir },
    hosts: FLEET_HOSTS.map((h) => ({ name: h.name, uri: h.uri(), labels: { rack: h.name === "alpha" ? "a" : "b" } })),
    libvirt: { storage_pool_name: f.pool, storage_pool_path: `/rctest/${f.pool}` },
    images: { base_images_dir: f.imagesDir },
    vm_defaults: { network_mode: "none", memory_mb: 128, vcpus: 1, root_disk_gb: 2, vcpu_overcommit: 64 },
    ...extra,
  };
}

/** Makes the fleet's base images on every host (the test driver sees no files: mirrorToTestDriver). */
export async function mirrorFleetImages(f: Fleet): Promise<void> {
  for (const h of FLEET_HOSTS) await mirrorToTestDriver(f.pool, { imagesDir: f.imagesDir }, h.uri());
}

export async function waitFleetOnline(server: TestServer): Promise<void> {
  await waitFor("all three hosts online", async () => (await server.req("GET", "/api/v1/hosts")).json.hosts.every((h: { state: string }) => h.state === "online"));
}

/** A server on the fleet (fleetConfig), with its images on every host, once all three are online. */
export async function startFleetServer(f: Fleet, extra: Record<string, unknown> = {}): Promise<TestServer> {
  await mirrorFleetImages(f); // the base image on each host, where the driver lists it
  const server = await startTestServer(fleetConfig(f, extra));
  await waitHealthy(server);
  await waitFleetOnline(server);
  return server;
}

/** Removes the fleet's storage pool from every host, and its state directory. */
export async function removeFleetPools(f: Fleet): Promise<void> {
  rmSync(f.stateDir, { recursive: true, force: true });
  for (const h of FLEET_HOSTS) {
    const lv = await LibvirtClient.connect(h.uri());
    await removePool(lv, f.pool);
    await lv.close();
  }
}
