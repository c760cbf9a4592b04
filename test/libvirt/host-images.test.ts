/**
 * A libvirt host's base images and kernels through pools of their own, on the rig's real
 * daemons (qemu:///system; `main` over its unix socket, `remote` over TCP), which never share
 * a file system with rcloud as far as rcloud knows: the listing is libvirt's (compared with a
 * local scan of the same directory), an image copied from one daemon's pool to the other's
 * through readImage → writeImage comes back byte for byte (sha256 of a download), a copy that
 * fails half-way leaves no volume, a slow reader holds the daemon back, and boot files are
 * accepted only inside the kernel directory, with the right error codes. Then the same on the
 * rig's fleet hosts, whose directories exist only in their own mount namespaces, reached over
 * TLS, SSH and TCP.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, symlinkSync, truncateSync, writeFileSync, writeSync, closeSync } from "node:fs";
import { join } from "node:path";
import { LibvirtDriver } from "../../src/drivers/libvirt/driver.ts";
import { QemuDriver } from "../../src/drivers/qemu/driver.ts";
import { scanImageDir } from "../../src/drivers/shared/image-files.ts";
import type { VmDriver } from "../../src/drivers/types.ts";
import { ErrorCode, LibvirtClient, remoteProcedures as P } from "../../src/libvirt/index.ts";
import { poolTargetPath, poolXml, volumeXml } from "../../src/drivers/libvirt/storage-xml.ts";
import { type HostName, removePool, rig, tcpUri, uniqueName, unixUri, waitFor } from "../helpers/rig.ts";
import { byteSource, digest, driverRejection, sha256 } from "../helpers/image-streams.ts";
import { mirrorToTestDriver, startTestServer, testDriverConfig, waitHealthy } from "../helpers/server.ts";

const DISK_IMAGE = process.env.RCLOUD_TEST_DISK_IMAGE ?? "/var/cache/rcloud-test/disk/rcloud-tiny.qcow2";
const MiB = 1024 * 1024;

const root = join(rig().rigDir, uniqueName("himg"));
const srcDir = join(root, "src-images");
const dstDir = join(root, "dst-images");
const kernelDir = join(root, "kernels");
const names = { a: uniqueName("hia"), b: uniqueName("hib") };
const refreshes: string[] = [];
let a: LibvirtDriver;
let b: LibvirtDriver;
let lvMain: LibvirtClient;
let lvRemote: LibvirtClient;

function libvirtDriver(uri: string, poolName: string, baseImagesDir: string, kernels: string | null, poolPath = join(root, "pools", poolName)): LibvirtDriver {
  return new LibvirtDriver({
    uri,
    poolName,
    poolPath,
    templatePath: null,
    domainType: "qemu",
    consoleLogDir: null,
    baseImagesDir,
    kernelDir: kernels,
    connections: 2,
    client: { onCallComplete: (procedure) => void (procedure === "REMOTE_PROC_STORAGE_POOL_REFRESH" && refreshes.push(poolName)) },
  });
}

/** Volume names of a pool as libvirt sees the directory now. */
async function volumeNames(lv: LibvirtClient, poolName: string): Promise<string[]> {
  const { pool } = await lv.call(P.storagePoolLookupByName, { name: poolName });
  await lv.call(P.storagePoolRefresh, { pool, flags: 0 });
  const { vols } = await lv.call(P.storagePoolListAllVolumes, { pool, need_results: 1, flags: 0 });
  return vols.map((v) => v.name).sort();
}


