/**
 * The QEMU driver's images and boot files on its local directories (real files, the rig's
 * tiny qcow2 disk, qemu-img): images() is the directory's scan, an image read from one
 * driver's directory and written into another's is byte-identical, a write that fails or
 * clashes leaves nothing (no temporary file either), and boot files are accepted only inside
 * kernel_dir with the right codes. No QEMU is started: these methods need none.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { QemuDriver } from "../../src/drivers/qemu/driver.ts";
import { removePartialImages } from "../../src/drivers/qemu/images.ts";
import { scanImageDir } from "../../src/drivers/shared/image-files.ts";
import { byteSource, driverRejection, sha256 } from "../helpers/image-streams.ts";
import { DISK_IMAGE, GUEST, tempDir } from "./helpers.ts";

const root = tempDir("img");
const srcDir = join(root, "src");
const dstDir = join(root, "dst");
const kernelDir = join(root, "kernels");
for (const d of [srcDir, dstDir, kernelDir, join(kernelDir, "sub")]) mkdirSync(d, { recursive: true });
if (!existsSync(DISK_IMAGE)) throw new Error(`${DISK_IMAGE} missing: run scripts/lib/disk-image.sh (scripts/test does)`);
copyFileSync(DISK_IMAGE, join(srcDir, "rcloud-tiny.qcow2"));
writeFileSync(join(srcDir, "debian-13-generic-amd64.raw"), randomBytes(3 * 1024 * 1024 + 17));
writeFileSync(join(srcDir, "notes.txt"), "not an image");
copyFileSync(GUEST.kernel, join(kernelDir, "vmlinuz"));
symlinkSync("/etc/passwd", join(kernelDir, "to-passwd"));

const driver = (images: string, kernels: string | null) =>
  new QemuDriver({ binary: "qemu-system-x86_64", stateDir: join(root, "state"), accel: "tcg", runAs: null, baseImagesDir: images, kernelDir: kernels });
const src = driver(srcDir, kernelDir);
const dst = driver(dstDir, null);

afterAll(() => rmSync(root, { recursive: true, force: true }));

describe("QEMU driver images", () => {
  test("images() is the scan of base_images_dir: image files only, qcow2 sizes from the header", async () => {
    const listed = await src.images();
    expect(listed).toEqual(scanImageDir(srcDir));
    expect(listed.map((i) => [i.fileName, i.format, i.alias])).toEqual([
      ["debian-13-generic-amd64.raw", "raw", "debian13"],
      ["rcloud-tiny.qcow2", "qcow2", null],
    ]);
    const info = Bun.spawnSync(["qemu-img", "info", "--output=json", join(srcDir, "rcloud-tiny.qcow2")]);
    expect(listed[1]!.virtualSizeBytes).toBe(JSON.parse(info.stdout.toString())["virtual-size"]);
  });

  test("read from one driver's directory, written into another's: byte-identical, readable by all, nothing else left", async () => {
    for (const id of ["rcloud-tiny", "debian-13-generic-amd64"]) {
      const from = await src.readImage(id);
      expect(from.sizeBytes).toBe(statSync(from.image.path).size);
      const written = await dst.writeImage(from.image.fileName, from.image.format, from.sizeBytes, from.data);
      expect(written).toEqual({ ...from.image, path: join(dstDir, from.image.fileName) });
      expect(sha256(new Uint8Array(readFileSync(written.path)))).toBe(sha256(new Uint8Array(readFileSync(from.image.path))));
      expect(statSync(written.path).mode & 0o777).toBe(0o644);
    }
    expect(readdirSync(dstDir).sort()).toEqual(["debian-13-generic-amd64.raw", "rcloud-tiny.qcow2"]);
  });

  test("a write that fails half-way, ends short, runs long or is not the announced format leaves nothing; a taken name or id is refused", async () => {
    const bytes = new Uint8Array(readFileSync(join(srcDir, "debian-13-generic-amd64.raw")));
    const failures: [string, () => Promise<unknown>, string][] = [
      ["midway", () => dst.writeImage("broken.raw", "raw", bytes.byteLength, byteSource(bytes, 1_000_000, 100_000).stream), "source host went away"],
      ["short", () => dst.writeImage("short.raw", "raw", bytes.byteLength + 1, byteSource(bytes).stream), "ended after"],
      ["long", () => dst.writeImage("long.raw", "raw", bytes.byteLength - 1, byteSource(bytes).stream), "more than"],
      ["format", () => dst.writeImage("fake.qcow2", "qcow2", bytes.byteLength, byteSource(bytes).stream), "its bytes are raw"],
    ];
    for (const [what, write, message] of failures) {
      const e = await driverRejection(write());
      expect({ what, message: e.message.includes(message) }).toEqual({ what, message: true });
    }
    for (const name of ["rcloud-tiny.qcow2", "rcloud-tiny.raw"]) {
      const s = byteSource(bytes);
      const e = await driverRejection(dst.writeImage(name, "raw", bytes.byteLength, s.stream));
      expect(e.code).toBe("conflict");
      expect(s.cancelled()).toBe(true);
    }
    expect((await driverRejection(dst.writeImage("../escape.raw", "raw", bytes.byteLength, byteSource(bytes).stream))).code).toBe("unsupported");
    expect(readdirSync(dstDir).sort()).toEqual(["debian-13-generic-amd64.raw", "rcloud-tiny.qcow2"]);
    expect(existsSync(join(root, "escape.raw"))).toBe(false);
  });

  test("reading: an unknown id is not_found; a file that shrinks while read fails the stream", async () => {
    expect((await driverRejection(src.readImage("no-such-image"))).code).toBe("not_found");
    expect((await driverRejection(src.readImage("notes"))).code).toBe("not_found");
    const path = join(srcDir, "shrinking.raw");
    writeFileSync(path, randomBytes(4 * 1024 * 1024));
    const r = await src.readImage("shrinking");
    truncateSync(path, 1024 * 1024);
    const err = await (async () => {
      for await (const _ of r.data) {
        // read on
      }
    })().then(() => null, (e: Error) => e);
    expect(err?.message).toContain("ended after");
    rmSync(path);
  });

  test("temporary files a previous run left (rcloud killed mid-copy) are removed; images are not", () => {
    writeFileSync(join(dstDir, ".rcloud-partial-0123456789abcdef-x.raw"), "half");
    expect(removePartialImages(dstDir)).toEqual([".rcloud-partial-0123456789abcdef-x.raw"]);
    expect(readdirSync(dstDir).sort()).toEqual(["debian-13-generic-amd64.raw", "rcloud-tiny.qcow2"]);
  });
});

describe("QEMU driver boot files", () => {
  test("inside kernel_dir: the real path; outside (links included): not_found with one answer; missing: named", async () => {
    expect(await src.bootFile("kernel", join(kernelDir, "sub", "..", "vmlinuz"))).toBe(join(kernelDir, "vmlinuz"));
    const messages = new Set<string>();
    for (const path of ["/etc/passwd", "/etc/rcloud-no-such-file", join(kernelDir, "to-passwd"), `${kernelDir}/../../etc/passwd`]) {
      const e = await driverRejection(src.bootFile("kernel", path));
      expect(e.code).toBe("not_found");
      messages.add(e.message);
    }
    expect([...messages]).toEqual([`must be a file inside ${kernelDir} (vm_defaults.kernel_dir)`]);
    const missing = await driverRejection(src.bootFile("initrd", join(kernelDir, "nope")));
    expect(missing).toMatchObject({ code: "not_found", message: `${join(kernelDir, "nope")} does not exist in ${kernelDir}` });
    expect((await driverRejection(src.bootFile("kernel", join(kernelDir, "sub")))).message).toContain("regular file");
    expect((await driverRejection(src.bootFile("kernel", "vmlinuz"))).code).toBe("not_found");
    expect((await driverRejection(dst.bootFile("kernel", join(kernelDir, "vmlinuz")))).code).toBe("unsupported");
  });
});
