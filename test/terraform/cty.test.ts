/** The msgpack/cty codec against golden bytes (what Terraform 1.11 sends and accepts). */
import { describe, expect, test } from "bun:test";
import { decode, encode, ExtData } from "@msgpack/msgpack";
import { type CtyType, CtyError, decodeJson, decodeMsgpack, encodeMsgpack, isUnknown, isWhollyKnown, UNKNOWN } from "../../src/terraform/cty.ts";
import { VM_TYPE, vmSchema } from "../../src/terraform/resource-vm.ts";
import { parseDuration } from "../../src/terraform/provider.ts";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const bytes = (h: string) => Uint8Array.from(Buffer.from(h.replace(/\s+/g, ""), "hex"));

const DISK: CtyType = ["object", { size_gb: "number", type: "string" }];
const T: CtyType = ["object", { name: "string", cpus: "number", on: "bool", disks: ["list", DISK], net: ["object", { bridge: "string", mode: "string" }], tags: ["map", "string"] }];

describe("unknown values", () => {
  test("unknown encodes as d4 00 00 (fixext1, type 0)", () => {
    expect(hex(encodeMsgpack(UNKNOWN, "string"))).toBe("d40000");
    expect(hex(encodeMsgpack(UNKNOWN, ["list", "string"]))).toBe("d40000");
  });

  test("ext 0 decodes as unknown", () => {
    expect(isUnknown(decodeMsgpack(bytes("d4 00 00"), "number"))).toBe(true);
  });

  test("ext 12 (refined unknown) decodes as unknown, refinements dropped", () => {
    // name = "b-${other.id}" as Terraform 1.11 sends it: ext 12 {1: false, 2: "b-"}
    expect(isUnknown(decodeMsgpack(bytes("c7 07 0c 82 01 c2 02 a2 62 2d"), "string"))).toBe(true);
  });

  test("any other extension type is unknown too, at any depth", () => {
    const b = encode({ name: new ExtData(5, Uint8Array.of(1, 2)), disks: [new ExtData(12, Uint8Array.of(0x80))] });
    const v = decodeMsgpack(b, T) as Record<string, unknown>;
    expect(isUnknown(v.name)).toBe(true);
    expect(isUnknown((v.disks as unknown[])[0])).toBe(true);
    expect(isWhollyKnown(v as never)).toBe(false);
  });

  test("JSON state never holds unknowns", () => {
    expect(() => decodeJson('{"name":"a"}', T)).not.toThrow();
  });
});

describe("objects", () => {
  test("every attribute is emitted, absent ones as nil", () => {
    const out = decode(encodeMsgpack({ name: "web" }, T)) as Record<string, unknown>;
    expect(Object.keys(out).sort()).toEqual(["cpus", "disks", "name", "net", "on", "tags"]);
    expect(out).toEqual({ name: "web", cpus: null, on: null, disks: null, net: null, tags: null });
  });

  test("the VM schema's implied type has every attribute", () => {
    const out = decode(encodeMsgpack({ id: "vm-1" }, VM_TYPE)) as Record<string, unknown>;
    expect(Object.keys(out).sort()).toEqual(vmSchema.attributes.map((a) => a.name).sort());
    expect(Object.keys(out)).toHaveLength(29);
    expect(out.extra_disks).toBeNull();
  });

  test("absent keys in input decode as null; unknown keys are dropped", () => {
    const v = decodeMsgpack(encode({ name: "x", extra: 1 }), T);
    expect(v).toEqual({ name: "x", cpus: null, on: null, disks: null, net: null, tags: null });
  });

  test("nested objects and lists round-trip", () => {
    const value = {
      name: "web",
      cpus: 4,
      on: true,
      disks: [
        { size_gb: 500, type: "virtio" },
        { size_gb: 1, type: UNKNOWN },
      ],
      net: { bridge: "virbr0", mode: null },
      tags: { a: "b" },
    };
    const b = encodeMsgpack(value, T);
    expect(decodeMsgpack(b, T)).toEqual(value);
    // the unknown inside the list element is ext 0 on the wire
    expect(hex(b)).toContain("a474797065d40000"); // "type": unknown
  });

  test("null and an empty list are different values", () => {
    const t: CtyType = ["object", { l: ["list", "string"] }];
    expect(hex(encodeMsgpack({ l: [] }, t))).toBe("81a16c90");
    expect(hex(encodeMsgpack({ l: null }, t))).toBe("81a16cc0");
    expect(decodeMsgpack(bytes("81a16c90"), t)).toEqual({ l: [] });
    expect(decodeMsgpack(bytes("81a16cc0"), t)).toEqual({ l: null });
  });

  test("a null object is nil", () => {
    expect(hex(encodeMsgpack(null, T))).toBe("c0");
    expect(decodeMsgpack(bytes("c0"), T)).toBeNull();
  });
});

describe("numbers", () => {
  test("ints, floats, int64 and decimal strings all decode", () => {
    expect(decodeMsgpack(bytes("05"), "number")).toBe(5);
    expect(decodeMsgpack(bytes("cb 3fe0000000000000"), "number")).toBe(0.5);
    expect(decodeMsgpack(bytes("d3 0000000100000000"), "number")).toBe(2 ** 32);
    expect(decodeMsgpack(bytes("a3 312e35"), "number")).toBe(1.5); // "1.5"
  });

  test("integers encode as msgpack ints, fractions as float64", () => {
    expect(hex(encodeMsgpack(4, "number"))).toBe("04");
    expect(hex(encodeMsgpack(0.5, "number"))).toBe("cb3fe0000000000000");
  });
});

describe("type checks", () => {
  test("wrong types are errors, not silent coercions", () => {
    expect(() => encodeMsgpack("4", "number")).toThrow(CtyError);
    expect(() => decodeMsgpack(encode(4), "string")).toThrow(CtyError);
  });

  test("sets, maps and tuples", () => {
    expect(decodeMsgpack(encode(["a", "b"]), ["set", "string"])).toEqual(["a", "b"]);
    expect(decodeMsgpack(encode({ k: 1 }), ["map", "number"])).toEqual({ k: 1 });
    expect(decodeMsgpack(encode(["a", 1]), ["tuple", ["string", "number"]])).toEqual(["a", 1]);
  });
});

describe("durations", () => {
  test("Go-style durations", () => {
    expect(parseDuration("10m")).toBe(600_000);
    expect(parseDuration("1h30m")).toBe(5_400_000);
    expect(parseDuration("90s")).toBe(90_000);
    expect(parseDuration("500ms")).toBe(500);
    expect(parseDuration("10")).toBeNull();
    expect(parseDuration("ten minutes")).toBeNull();
  });
});
