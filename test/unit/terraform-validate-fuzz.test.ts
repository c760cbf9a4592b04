/**
 * The Terraform provider's plan-time validation of rcloud_vm (validateVm, what
 * ValidateResourceConfig answers) under hostile attribute values of the types Terraform lets
 * through (fast-check, fixed seed): it never throws, and a value the API would refuse is an
 * error diagnostic on that attribute at plan time, not a failure at apply.
 */
import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { hostileString } from "../../bench/hostile.ts";
import type { CtyObject } from "../../src/terraform/cty.ts";
import { validateVm, vmSchema } from "../../src/terraform/resource-vm.ts";

const base = (): CtyObject => ({
  ...Object.fromEntries(vmSchema.attributes.map((a) => [a.name, null])),
  name: "web-01",
  image: "debian13",
});
const number = fc.oneof(fc.double(), fc.integer(), fc.constantFrom(0, -1, 0.5, 1e308, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53 + 1));
const PATTERNED = ["name", "ssh_user", "host", "placement_group"] as const;
const RANGED = { vcpus: [1, 512], max_vcpus: [1, 512], root_disk_gb: [1, 65536] } as const;

describe("rcloud_vm validation fuzz", () => {
  test("500 hostile configurations: validateVm never throws; every diagnostic is an error on an attribute", () => {
    const config = fc.record({
      name: hostileString(),
      ssh_user: fc.option(hostileString()),
      host: fc.option(hostileString()),
      placement_group: fc.option(hostileString()),
      cmdline: fc.option(hostileString()),
      vcpus: fc.option(number),
      max_vcpus: fc.option(number),
      memory_gb: fc.option(number),
      root_disk_gb: fc.option(number),
      extra_disks: fc.option(fc.array(fc.record({ size_gb: number, type: hostileString() }), { maxLength: 3 })),
      network: fc.option(fc.record({ mode: hostileString(), bridge: fc.option(hostileString()) })),
    });
    fc.assert(
      fc.property(config, (over) => {
        const diags = validateVm({ ...base(), ...(over as CtyObject) });
        for (const d of diags) {
          expect(d.severity).toBe("ERROR");
          expect(d.attribute).not.toBeNull();
          expect(d.detail.length).toBeGreaterThan(0);
        }
      }),
      { seed: 17, numRuns: 500 },
    );
  }, 120_000);

  test("a hostile value of a patterned attribute is a diagnostic on that attribute (unless it happens to be valid)", () => {
    for (const k of PATTERNED) {
      fc.assert(
        fc.property(hostileString(), (v) => {
          const diags = validateVm({ ...base(), [k]: v });
          const onIt = diags.filter((d) => JSON.stringify(d.attribute).includes(`"${k}"`));
          // Valid values are lower-case DNS-label-like; anything with other characters is refused.
          if (/[^a-z0-9_-]/.test(v) || v === "") expect(onIt.length).toBe(1);
        }),
        { seed: 17, numRuns: 300 },
      );
    }
  });

  test("out-of-range or fractional numbers are diagnostics on their attribute", () => {
    for (const [k, [min, max]] of Object.entries(RANGED)) {
      fc.assert(
        fc.property(number, (v) => {
          const diags = validateVm({ ...base(), [k]: v, ...(k === "max_vcpus" ? { vcpus: null } : {}) });
          const invalid = !Number.isInteger(v) || v < min || v > max;
          expect(diags.some((d) => JSON.stringify(d.attribute).includes(`"${k}"`))).toBe(invalid);
        }),
        { seed: 17, numRuns: 300 },
      );
    }
  });
});
