import { describe, expect, test } from "bun:test";
import { encodeCall, encodePacket, MAX_PACKET, MessageStatus, MessageType, PacketParser, type Packet } from "../../src/libvirt/packet.ts";
import {
  decodeRemoteDomainLookupByNameArgs,
  encodeRemoteDomainLookupByNameArgs,
  REMOTE_PROGRAM,
  remoteProcedures,
} from "../../src/codecs/generated/remote.ts";
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

  test("encodeCall writes what encodePacket writes, and every packet is its own copy", () => {
    const desc = remoteProcedures.domainLookupByName;
    const a = encodeCall(desc, 5, { name: "vm-a" });
    const b = encodeCall(desc, 6, { name: "vm-bb" }); // the shared encoder must not change `a`
    expect([...a]).toEqual([
      ...encodePacket({ ...header(5), vers: desc.version }, { encode: encodeRemoteDomainLookupByNameArgs, value: { name: "vm-a" } }),
    ]);
    expect(a.byteLength).toBe(28 + 8);
    expect(b.byteLength).toBe(28 + 12);
    const got: Packet[] = [];
    const parser = new PacketParser((p) => {
      const r = p.reader();
      expect(decodeRemoteDomainLookupByNameArgs(r).name).toBe(p.header.serial === 5 ? "vm-a" : "vm-bb");
      r.finish("args");
      got.push(p);
    });
    parser.push(a);
    parser.push(b);
    expect(got.map((p) => p.header.serial)).toEqual([5, 6]);
  });

  test("a stream data packet carries its bytes after the header, and a large one needs no bigger encoder", () => {
    const data = new Uint8Array(256 * 1024).map((_, i) => i & 0xff);
    const p = encodePacket({ ...header(9), type: MessageType.STREAM, status: MessageStatus.CONTINUE }, null, data);
    expect(p.byteLength).toBe(28 + data.byteLength);
    const { parser, got } = collect();
    parser.push(p);
    expect(got[0]!.serial).toBe(9);
    expect(got[0]!.payload.length).toBe(data.byteLength);
    expect(got[0]!.payload.every((b, i) => b === (i & 0xff))).toBe(true);
    // A call encoded afterwards is unaffected.
    expect(encodeCall(remoteProcedures.authList, 1, undefined).byteLength).toBe(28);
  });
});