beforeAll(async () => {
  if (!existsSync(DISK_IMAGE)) throw new Error(`${DISK_IMAGE} missing: run scripts/lib/disk-image.sh (scripts/test does)`);
  for (const d of [srcDir, dstDir, kernelDir, join(kernelDir, "sub")]) mkdirSync(d, { recursive: true });
  copyFileSync(DISK_IMAGE, join(srcDir, "rcloud-tiny.qcow2"));
  // A sparse raw image with data at both ends, big enough for backpressure to show.
  const raw = join(srcDir, "debian-13-generic-amd64.raw");
  writeFileSync(raw, randomBytes(MiB));
  truncateSync(raw, 64 * MiB);
  const fd = openSync(raw, "r+");
  writeSync(fd, randomBytes(MiB), 0, MiB, 63 * MiB);
  closeSync(fd);
  // Two images whose alias would be the same (fedora39): neither gets it.
  Bun.spawnSync(["qemu-img", "create", "-q", "-f", "qcow2", join(srcDir, "fedora-39.qcow2"), "3G"]);
  writeFileSync(join(srcDir, "fedora-39-cloud.img"), "");
  truncateSync(join(srcDir, "fedora-39-cloud.img"), MiB);
  // Not images: other names, a directory named like one.
  writeFileSync(join(srcDir, "notes.txt"), "not an image");
  mkdirSync(join(srcDir, "folder.raw"));
  copyFileSync(rig().guest.kernel, join(kernelDir, "vmlinuz"));
  writeFileSync(join(kernelDir, "sub", "vmlinuz"), "kernel in a subdirectory");
  symlinkSync("/etc/passwd", join(kernelDir, "to-passwd"));
  lvMain = await LibvirtClient.connect(unixUri("qemu"));
  lvRemote = await LibvirtClient.connect(tcpUri("qemu", "remote"));
  a = libvirtDriver(unixUri("qemu"), names.a, srcDir, kernelDir);
  b = libvirtDriver(tcpUri("qemu", "remote"), names.b, dstDir, null);
  await a.init();
  await b.init();
});

afterAll(async () => {
  await a?.close();
  await b?.close();
  for (const [lv, n] of [[lvMain, names.a], [lvRemote, names.b]] as const) {
    if (!lv) continue;
    await removePool(lv, n);
    await lv.close();
  }
  rmSync(root, { recursive: true, force: true });
});

