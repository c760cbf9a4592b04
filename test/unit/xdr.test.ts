import { describe, expect, test } from "bun:test";
import { XdrDecodeError, XdrEncodeError, XdrReader, XdrWriter } from "../../src/xdr/index.ts";
import {
  decodeRemoteDomainGetInfoRet,
  decodeRemoteNodeGetInfoRet,
  decodeRemoteTypedParam,
  encodeRemoteDomainGetInfoRet,
  encodeRemoteNodeGetInfoRet,
  encodeRemoteTypedParam,
  encodeRemoteConnectOpenArgs,
  decodeRemoteConnectOpenArgs,
} from "../../src/codecs/generated/remote.ts";

function roundTrip<T>(enc: (w: XdrWriter, v: T) => void, dec: (r: XdrReader) => T, v: T): { bytes: Uint8Array; back: T } {
  const w = new XdrWriter(8);
  enc(w, v);
  const bytes = w.bytes().slice();
  const r = new XdrReader(bytes);
  const back = dec(r);
  r.finish("test");
  return { bytes, back };
}

describe("XDR primitives", () => {
  test("ints, hypers and bools are big-endian and 4/8 bytes", () => {
    const w = new XdrWriter(1);
    w.int(-2);
    w.uint(0xfffffffe);
    w.hyper(-3n);
    w.uhyper(1790000000000000000n);
    w.bool(true);
    const b = w.bytes();
    expect(b.byteLength).toBe(4 + 4 + 8 + 8 + 4);
    expect([...b.subarray(0, 4)]).toEqual([0xff, 0xff, 0xff, 0xfe]);
    const r = new XdrReader(b);
    expect(r.int()).toBe(-2);
    expect(r.uint()).toBe(0xfffffffe);
    expect(r.hyper()).toBe(-3n);
    expect(r.uhyper()).toBe(1790000000000000000n);
    expect(r.bool()).toBe(true);
    r.finish("x");
  });

  test("floats and doubles are IEEE 754 big-endian; a reset writer starts over", () => {
    const w = new XdrWriter(2);
    w.float(1.5);
    w.double(-0.1);
    w.hyper(-0x1_0000_0001n);
    expect([...w.bytes().subarray(0, 4)]).toEqual([0x3f, 0xc0, 0, 0]);
    expect([...w.bytes().subarray(4, 12)]).toEqual([0xbf, 0xb9, 0x99, 0x99, 0x99, 0x99, 0x99, 0x9a]);
    expect([...w.bytes().subarray(12, 20)]).toEqual([0xff, 0xff, 0xff, 0xfe, 0xff, 0xff, 0xff, 0xff]);
    const r = new XdrReader(w.copy());
    expect(r.float()).toBe(1.5);
    expect(r.double()).toBe(-0.1);
    expect(r.hyper()).toBe(-0x1_0000_0001n);
    r.finish("x");
    w.reset();
    w.uint(7);
    expect([...w.copy()]).toEqual([0, 0, 0, 7]);
  });

  test("strings use UTF-8 byte length and zero padding", () => {
    const w = new XdrWriter();
    w.string("é", 100); // 2 bytes
    expect([...w.bytes()]).toEqual([0, 0, 0, 2, 0xc3, 0xa9, 0, 0]);
    expect(new XdrReader(w.bytes()).string(100)).toBe("é");
  });

  test("string longer than its bound is refused on both sides", () => {
    const w = new XdrWriter();
    expect(() => w.string("abcdef", 5)).toThrow(XdrEncodeError);
    const w2 = new XdrWriter();
    w2.string("abcdef", 10);
    expect(() => new XdrReader(w2.bytes()).string(5)).toThrow(XdrDecodeError);
  });

  test("a huge length word is rejected before allocating", () => {
    const bytes = Uint8Array.of(0x7f, 0xff, 0xff, 0xff, 1, 2, 3, 4);
    try {
      new XdrReader(bytes).opaqueVar(0xffffffff);
      throw new Error("should have thrown");
    } catch (e) {
      expect(e).toBeInstanceOf(XdrDecodeError);
      expect((e as XdrDecodeError).code).toBe("SHORT_BUFFER");
    }
  });

  test("array counts are checked against the element size and bytes left", () => {
    const r = new XdrReader(Uint8Array.of(0, 0, 0x10, 0, 0, 0, 0, 1));
    expect(() => r.count(1 << 20, 8, "things")).toThrow(/cannot fit/);
  });

  test("bad bool, bad padding and trailing bytes are typed errors", () => {
    expect(() => new XdrReader(Uint8Array.of(0, 0, 0, 2)).bool()).toThrow(XdrDecodeError);
    expect(() => new XdrReader(Uint8Array.of(0, 0, 0, 1, 65, 1, 0, 0)).string(10)).toThrow(/padding/);
    const r = new XdrReader(Uint8Array.of(0, 0, 0, 1, 9));
    r.int();
    expect(() => r.finish("x")).toThrow(/trailing/);
  });

  test("out-of-range values never reach the wire", () => {
    const w = new XdrWriter();
    expect(() => w.int(2 ** 31)).toThrow(XdrEncodeError);
    expect(() => w.uint(-1)).toThrow(XdrEncodeError);
    expect(() => w.uint(1.5)).toThrow(XdrEncodeError);
    expect(() => w.uhyper(-1n)).toThrow(XdrEncodeError);
  });
});

