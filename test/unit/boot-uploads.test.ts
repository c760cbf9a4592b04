/** The pure parts of kernel uploads: the look at a file's first bytes, the command line check, which upload is current. */
import { describe, expect, test } from "bun:test";
import { currentUpload, parseUploadName } from "../../src/drivers/shared/boot-uploads.ts";
import { cmdlineProblem } from "../../src/api-types/values.ts";
import { BOOT_HEAD_BYTES, bootFileProblem, peekHead } from "../../src/vm/boot-upload-check.ts";

const withAt = (at: number, bytes: number[], size = BOOT_HEAD_BYTES) => {
  const b = new Uint8Array(size);
  b.set(bytes, at);
  return b;
};
const ascii = (s: string) => [...s].map((c) => c.charCodeAt(0));

describe("bootFileProblem", () => {
  test("a bzImage (HdrS at 0x202) and an ELF are kernels; text, zeros and a short file are not", () => {
    expect(bootFileProblem("kernel", withAt(0x202, ascii("HdrS")))).toBeNull();
    expect(bootFileProblem("kernel", withAt(0, [0x7f, 0x45, 0x4c, 0x46]))).toBeNull();
    expect(bootFileProblem("kernel", new TextEncoder().encode("<html>".repeat(200)))).toContain("not a kernel image");
    expect(bootFileProblem("kernel", new Uint8Array(BOOT_HEAD_BYTES))).toContain("not a kernel image");
    expect(bootFileProblem("kernel", withAt(0x202, ascii("HdrS")).subarray(0, 0x204))).toContain("not a kernel image");
  });

  test("initramfs: cpio and the compressions the kernel unpacks; a bzImage is not one", () => {
    for (const sig of [ascii("070701"), ascii("070702"), [0x1f, 0x8b], [0x28, 0xb5, 0x2f, 0xfd], [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00], ascii("BZh"), [0x02, 0x21, 0x4c, 0x18]]) {
      expect(bootFileProblem("initrd", withAt(0, sig))).toBeNull();
    }
    expect(bootFileProblem("initrd", withAt(0x202, ascii("HdrS")))).toContain("not an initramfs");
  });
});

test("cmdlineProblem: up to 4096 printable characters", () => {
  expect(cmdlineProblem("console=ttyS0,115200 root=/dev/vda1")).toBeNull();
  expect(cmdlineProblem("x".repeat(4096))).toBeNull();
  expect(cmdlineProblem("x".repeat(4097))).not.toBeNull();
  for (const c of ["\n", "\t", "\0", "\x7f", "\x1b"]) expect(cmdlineProblem(`a${c}b`)).not.toBeNull();
  expect(cmdlineProblem(42)).not.toBeNull();
});

test("peekHead hands back the head and a stream of the whole body, for bodies shorter and longer than the head", async () => {
  for (const sizes of [[10], [100, 1000, 5], [BOOT_HEAD_BYTES], [1, 1, 1]]) {
    const chunks = sizes.map((n, i) => new Uint8Array(n).fill(i + 1));
    const total = sizes.reduce((a, b) => a + b, 0);
    const { head, body } = await peekHead(new ReadableStream({ start: (c) => (chunks.forEach((x) => c.enqueue(x)), c.close()) }));
    expect(head.byteLength).toBe(Math.min(total, BOOT_HEAD_BYTES));
    const all = new Uint8Array(await new Response(body).arrayBuffer());
    expect(all.byteLength).toBe(total);
    expect([...all]).toEqual(chunks.flatMap((c) => [...c]));
  }
});

describe("currentUpload", () => {
  test("the newest complete upload of the kind; older, unfinished and orphaned markers are stale", () => {
    const names = ["kernel-0000000001", "kernel-0000000001.complete", "kernel-0000000002", "kernel-0000000002.complete", "kernel-0000000003", "initrd-0000000004", "initrd-0000000004.complete", "kernel-0000000009.complete", "root.qcow2"];
    const k = currentUpload(names, "kernel", true);
    expect(k.current).toBe("kernel-0000000002");
    expect(k.stale.sort()).toEqual(["kernel-0000000001", "kernel-0000000001.complete", "kernel-0000000003", "kernel-0000000009.complete"]);
    expect(currentUpload(names, "initrd", true)).toEqual({ current: "initrd-0000000004", stale: [] });
  });

  test("without markers (renamed into place) every upload name counts; nothing uploaded is null", () => {
    expect(currentUpload(["kernel-0000000001", "kernel-0000000002", "seed.iso"], "kernel", false)).toEqual({ current: "kernel-0000000002", stale: ["kernel-0000000001"] });
    expect(currentUpload(["root.qcow2"], "initrd", false)).toEqual({ current: null, stale: [] });
    expect(parseUploadName("kernel-0000000002.part")).toBeNull();
  });
});