describe("base images through the pool <pool>-images", () => {
  test("listed as libvirt sees them: the same images, names, aliases, formats and sizes as a scan of the directory", async () => {
    const listed = await a.images();
    expect(listed.map((i) => i.fileName)).toEqual(["debian-13-generic-amd64.raw", "fedora-39-cloud.img", "fedora-39.qcow2", "rcloud-tiny.qcow2"]);
    expect(listed).toEqual(scanImageDir(srcDir));
    const tiny = listed.find((i) => i.id === "rcloud-tiny")!;
    expect(tiny).toMatchObject({ alias: null, format: "qcow2", path: join(srcDir, "rcloud-tiny.qcow2") });
    expect(listed.find((i) => i.id === "debian-13-generic-amd64")).toMatchObject({ alias: "debian13", format: "raw", virtualSizeBytes: 64 * MiB });
    expect(listed.find((i) => i.id === "fedora-39")).toMatchObject({ alias: null, format: "qcow2", virtualSizeBytes: 3 * 1024 * MiB });
    // The pool is rcloud's, named after the VM pool, at base_images_dir.
    const { pool } = await lvMain.call(P.storagePoolLookupByName, { name: `${names.a}-images` });
    expect(poolTargetPath((await lvMain.call(P.storagePoolGetXmlDesc, { pool, flags: 0 })).xml)).toBe(srcDir);
  });

  test("listings do not rescan the directory each time: a file copied in by hand shows after the next refresh", async () => {
    await a.images();
    const before = refreshes.filter((n) => n === names.a).length;
    copyFileSync(DISK_IMAGE, join(srcDir, "late-1.qcow2"));
    for (let i = 0; i < 5; i++) expect((await a.images()).map((x) => x.id)).not.toContain("late-1");
    expect(refreshes.filter((n) => n === names.a).length - before).toBeLessThanOrEqual(1);
    await waitFor("the new image to be listed", async () => (await a.images()).some((x) => x.id === "late-1"), 15_000, 500);
    rmSync(join(srcDir, "late-1.qcow2"));
  });

  test("a pool stopped behind rcloud's back (virsh pool-destroy) is started again by the next listing", async () => {
    const before = await a.images();
    const { pool } = await lvMain.call(P.storagePoolLookupByName, { name: `${names.a}-images` });
    await lvMain.call(P.storagePoolDestroy, { pool });
    expect(await a.images()).toEqual(before);
    expect((await lvMain.call(P.storagePoolIsActive, { pool })).active).toBe(1);
  });

  test("a pool of rcloud's name at another directory is refused, naming both; one of another name at the directory is used", async () => {
    const name = uniqueName("hic");
    const elsewhere = join(root, "elsewhere");
    mkdirSync(elsewhere, { recursive: true });
    const { pool } = await lvMain.call(P.storagePoolDefineXml, { xml: poolXml(`${name}-images`, elsewhere), flags: 0 });
    const c = libvirtDriver(unixUri("qemu"), name, srcDir, null);
    try {
      await c.init();
      const e = await driverRejection(c.images());
      expect(e.code).toBe("conflict");
      expect(e.message).toContain(elsewhere);
      expect(e.message).toContain(srcDir);
      expect(e.message).toContain("base_images_dir");
    } finally {
      await c.close();
      await lvMain.call(P.storagePoolUndefine, { pool });
      await removePool(lvMain, name);
    }
    // The operator's pool over the directory (libvirt allows one per directory) serves as it is.
    const other = uniqueName("hid");
    const d = libvirtDriver(unixUri("qemu"), other, srcDir, null);
    try {
      await d.init();
      expect((await d.images()).map((i) => i.id)).toEqual((await a.images()).map((i) => i.id));
      expect(await lvMain.call(P.storagePoolLookupByName, { name: `${other}-images` }).catch((x) => x.code)).toBe(ErrorCode.NO_STORAGE_POOL);
    } finally {
      await d.close();
      await removePool(lvMain, other);
    }
  });

  test("an image copied from one daemon's pool to another's (unix → TCP) is byte-identical, read back by download", async () => {
    const local = sha256(new Uint8Array(readFileSync(join(srcDir, "rcloud-tiny.qcow2"))));
    const from = await a.readImage("rcloud-tiny");
    expect(from.sizeBytes).toBe(readFileSync(join(srcDir, "rcloud-tiny.qcow2")).byteLength);
    const written = await b.writeImage(from.image.fileName, from.image.format, from.sizeBytes, from.data);
    expect(written).toMatchObject({ id: "rcloud-tiny", fileName: "rcloud-tiny.qcow2", format: "qcow2", virtualSizeBytes: from.image.virtualSizeBytes, path: join(dstDir, "rcloud-tiny.qcow2") });
    expect((await b.images()).map((i) => i.id)).toEqual(["rcloud-tiny"]);
    const back = await b.readImage("rcloud-tiny");
    expect(await digest(back.data)).toEqual({ sha: local, bytes: from.sizeBytes });
    expect(await volumeNames(lvRemote, `${names.b}-images`)).toEqual(["rcloud-tiny.qcow2"]);
  });

  test("a copy that fails half-way, ends short, or is not the format announced leaves no volume; an existing name is refused", async () => {
    const bytes = new Uint8Array(readFileSync(join(srcDir, "debian-13-generic-amd64.raw")));
    const midway = byteSource(bytes, 8 * MiB);
    let e = await driverRejection(b.writeImage("broken-1.raw", "raw", bytes.byteLength, midway.stream));
    expect(e.message).toContain("source host went away");
    const short = byteSource(bytes.subarray(0, 5 * MiB));
    e = await driverRejection(b.writeImage("short-1.raw", "raw", bytes.byteLength, short.stream));
    expect(e.message).toContain("ended after");
    e = await driverRejection(b.writeImage("notqcow-1.qcow2", "qcow2", 2 * MiB, byteSource(bytes.subarray(0, 2 * MiB)).stream));
    expect(e.message).toContain("libvirt reads it as raw");
    expect(await volumeNames(lvRemote, `${names.b}-images`)).toEqual(["rcloud-tiny.qcow2"]);
    expect(readdirSync(dstDir)).toEqual(["rcloud-tiny.qcow2"]);
    // The same name, or another file of the same image id: refused, and the source let go.
    for (const fileName of ["rcloud-tiny.qcow2", "rcloud-tiny.raw"]) {
      const again = byteSource(bytes);
      e = await driverRejection(b.writeImage(fileName, "raw", bytes.byteLength, again.stream));
      expect(e.code).toBe("conflict");
      expect(again.cancelled()).toBe(true);
    }
    expect(await volumeNames(lvRemote, `${names.b}-images`)).toEqual(["rcloud-tiny.qcow2"]);
  });

  test("a download waits for its reader: the daemon reads the file only as fast as the copy goes", async () => {
    const io = () => Number(/^rchar: (\d+)$/m.exec(readFileSync(`/proc/${rig().instances.main.libvirtdPid}/io`, "utf8"))![1]);
    const from = await a.readImage("debian-13-generic-amd64");
    expect(from.sizeBytes).toBe(64 * MiB);
    const reader = from.data.getReader();
    const start = io();
    const first = await reader.read();
    // Until the daemon stops reading (whatever its speed): without backpressure that is at the file's end.
    let last = -1;
    for (let now = io(); now - last > 256 * 1024; now = io()) {
      last = now;
      await Bun.sleep(500);
    }
    console.log(`daemon read ${((last - start) / MiB).toFixed(1)} MiB of 64 while the reader waited`);
    expect(last - start).toBeLessThan(24 * MiB);
    const written = await b.writeImage("debian-13-generic-amd64.raw", "raw", from.sizeBytes, resumed(first.value!, reader));
    expect(written).toMatchObject({ format: "raw", virtualSizeBytes: 64 * MiB });
    const local = sha256(new Uint8Array(readFileSync(join(srcDir, "debian-13-generic-amd64.raw"))));
    expect((await digest((await b.readImage("debian-13-generic-amd64")).data)).sha).toBe(local);
  });

  test("an image a copy left half-made (rcloud gone mid-way) is removed when rcloud next connects", async () => {
    // What a copy cut off by a crash leaves: the image volume and its marker.
    const { pool } = await lvRemote.call(P.storagePoolLookupByName, { name: `${names.b}-images` });
    for (const name of ["crashed-1.raw", "crashed-1.raw.rcloud-partial"]) {
      await lvRemote.call(P.storageVolCreateXml, { pool, xml: volumeXml({ name, capacityBytes: 1024, format: "raw" }), flags: 0 });
    }
    expect((await b.images()).map((i) => i.id)).not.toContain("crashed-1"); // never offered meanwhile
    const c = libvirtDriver(tcpUri("qemu", "remote"), names.b, dstDir, null);
    await c.init();
    await c.close();
    expect(await volumeNames(lvRemote, `${names.b}-images`)).not.toContain("crashed-1.raw");
    expect(await volumeNames(lvRemote, `${names.b}-images`)).not.toContain("crashed-1.raw.rcloud-partial");
  });

  test("images move between a libvirt host and a QEMU-driver host both ways, byte for byte", async () => {
    const qemuDir = join(root, "qemu-images");
    mkdirSync(qemuDir, { recursive: true });
    const q: VmDriver = new QemuDriver({ binary: "qemu-system-x86_64", stateDir: join(root, "qemu-state"), accel: "tcg", runAs: null, baseImagesDir: qemuDir, kernelDir: null });
    const local = sha256(new Uint8Array(readFileSync(join(srcDir, "rcloud-tiny.qcow2"))));
    const toQemu = await a.readImage("rcloud-tiny");
    expect(await q.writeImage("rcloud-tiny.qcow2", "qcow2", toQemu.sizeBytes, toQemu.data)).toMatchObject({ format: "qcow2" });
    expect(sha256(new Uint8Array(readFileSync(join(qemuDir, "rcloud-tiny.qcow2"))))).toBe(local);
    const fromQemu = await q.readImage("rcloud-tiny");
    const name = uniqueName("hie");
    const c = libvirtDriver(unixUri("qemu"), name, join(root, "from-qemu"), null);
    try {
      await c.init();
      expect(await c.writeImage("rcloud-tiny.qcow2", "qcow2", fromQemu.sizeBytes, fromQemu.data)).toMatchObject({ format: "qcow2" });
      expect((await digest((await c.readImage("rcloud-tiny")).data)).sha).toBe(local);
    } finally {
      await c.close();
      await removePool(lvMain, name);
    }
  });
});

