/**
 * What an uploaded kernel or initrd must look like before rcloud stores it: a sanity check
 * of its first bytes (not a proof that it boots), so a wrong file (an HTML error page, a
 * vmlinux.o, the disk image) is refused at once with a message instead of a VM that hangs.
 */

/** Bytes of the head the check needs (the x86 boot header ends at 0x206). */
export const BOOT_HEAD_BYTES = 0x240;

const startsWith = (b: Uint8Array, sig: readonly number[], at = 0) => b.length >= at + sig.length && sig.every((x, i) => b[at + i] === x);
const ascii = (s: string) => [...s].map((c) => c.charCodeAt(0));

/** x86 bzImage: the boot protocol's "HdrS" at 0x202 (Documentation/arch/x86/boot.rst); ELF: a vmlinux QEMU boots through its PVH note. */
function kernelKind(head: Uint8Array): string | null {
  if (startsWith(head, ascii("HdrS"), 0x202)) return "bzImage";
  if (startsWith(head, [0x7f, 0x45, 0x4c, 0x46])) return "ELF";
  return null;
}

/** An initramfs: a cpio archive (newc, crc, odc) or one compressed by a method the kernel can unpack. */
const INITRD_SIGNATURES: readonly (readonly number[])[] = [
  ascii("070701"),
  ascii("070702"),
  ascii("070707"),
  [0x1f, 0x8b], // gzip
  [0x28, 0xb5, 0x2f, 0xfd], // zstd
  [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00], // xz
  [0x5d, 0x00, 0x00], // lzma
  ascii("BZh"), // bzip2
  [0x02, 0x21, 0x4c, 0x18], // lz4 (legacy frame, as the kernel writes it)
  [0x89, 0x4c, 0x5a, 0x4f], // lzo
];

/** Why `head` (the first BOOT_HEAD_BYTES of a file, or all of a shorter one) is not a `kind`; null when it looks like one. */
export function bootFileProblem(kind: "kernel" | "initrd", head: Uint8Array): string | null {
  if (kind === "kernel") {
    return kernelKind(head) ? null : "is not a kernel image: expected an x86 bzImage (arch/x86/boot/bzImage, with the boot header 'HdrS' at 0x202) or an ELF vmlinux";
  }
  return INITRD_SIGNATURES.some((s) => startsWith(head, s)) ? null : "is not an initramfs: expected a cpio archive, plain or compressed (gzip, zstd, xz, lzma, bzip2, lz4, lzo)";
}

/**
 * Reads the first BOOT_HEAD_BYTES of `data` (fewer if it ends first) and returns them with
 * a stream that delivers the whole body again, head included.
 */
export async function peekHead(data: ReadableStream<Uint8Array>): Promise<{ head: Uint8Array; body: ReadableStream<Uint8Array> }> {
  const reader = data.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  let ended = false;
  while (size < BOOT_HEAD_BYTES) {
    const { value, done } = await reader.read();
    if (done) {
      ended = true;
      break;
    }
    chunks.push(value);
    size += value.byteLength;
  }
  const head = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    head.set(c, at);
    at += c.byteLength;
  }
  let first = true;
  const body = new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        if (first) {
          first = false;
          if (head.byteLength > 0) controller.enqueue(head);
          if (ended) controller.close();
          return;
        }
        const { value, done } = await reader.read();
        if (done) controller.close();
        else controller.enqueue(value);
      },
      cancel: (reason) => reader.cancel(reason),
    },
    { highWaterMark: 0 },
  );
  return { head: head.subarray(0, Math.min(size, BOOT_HEAD_BYTES)), body };
}
