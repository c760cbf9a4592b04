/** The libvirt driver's XML documents other than the domain: pools, volumes, capabilities, metadata edits. */
import { describe, expect, test } from "bun:test";
import { XMLParser } from "fast-xml-parser";
import { readCapabilities } from "../../src/drivers/libvirt/capabilities.ts";
import { withUpdatedAt } from "../../src/drivers/libvirt/metadata-xml.ts";
import { normalDir } from "../../src/drivers/libvirt/host-dir.ts";
import { parseVolumeXml, poolTargetPath, poolXml, volumeXml } from "../../src/drivers/libvirt/storage-xml.ts";

const parse = (xml: string) => new XMLParser({ ignoreAttributes: false, attributeNamePrefix: "@", parseTagValue: false }).parse(xml);

describe("storage XML", () => {
  test("markup in names and paths stays text", () => {
    const hostile = `x'/><evil a="1"/>&amp;<`;
    const vol = parse(volumeXml({ name: hostile, capacityBytes: 5, format: "qcow2", backing: { path: `/b/${hostile}`, format: "raw" } }));
    expect(vol.volume.name).toBe(hostile);
    expect(vol.volume.backingStore.path).toBe(`/b/${hostile}`);
    expect(vol.volume.evil).toBeUndefined();
    const pool = parse(poolXml(hostile, `/p/${hostile}`));
    expect(pool.pool).toEqual({ "@type": "dir", name: hostile, target: { path: `/p/${hostile}` } });
  });

  test("qcow2 volumes are thin, with libvirt's or an explicit owner; raw ones have no allocation", () => {
    const q = parse(volumeXml({ name: "a", capacityBytes: 1073741824, format: "qcow2", owner: { uid: 64055, gid: 64055 } })).volume;
    expect(q.capacity).toEqual({ "#text": "1073741824", "@unit": "bytes" });
    expect(q.allocation).toEqual({ "#text": "0", "@unit": "bytes" });
    expect(q.target).toEqual({ format: { "@type": "qcow2" }, permissions: { mode: "0660", owner: "64055", group: "64055" } });
    const r = parse(volumeXml({ name: "b", capacityBytes: 10, format: "raw" })).volume;
    expect(r.allocation).toBeUndefined();
    expect(r.target.permissions).toEqual({ mode: "0640" });
  });
});

describe("storage XML as libvirt answers it", () => {
  // A dir pool's volume as libvirt 9 reports it (trimmed), the path with characters XML escapes.
  const qcow = `<volume type='file'>
  <name>a&amp;b.qcow2</name>
  <key>/srv/img/a&amp;b.qcow2</key>
  <capacity unit='bytes'>22020096</capacity>
  <allocation unit='bytes'>12406784</allocation>
  <physical unit='bytes'>12845056</physical>
  <target>
    <path>/srv/img/a&amp;b.qcow2</path>
    <format type='qcow2'/>
    <permissions><mode>0644</mode><owner>0</owner><group>0</group></permissions>
  </target>
</volume>`;

  test("a volume: type, name, path, format and the three sizes", () => {
    expect(parseVolumeXml(qcow)).toEqual({
      type: "file",
      name: "a&b.qcow2",
      path: "/srv/img/a&b.qcow2",
      format: "qcow2",
      capacityBytes: 22020096,
      allocationBytes: 12406784,
      physicalBytes: 12845056,
    });
    // libvirt's test driver reports no physical size; a directory has no format.
    const dir = parseVolumeXml("<volume type='dir'><name>sub</name><capacity unit='bytes'>0</capacity><allocation unit='bytes'>0</allocation><target><path>/srv/img/sub</path></target></volume>");
    expect(dir).toMatchObject({ type: "dir", format: null, physicalBytes: null });
  });

  test("sizes in another unit than bytes, or no path, are refused rather than misread", () => {
    expect(() => parseVolumeXml(qcow.replace("<capacity unit='bytes'>", "<capacity unit='KiB'>"))).toThrow("capacity");
    expect(() => parseVolumeXml("<volume><name>x</name><target/></volume>")).toThrow("target path");
  });

  test("a pool's directory, compared as libvirt stores it", () => {
    expect(poolTargetPath(poolXml("p", "/srv/a&b"))).toBe("/srv/a&b");
    expect(poolTargetPath("<pool type='disk'><name>p</name><source/></pool>")).toBeNull();
    expect(["/srv/img/", "/srv//img", "/srv/img/.", "/srv/x/../img"].map(normalDir)).toEqual(["/srv/img", "/srv/img", "/srv/img", "/srv/img"]);
    expect(normalDir("/")).toBe("/");
  });

  test("an explicit allocation is written for raw volumes too", () => {
    expect(parse(volumeXml({ name: "r", capacityBytes: 10, allocationBytes: 4096, format: "raw" })).volume.allocation).toEqual({ "#text": "4096", "@unit": "bytes" });
  });
});