/** A stream again from its first chunk (read already) and the rest of its reader. */
function resumed(first: Uint8Array, reader: { read(): Promise<{ value?: Uint8Array; done: boolean }>; cancel(reason?: unknown): Promise<void> }): ReadableStream<Uint8Array> {
  let head: Uint8Array | null = first;
  return new ReadableStream<Uint8Array>(
    {
      async pull(c) {
        if (head) {
          c.enqueue(head);
          head = null;
          return;
        }
        const { value, done } = await reader.read();
        if (done || !value) c.close();
        else c.enqueue(value);
      },
      cancel: (reason) => reader.cancel(reason),
    },
    { highWaterMark: 0 },
  );
}

describe("boot files through the pool <pool>-kernels", () => {
  test("a kernel in kernel_dir is accepted, as the volume's own path", async () => {
    expect(await a.bootFile("kernel", join(kernelDir, "vmlinuz"))).toBe(join(kernelDir, "vmlinuz"));
    expect(await a.bootFile("initrd", `${kernelDir}//sub/../vmlinuz`)).toBe(join(kernelDir, "vmlinuz"));
    const { pool } = await lvMain.call(P.storagePoolLookupByName, { name: `${names.a}-kernels` });
    expect(poolTargetPath((await lvMain.call(P.storagePoolGetXmlDesc, { pool, flags: 0 })).xml)).toBe(kernelDir);
  });

  test("outside kernel_dir: not_found with one answer whether the path exists or not; missing inside: named as such", async () => {
    const outside = ["/etc/passwd", "/etc/rcloud-no-such-file", `${kernelDir}/../../etc/passwd`, join(kernelDir, "sub", "vmlinuz"), join(kernelDir, "no-such-dir", "x"), `${kernelDir}-other/vmlinuz`];
    const messages = new Set<string>();
    for (const path of outside) {
      const e = await driverRejection(a.bootFile("kernel", path));
      expect(e.code).toBe("not_found");
      messages.add(e.message);
    }
    expect([...messages]).toEqual([`must be a file inside ${kernelDir} (kernel_dir)`]);
    const missing = await driverRejection(a.bootFile("kernel", join(kernelDir, "no-such-kernel")));
    expect(missing.code).toBe("not_found");
    expect(missing.message).toBe(`${join(kernelDir, "no-such-kernel")} does not exist in ${kernelDir}`);
    const dir = await driverRejection(a.bootFile("kernel", join(kernelDir, "sub")));
    expect(dir.code).toBe("not_found");
    expect(dir.message).toContain("regular file");
    const relative = await driverRejection(a.bootFile("kernel", "vmlinuz"));
    expect(relative.code).toBe("not_found");
    expect(relative.message).toContain(kernelDir);
  });

  test("a kernel copied into kernel_dir is found within a second; a host without kernel_dir says unsupported", async () => {
    copyFileSync(rig().guest.kernel, join(kernelDir, "vmlinuz-new"));
    expect(await waitFor("the new kernel", () => a.bootFile("kernel", join(kernelDir, "vmlinuz-new")).catch(() => null), 5_000)).toBe(join(kernelDir, "vmlinuz-new"));
    const e = await driverRejection(b.bootFile("kernel", join(kernelDir, "vmlinuz")));
    expect(e.code).toBe("unsupported");
  });
});

