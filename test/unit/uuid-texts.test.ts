import { expect, test } from "bun:test";
import { UUID_TEXTS_GENERATION, UuidTexts, uuidBytes } from "../../src/drivers/libvirt/domain-state.ts";

const uuid = (n: number) => `${n.toString(16).padStart(8, "0")}-0000-4000-8000-${n.toString(16).padStart(12, "0")}`;

test("texts of UUIDs are right, also when two share their first 6 bytes", () => {
  const t = new UuidTexts();
  const a = "11223344-5566-4000-8000-000000000001";
  const b = "11223344-5566-4000-8000-000000000002";
  expect(t.of(uuidBytes(a))).toBe(a);
  expect(t.of(uuidBytes(b))).toBe(b);
  expect(t.of(uuidBytes(a))).toBe(a);
});

test("a host whose domains come and go: texts of gone domains are dropped, live ones kept right", () => {
  const t = new UuidTexts();
  const live = Array.from({ length: 50 }, (_, i) => uuid(1_000_000 + i));
  // 20,000 short-lived domains, each met a few times, while 50 live ones are listed every round.
  for (let n = 0; n < 20_000; n++) {
    for (let k = 0; k < 3; k++) expect(t.of(uuidBytes(uuid(n)))).toBe(uuid(n));
    if (n % 100 === 0) for (const u of live) expect(t.of(uuidBytes(u))).toBe(u);
  }
  expect(t.size).toBeLessThanOrEqual(2 * UUID_TEXTS_GENERATION);
  for (const u of live) expect(t.of(uuidBytes(u))).toBe(u);
});
