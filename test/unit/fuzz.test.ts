/**
 * Hostile input: random and mutated packets through the packet parser and every generated
 * reply/message decoder. Any failure must be a typed XdrDecodeError: no other exception,
 * no hang (each decode is bounded by the input size), no runaway memory.
 */
import { describe, expect, test } from "bun:test";
import { encodePacket, MessageStatus, MessageType, PacketParser } from "../../src/libvirt/packet.ts";
import { remoteMessages, remoteProcedures } from "../../src/codecs/generated/remote.ts";
import { decodeVirNetMessageError } from "../../src/codecs/generated/virnet.ts";
import { XdrDecodeError, XdrReader, XdrWriter, type Decoder } from "../../src/xdr/index.ts";

/** Small deterministic PRNG so a failure can be replayed. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 0x1_0000_0000;
  };
}

const decoders: [string, Decoder<unknown>][] = [
  ["remote_error", decodeVirNetMessageError],
  ...Object.values(remoteProcedures).flatMap((p) => (p.decodeRet ? [[p.name, p.decodeRet] as [string, Decoder<unknown>]] : [])),
  ...Object.values(remoteMessages).map((m) => [m.name, m.decode] as [string, Decoder<unknown>]),
];

/** Valid-looking seed payloads: small structures with strings, counts and optionals. */
function seedPayload(rand: () => number): Uint8Array {
  const w = new XdrWriter();
  const n = 1 + Math.floor(rand() * 12);
  for (let i = 0; i < n; i++) {
    const k = rand();
    if (k < 0.3) w.string("domain-" + Math.floor(rand() * 1000), 4194304);
    else if (k < 0.5) w.uint(Math.floor(rand() * 4));
    else if (k < 0.6) w.opaqueFixed(new Uint8Array(16).map(() => rand() * 256), 16);
    else if (k < 0.7) w.uhyper(BigInt(Math.floor(rand() * 2 ** 40)));
    else w.int(Math.floor(rand() * 2 ** 31) * (rand() < 0.5 ? -1 : 1));
  }
  return w.bytes().slice();
}

function mutate(bytes: Uint8Array, rand: () => number): Uint8Array {
  const out = bytes.slice();
  const flips = 1 + Math.floor(rand() * 4);
  for (let i = 0; i < flips && out.byteLength > 0; i++) {
    const at = Math.floor(rand() * out.byteLength);
    const k = rand();
    if (k < 0.4) out[at] = Math.floor(rand() * 256);
    else if (k < 0.7 && at + 4 <= out.byteLength) new DataView(out.buffer).setUint32(at & ~3, [0, 1, 0xffffffff, 0x7fffffff, 16384, 4194305][Math.floor(rand() * 6)]!);
    else out[at] = out[at]! ^ 0x80;
  }
  return rand() < 0.2 ? out.subarray(0, Math.floor(rand() * out.byteLength)) : out;
}

function decodeOrTypedError(decode: Decoder<unknown>, bytes: Uint8Array): "ok" | "rejected" {
  try {
    const r = new XdrReader(bytes);
    decode(r);
    return "ok";
  } catch (e) {
    if (e instanceof XdrDecodeError) return "rejected";
    throw new Error(`untyped failure: ${(e as Error).stack}`);
  }
}

describe("fuzz: decoders and packet parser", () => {
  test("100,000 random and mutated payloads through generated decoders", () => {
    const rand = rng(0xc0ffee);
    const heapBefore = process.memoryUsage().heapUsed;
    let ok = 0;
    let rejected = 0;
    for (let i = 0; i < 100_000; i++) {
      const [, decode] = decoders[Math.floor(rand() * decoders.length)]!;
      const bytes =
        rand() < 0.3 ? new Uint8Array(Math.floor(rand() * 96)).map(() => Math.floor(rand() * 256)) : mutate(seedPayload(rand), rand);
      if (decodeOrTypedError(decode, bytes) === "ok") ok++;
      else rejected++;
    }
    expect(ok + rejected).toBe(100_000);
    expect(rejected).toBeGreaterThan(50_000); // most garbage is refused...
    expect(ok).toBeGreaterThan(0); // ...but the seeds do exercise successful paths
    // No bound on the time: that measures the machine (over 40 s on a loaded 2-core one); a
    // decoder that hangs still fails by the suite's per-test timeout.
    Bun.gc(true);
    expect(process.memoryUsage().heapUsed - heapBefore).toBeLessThan(64 * 1024 * 1024);
  });

  test("100,000 random and mutated packets through the packet parser", () => {
    const rand = rng(0xbadc0de);
    let packets = 0;
    let broken = 0;
    for (let i = 0; i < 100_000; i++) {
      const parser = new PacketParser(() => packets++);
      const good = encodePacket(
        { prog: 0x20008086, vers: 1, proc: Math.floor(rand() * 500), type: MessageType.REPLY, serial: i, status: MessageStatus.OK },
        null,
        seedPayload(rand),
      );
      const bytes = rand() < 0.25 ? new Uint8Array(Math.floor(rand() * 64)).map(() => Math.floor(rand() * 256)) : mutate(good, rand);
      try {
        // Feed in random chunk sizes, as a socket would.
        let off = 0;
        while (off < bytes.byteLength) {
          const n = 1 + Math.floor(rand() * 40);
          parser.push(bytes.subarray(off, off + n));
          off += n;
        }
        expect(parser.buffered).toBeLessThanOrEqual(bytes.byteLength);
      } catch (e) {
        if (!(e instanceof XdrDecodeError)) throw e;
        broken++;
      }
    }
    expect(packets).toBeGreaterThan(10_000);
    expect(broken).toBeGreaterThan(10_000);
  });
});