describe("on libvirt's test driver, through test/helpers/server.ts", () => {
  test("testDriverConfig's image and mirrored kernels are what the driver lists and accepts", async () => {
    const pool = uniqueName("hitd");
    const config = await testDriverConfig(pool);
    const kernels = join(root, "td-kernels");
    mkdirSync(kernels, { recursive: true });
    writeFileSync(join(kernels, "vmlinuz"), "kernel");
    await mirrorToTestDriver(pool, { kernelDir: kernels });
    const d = libvirtDriver(unixUri("test"), pool, config.images.base_images_dir, kernels);
    const lv = await LibvirtClient.connect(unixUri("test"));
    try {
      await d.init();
      expect(await d.images()).toEqual([
        {
          id: "debian-13-generic-amd64",
          fileName: "debian-13-generic-amd64.raw",
          alias: "debian13",
          path: join(config.images.base_images_dir, "debian-13-generic-amd64.raw"),
          format: "raw",
          virtualSizeBytes: 1024 ** 3,
          diskSizeBytes: 0, // as the sparse file has
        },
      ]);
      expect(await d.bootFile("kernel", join(kernels, "vmlinuz"))).toBe(join(kernels, "vmlinuz"));
      expect((await driverRejection(d.bootFile("kernel", join(kernels, "initrd.img")))).code).toBe("not_found");
    } finally {
      await d.close();
      await removePool(lv, pool);
      await lv.close();
    }
  });
});

