import { describe, expect, test } from "bun:test";
import { encodePacket, MAX_PACKET, MessageStatus, MessageType, PacketParser, type Packet } from "../../src/libvirt/packet.ts";
import { encodeRemoteDomainLookupByNameArgs, REMOTE_PROGRAM } from "../../src/codecs/generated/remote.ts";
import { XdrDecodeError } from "../../src/xdr/index.ts";

function collect(): { parser: PacketParser; got: { serial: number; payload: number[] }[] } {
  const got: { serial: number; payload: number[] }[] = [];
  const parser = new PacketParser((p: Packet) => got.push({ serial: p.header.serial, payload: [...p.payload] }));
  return { parser, got };
}

const header = (serial: number) => ({ prog: REMOTE_PROGRAM, vers: 1, proc: 23, type: MessageType.CALL, serial, status: MessageStatus.OK });

describe("packet framing", () => {
  test("an AUTH_LIST call is 28 bytes starting 0000001c", () => {
    const p = encodePacket({ ...header(0), proc: 66 });
    expect(p.byteLength).toBe(28);
    expect([...p.subarray(0, 4)]).toEqual([0, 0, 0, 0x1c]);
  });

  test("the length word counts the whole packet", () => {
    const p = encodePacket(header(7), { encode: encodeRemoteDomainLookupByNameArgs, value: { name: "vm1" } });
    expect(new DataView(p.buffer, p.byteOffset).getUint32(0)).toBe(p.byteLength);
    expect(p.byteLength).toBe(28 + 8);
  });

  test("packets split at every byte boundary and glued together parse the same", () => {
    const packets = [1, 2, 3].map((s) => encodePacket(header(s), { encode: encodeRemoteDomainLookupByNameArgs, value: { name: `d${s}x` } }));
    const all = new Uint8Array(packets.reduce((n, p) => n + p.byteLength, 0));
    let off = 0;
    for (const p of packets) {
      all.set(p, off);
      off += p.byteLength;
    }
    const reference = collect();
    reference.parser.push(all);
    expect(reference.got.map((g) => g.serial)).toEqual([1, 2, 3]);
    for (let cut = 1; cut < all.byteLength; cut++) {
      const { parser, got } = collect();
      parser.push(all.subarray(0, cut));
      parser.push(all.subarray(cut));
      expect(got).toEqual(reference.got);
    }
    const { parser, got } = collect();
    for (const b of all) parser.push(Uint8Array.of(b)); // one byte at a time
    expect(got).toEqual(reference.got);
    expect(parser.buffered).toBe(0);
  });

  test("a length outside [28, 4 + 32 MiB] is refused at once, without buffering", () => {
    for (const len of [0, 3, 27, MAX_PACKET + 1, 0xffffffff]) {
      const { parser } = collect();
      const bytes = new Uint8Array(8);
      new DataView(bytes.buffer).setUint32(0, len);
      expect(() => parser.push(bytes)).toThrow(XdrDecodeError);
      expect(() => parser.push(new Uint8Array(4))).toThrow(XdrDecodeError); // stays broken
    }
  });

  test("unknown message type or status is a framing error", () => {
    const p = encodePacket(header(1));
    new DataView(p.buffer, p.byteOffset).setInt32(16, 9);
    expect(() => collect().parser.push(p)).toThrow(/message type/);
  });
});
