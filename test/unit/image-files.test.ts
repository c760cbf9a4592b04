/** The image naming rules both drivers and the service share, and the exact-length copy. */
import { describe, expect, test } from "bun:test";
import { aliasOf, checkImageToWrite, copyExactly, dropAmbiguousAliases, imageStem, isImageFileName } from "../../src/drivers/shared/image-files.ts";
import { DriverError } from "../../src/drivers/types.ts";

function reader(chunks: number[]) {
  const list = chunks.map((n) => new Uint8Array(n));
  return { read: async () => (list.length > 0 ? { done: false, value: list.shift()! } : { done: true }) };
}

describe("image files", () => {
  test("names: raw, qcow2 and img files, no hidden files, separators or markers", () => {
    for (const ok of ["debian-13.raw", "fedora_39+x.qcow2", "a.img", "0.raw"]) expect(isImageFileName(ok)).toBe(true);
    for (const bad of [".hidden.raw", "a/b.raw", "notes.txt", "x.raw.rcloud-partial", ".rcloud-partial-0123456789abcdef-x.raw", "x.qcow", "-x.raw", ""]) expect(isImageFileName(bad)).toBe(false);
    expect(imageStem("debian-13.generic.qcow2")).toBe("debian-13.generic");
  });

  test("aliases: letters then the first number; none without digits; a shared one is dropped from both", () => {
    expect(aliasOf("debian-13-generic-amd64-daily")).toBe("debian13");
    expect(aliasOf("Ubuntu-24.04")).toBe("ubuntu24");
    expect(aliasOf("rcloud-tiny")).toBeNull();
    const images = [{ alias: aliasOf("fedora-39") }, { alias: aliasOf("fedora39-cloud") }, { alias: aliasOf("debian-13") }];
    expect(dropAmbiguousAliases(images).map((i) => i.alias)).toEqual([null, null, "debian13"]);
  });

  test("what can be written: an image name, raw or qcow2, a positive whole size", () => {
    expect(() => checkImageToWrite("a.qcow2", "qcow2", 1)).not.toThrow();
    for (const [name, format, size] of [["../a.raw", "raw", 1], ["a.raw", "vmdk", 1], ["a.raw", "raw", 0], ["a.raw", "raw", 1.5]] as const) {
      const e = (() => {
        try {
          checkImageToWrite(name, format, size);
        } catch (x) {
          return x;
        }
      })();
      expect(e).toBeInstanceOf(DriverError);
      expect((e as DriverError).code).toBe("unsupported");
    }
  });

  test("copies exactly the announced bytes, in order, or fails saying how many came", async () => {
    const seen: number[] = [];
    await copyExactly(reader([3, 4]), 7, async (c) => void seen.push(c.byteLength));
    expect(seen).toEqual([3, 4]);
    await expect(copyExactly(reader([3, 3]), 7, async () => {})).rejects.toThrow("ended after 6 of the 7 bytes");
    await expect(copyExactly(reader([4, 4]), 7, async () => {})).rejects.toThrow("more than the 7 bytes");
  });
});