/** Reads libvirtd's bytes read so far (/proc/PID/io) until it stops reading; returns the growth since `start`. */
async function readUntilIdle(pid: number, start: number): Promise<number> {
  const io = () => Number(/^rchar: (\d+)$/m.exec(readFileSync(`/proc/${pid}/io`, "utf8"))![1]);
  let last = -1;
  for (let now = io(); now - last > 256 * 1024; now = io()) {
    last = now;
    await Bun.sleep(500);
  }
  return last - start;
}

describe("on the rig's fleet hosts: directories only they see, reached over TLS, SSH and TCP", () => {
  const fleetPool = uniqueName("hif");
  const made: { lv: LibvirtClient; host: HostName }[] = [];
  const drivers: LibvirtDriver[] = [];
  const hostDriver = async (name: HostName, withKernels = false) => {
    const h = rig().hosts[name];
    const d = libvirtDriver(h.uri, fleetPool, h.paths.images, withKernels ? h.paths.kernels : null, join(h.paths.pool, fleetPool));
    drivers.push(d);
    await d.init();
    if (!made.some((m) => m.host === name)) made.push({ lv: await LibvirtClient.connect(h.uri), host: name });
    return d;
  };
  const big = `rctest-big-${process.pid}.raw`;

  afterAll(async () => {
    for (const d of drivers) await d.close();
    for (const { lv, host } of made) {
      const h = rig().hosts[host];
      await removePool(lv, fleetPool);
      await lv.close();
      rmSync(join(h.rigPaths.pool, fleetPool), { recursive: true, force: true });
    }
    rmSync(join(rig().hosts.hostc.rigPaths.images, "rcloud-tiny.qcow2"), { force: true });
    rmSync(join(rig().hosts.hostb.rigPaths.images, big), { force: true });
  });

  test("each host lists its own images at its own paths; hosta (TLS) → hostc (TCP) copies byte for byte", async () => {
    const [ha, hc] = [rig().hosts.hosta, rig().hosts.hostc];
    const a2 = await hostDriver("hosta");
    const c2 = await hostDriver("hostc");
    const listed = await a2.images();
    expect(listed.map((i) => [i.fileName, i.path])).toEqual(ha.images.map((f) => [f, `${ha.paths.images}/${f}`]));
    expect(existsSync(listed[0]!.path)).toBe(false); // a path on hosta, not here
    expect(await c2.images()).toEqual([]);
    const from = await a2.readImage("rcloud-tiny");
    const written = await c2.writeImage(from.image.fileName, from.image.format, from.sizeBytes, from.data);
    expect(written).toMatchObject({ id: "rcloud-tiny", format: "qcow2", path: `${hc.paths.images}/rcloud-tiny.qcow2`, virtualSizeBytes: from.image.virtualSizeBytes });
    const local = sha256(new Uint8Array(readFileSync(join(ha.rigPaths.images, "rcloud-tiny.qcow2"))));
    expect(await digest((await c2.readImage("rcloud-tiny")).data)).toEqual({ sha: local, bytes: from.sizeBytes });
    rmSync(join(hc.rigPaths.images, "rcloud-tiny.qcow2")); // hostc as it was, for the next test
  });

  test("POST /api/v1/images/{id}/copy: the service's copy between two of them, then listed on both", async () => {
    const [ha, hc] = [rig().hosts.hosta, rig().hosts.hostc];
    const host = (name: string, h: typeof ha) => ({ name, uri: h.uri, base_images_dir: h.paths.images, storage_pool_path: join(h.paths.pool, fleetPool) });
    const server = await startTestServer({
      driver: "libvirt",
      server: { state_dir: join(root, "api-state") },
      hosts: [host("hosta", ha), host("hostc", hc)],
      libvirt: { storage_pool_name: fleetPool },
      vm_defaults: { network_mode: "none" },
    });
    try {
      await waitHealthy(server);
      await waitFor("both hosts online", async () => (await server.req("GET", "/api/v1/hosts")).json.hosts.every((h: { state: string }) => h.state === "online"));
      expect((await server.req("GET", "/api/v1/images/rcloud-tiny")).json.hosts).toEqual(["hosta"]);
      const copied = await server.req("POST", "/api/v1/images/rcloud-tiny/copy", { to: "hostc" });
      expect(copied.status).toBe(200);
      expect(copied.json).toMatchObject({ id: "rcloud-tiny", format: "qcow2", hosts: ["hosta", "hostc"] });
      expect(sha256(new Uint8Array(readFileSync(join(hc.rigPaths.images, "rcloud-tiny.qcow2"))))).toBe(sha256(new Uint8Array(readFileSync(join(ha.rigPaths.images, "rcloud-tiny.qcow2")))));
      const again = await server.req("POST", "/api/v1/images/rcloud-tiny/copy", { to: "hostc" });
      expect(again.status).toBe(409);
    } finally {
      await server.stop();
    }
  });

  test("a download over SSH (hostb) holds hostb's libvirtd back while its reader waits, and delivers every byte", async () => {
    const hb = rig().hosts.hostb;
    const file = join(hb.rigPaths.images, big);
    writeFileSync(file, randomBytes(MiB));
    truncateSync(file, 64 * MiB);
    const fd = openSync(file, "r+");
    writeSync(fd, randomBytes(MiB), 0, MiB, 63 * MiB);
    closeSync(fd);
    const b2 = await hostDriver("hostb");
    const from = await b2.readImage(big.replace(/\.raw$/, ""));
    const reader = from.data.getReader();
    const start = Number(/^rchar: (\d+)$/m.exec(readFileSync(`/proc/${hb.libvirtdPid}/io`, "utf8"))![1]);
    const first = await reader.read();
    const read = await readUntilIdle(hb.libvirtdPid, start);
    console.log(`hostb's libvirtd read ${(read / MiB).toFixed(1)} MiB of 64 while the reader waited (ssh)`);
    expect(read).toBeLessThan(24 * MiB);
    expect(await digest(resumed(first.value!, reader))).toEqual({ sha: sha256(new Uint8Array(readFileSync(file))), bytes: 64 * MiB });
  });

  test("boot files are checked on the host: hostc's kernel is accepted though no such file exists here", async () => {
    const hc = rig().hosts.hostc;
    const c3 = await hostDriver("hostc", true);
    expect(existsSync(hc.guest.kernel)).toBe(false);
    expect(await c3.bootFile("kernel", hc.guest.kernel)).toBe(hc.guest.kernel);
    expect(await c3.bootFile("initrd", hc.guest.initrd)).toBe(hc.guest.initrd);
    const e = await driverRejection(c3.bootFile("kernel", `${hc.paths.kernels}/no-such-kernel`));
    expect(e).toMatchObject({ code: "not_found", message: `${hc.paths.kernels}/no-such-kernel does not exist in ${hc.paths.kernels}` });
  });
});