describe("capabilities", () => {
  const caps = (guests: string, secmodels: string) => `<capabilities><host><uuid>x</uuid>${secmodels}</host>${guests}</capabilities>`;
  const guest = (types: string[]) => `<guest><os_type>hvm</os_type><arch name='x86_64'><emulator>/usr/bin/qemu-system-x86_64</emulator>${types.map((t) => `<domain type='${t}'/>`).join("")}</arch></guest>`;
  const secmodels = `<secmodel><model>none</model><doi>0</doi></secmodel><secmodel><model>dac</model><doi>0</doi><baselabel type='kvm'>+64055:+994</baselabel><baselabel type='qemu'>+64055:+64055</baselabel></secmodel>`;

  test("domain types the guests offer; DAC base labels per domain type", () => {
    const tcg = readCapabilities(caps(guest(["qemu"]) + guest(["qemu"]), secmodels));
    expect([...tcg.domainTypes]).toEqual(["qemu"]);
    expect(tcg.dacOwner("qemu")).toEqual({ uid: 64055, gid: 64055 });
    expect(tcg.dacOwner("kvm")).toEqual({ uid: 64055, gid: 994 });
    expect(tcg.dacOwner("test")).toBeNull();
    expect(readCapabilities(caps(guest(["qemu", "kvm"]), "")).domainTypes.has("kvm")).toBe(true);
    expect(readCapabilities(caps(guest(["qemu"]), "")).dacOwner("qemu")).toBeNull();
  });
});

describe("metadata edits", () => {
  const meta = `<rcloud:vm xmlns:rcloud="https://rcloud.dev/xmlns/vm/1"><rcloud:id>vm-abc12345</rcloud:id><rcloud:updated_at>2020-01-01T00:00:00Z</rcloud:updated_at><rcloud:owner></rcloud:owner><rcloud:nvme_disk serial="kdevops1" format="qcow2" path="/a&amp;b,c"/></rcloud:vm>`;

  test("updated_at changes; every other element and attribute stays, in order", () => {
    const out = withUpdatedAt(meta, "2026-12-02T10:00:00.000Z");
    expect(out).not.toBeNull();
    const before = parse(meta)["rcloud:vm"];
    const after = parse(out!)["rcloud:vm"];
    expect(after["rcloud:updated_at"]).toBe("2026-12-02T10:00:00.000Z");
    expect({ ...after, "rcloud:updated_at": null, "rcloud:owner": null }).toEqual({ ...before, "rcloud:updated_at": null, "rcloud:owner": null });
    expect(out!.indexOf("nvme_disk")).toBeGreaterThan(out!.indexOf("updated_at"));
  });

  test("no updated_at, or not rcloud's element: null (nothing to edit)", () => {
    expect(withUpdatedAt(`<rcloud:vm xmlns:rcloud="x"><rcloud:id>a</rcloud:id></rcloud:vm>`, "t")).toBeNull();
    expect(withUpdatedAt(`<other/>`, "t")).toBeNull();
  });
});