describe("generated codecs", () => {
  test("DOMAIN_GET_INFO ret is 32 bytes (uchar and ushort take 4 each)", () => {
    const v = { state: 1, maxMem: 1048576n, memory: 524288n, nrVirtCpu: 2, cpuTime: 1790000000000000000n };
    const { bytes, back } = roundTrip(encodeRemoteDomainGetInfoRet, decodeRemoteDomainGetInfoRet, v);
    expect(bytes.byteLength).toBe(32);
    expect(back).toEqual(v);
  });

  test("NODE_GET_INFO ret is 160 bytes (char model[32] is 32 ints)", () => {
    const model = Array.from({ length: 32 }, (_, i) => (i < 6 ? "x86_64".charCodeAt(i) : 0));
    const v = { model, memory: 16n << 20n, cpus: 2, mhz: 2000, nodes: 1, sockets: 1, cores: 2, threads: 1 };
    const { bytes, back } = roundTrip(encodeRemoteNodeGetInfoRet, decodeRemoteNodeGetInfoRet, v);
    expect(bytes.byteLength).toBe(160);
    expect(back).toEqual(v);
  });

  test("optional strings encode as 0 or 1 + value", () => {
    const a = roundTrip(encodeRemoteConnectOpenArgs, decodeRemoteConnectOpenArgs, { name: null, flags: 0 });
    expect(a.bytes.byteLength).toBe(8);
    const b = roundTrip(encodeRemoteConnectOpenArgs, decodeRemoteConnectOpenArgs, { name: "test:///default", flags: 1 });
    expect([...b.bytes.subarray(0, 4)]).toEqual([0, 0, 0, 1]); // present flag is a proper big-endian 1
    expect(b.back).toEqual({ name: "test:///default", flags: 1 });
  });

  test("unions round-trip and reject unknown discriminants", () => {
    for (const value of [
      { type: 1, i: -5 },
      { type: 3, l: -(2n ** 40n) },
      { type: 5, d: 2.5 },
      { type: 7, s: "hello" },
    ] as const) {
      const { back } = roundTrip(encodeRemoteTypedParam, decodeRemoteTypedParam, { field: "f", value });
      expect(back.value).toEqual(value);
    }
    const w = new XdrWriter();
    w.string("f", 100);
    w.int(99);
    expect(() => decodeRemoteTypedParam(new XdrReader(w.bytes()))).toThrow(/no arm/);
  });
});
