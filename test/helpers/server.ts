/** Starts a real rcloud server (real Elysia, real libvirtd) on a free loopback port. */
import { lstatSync, mkdtempSync, readdirSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { stringify } from "yaml";
import { loadConfig } from "../../src/config/index.ts";
import { startServer, type RunningServer } from "../../src/server.ts";
import { poolTargetPath, poolXml, volumeXml } from "../../src/drivers/libvirt/storage-xml.ts";
import { scanImageDir } from "../../src/drivers/shared/image-files.ts";
import { LibvirtClient, remoteProcedures as P } from "../../src/libvirt/index.ts";
import { tinyDiskImageDir } from "./guest.ts";
import { removePool, rig, unixUri } from "./rig.ts";

export interface TestServer extends RunningServer {
  req(method: string, path: string, body?: unknown): Promise<{ status: number; json: any; text: string }>;
}

export async function startTestServer(config: Record<string, unknown>): Promise<TestServer> {
  const dir = mkdtempSync(join(tmpdir(), "rcloud-cfg-"));
  const file = join(dir, "rcloud.yaml");
  writeFileSync(file, stringify({ logging: { level: "error", format: "text" }, ...config }));
  const server = await startServer({ config: loadConfig({ file, env: {} }), port: 0 });
  const req = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${server.url}${path}`, {
      method,
      headers: body !== undefined ? { "content-type": "application/json" } : {},
      body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
    });
    const text = await res.text();
    let json: unknown = null;
    try {
      json = JSON.parse(text);
    } catch {
      json = null;
    }
    return { status: res.status, json, text };
  };
  return { ...server, req };
}

/** Polls the API until the driver has connected (health 200). */
export async function waitHealthy(s: TestServer, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const r = await s.req("GET", "/api/v1/health");
    if (r.status === 200) return;
    await Bun.sleep(100);
  }
  throw new Error("rcloud did not become healthy");
}

/** A base-image directory with one empty 1 GiB raw image (debian-13-generic-amd64, alias debian13). */
export function fakeImageDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "rcloud-images-"));
  writeFileSync(join(dir, "debian-13-generic-amd64.raw"), "");
  truncateSync(join(dir, "debian-13-generic-amd64.raw"), 1024 ** 3);
  return dir;
}

/** One connection per test-driver daemon, open for the whole run (see mirrorToTestDriver). */
const testDriverKeepers = new Map<string, Promise<LibvirtClient>>();

/**
 * libvirt's test driver sees no files: what rcloud lists through the pools `<pool>-images`
 * and `<pool>-kernels` must be made there as volumes. This makes them from local directories
 * (each image with its format and virtual size; each regular file of the kernel directory),
 * at the same paths, on the test driver at `uri` (default: the rig's main daemon). The test
 * driver forgets everything when its last connection closes, so a connection to it is held
 * open for the whole test run.
 */
export async function mirrorToTestDriver(poolName: string, dirs: { imagesDir?: string; kernelDir?: string }, uri = unixUri("test")): Promise<void> {
  if (!testDriverKeepers.has(uri)) testDriverKeepers.set(uri, LibvirtClient.connect(uri));
  const lv = await testDriverKeepers.get(uri)!;
  const mirror = async (name: string, dir: string, volumes: { name: string; capacityBytes: number; allocationBytes: number; format: "raw" | "qcow2" }[]) => {
    // One pool per directory (libvirt's rule, the test driver's too): rcloud uses the one there.
    const { pools } = await lv.call(P.connectListAllStoragePools, { need_results: 1, flags: 0 });
    for (const p of pools) if (poolTargetPath((await lv.call(P.storagePoolGetXmlDesc, { pool: p, flags: 0 })).xml) === dir) return;
    const { pool } = await lv.call(P.storagePoolDefineXml, { xml: poolXml(name, dir), flags: 0 });
    await lv.call(P.storagePoolCreate, { pool, flags: 0 });
    for (const v of volumes) await lv.call(P.storageVolCreateXml, { pool, xml: volumeXml(v), flags: 0 });
  };
  if (dirs.imagesDir) {
    const images = scanImageDir(dirs.imagesDir).map((i) => ({
      name: i.fileName,
      capacityBytes: i.virtualSizeBytes,
      allocationBytes: i.diskSizeBytes,
      format: i.format === "qcow2" ? ("qcow2" as const) : ("raw" as const),
    }));
    await mirror(`${poolName}-images`, dirs.imagesDir, images);
  }
  if (dirs.kernelDir) {
    const dir = dirs.kernelDir;
    const files = readdirSync(dir).filter((f) => lstatSync(join(dir, f)).isFile());
    const sizes = files.map((f) => lstatSync(join(dir, f)));
    await mirror(`${poolName}-kernels`, dir, files.map((f, i) => ({ name: f, capacityBytes: sizes[i]!.size, allocationBytes: sizes[i]!.blocks * 512, format: "raw" as const })));
  }
}

/**
 * An rcloud configuration on the rig's libvirt test driver, with a storage pool of its own and
 * one 1 GiB raw image (fakeImageDir) made in the test driver's `<pool>-images` too.
 */
export async function testDriverConfig(poolName: string, vmDefaults: Record<string, unknown> = { network_mode: "bridge", network_bridge: "default", memory_mb: 256, vcpus: 1, root_disk_gb: 2 }) {
  const imagesDir = fakeImageDir();
  await mirrorToTestDriver(poolName, { imagesDir });
  return {
    libvirt: { uri: unixUri("test"), storage_pool_name: poolName, storage_pool_path: `/rctest/${poolName}` },
    images: { base_images_dir: imagesDir },
    vm_defaults: vmDefaults,
  };
}

/**
 * An rcloud server on the rig's `fault` daemon (qemu:///system, TCG) with a storage pool of
 * its own and the bootable test disk as image "rcloud-tiny". `stop` deletes its VMs, stops it
 * and removes the pool.
 */
export async function faultDaemonServer(
  poolName: string,
  opts: { libvirt?: Record<string, unknown>; vmDefaults?: Record<string, unknown> } = {},
): Promise<{ server: TestServer; stop: () => Promise<void> }> {
  const server = await startTestServer({
    libvirt: { uri: unixUri("qemu", "fault"), storage_pool_name: poolName, storage_pool_path: join(rig().rigDir, "pools", poolName), domain_type: "qemu", ...opts.libvirt },
    images: { base_images_dir: tinyDiskImageDir(`${poolName}-images`) },
    vm_defaults: { network_mode: "none", memory_mb: 128, vcpus: 1, root_disk_gb: 1, ...opts.vmDefaults },
  });
  const stop = async () => {
    const list = await server.req("GET", "/api/v1/vms");
    for (const vm of list.json?.vms ?? []) await server.req("DELETE", `/api/v1/vms/${vm.id}`);
    await server.stop();
    const lv = await LibvirtClient.connect(unixUri("qemu", "fault"));
    await removePool(lv, poolName);
    await lv.close();
  };
  return { server, stop };
}
