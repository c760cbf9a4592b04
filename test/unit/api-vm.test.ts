/**
 * The listing's JSON (src/vm/api-vm.ts): the body is what JSON.stringify of the VMs gives,
 * kept bytes never outlive a change of anything the API shows, and hosts' lists are merged
 * oldest first.
 */
import { describe, expect, test } from "bun:test";
import type { VmRecord } from "../../src/drivers/types.ts";
import { byCreation, type ListedVm, toApiVm, VmJsonCache } from "../../src/vm/api-vm.ts";

function rec(n: number, over: Partial<VmRecord> = {}): VmRecord {
  return {
    id: `vm-${String(n).padStart(8, "0")}`,
    name: `web-${n}`,
    uuid: `u-${n}`,
    state: "running",
    vcpus: 1,
    maxVcpus: 1,
    memoryMb: 256,
    maxMemoryMb: 256,
    image: "debian-13",
    disks: [{ type: "root", size_gb: 10, driver: "virtio", format: "qcow2", serial: null, path: "/p/root" }],
    pending: null,
    network: { mode: "bridge", bridge: "virbr0", mac: "52:54:00:00:00:01", sshPort: null, restrict: false },
    sshUser: "kdevops",
    boot: null,
    createdAt: `2026-12-02T10:00:${String(n).padStart(2, "0")}.000Z`,
    updatedAt: "2026-12-02T10:00:00.000Z",
    owner: null,
    placementGroup: null,
    gdbPort: null,
    onPanic: "preserve",
    crashReason: null,
    shares: [],
    cpuTimeNs: 0n,
    ...over,
  };
}

const listed = (r: VmRecord, over: Partial<ListedVm> = {}): ListedVm => ({ rec: r, host: "a", hostState: "online", fresh: true, ip: "10.0.0.1", ...over });

async function body(cache: VmJsonCache, vms: ListedVm[]): Promise<{ vms: unknown[] }> {
  return JSON.parse(await cache.list(vms).text()) as { vms: unknown[] };
}

describe("VmJsonCache", () => {
  test("the body is the VMs' JSON, in order", async () => {
    const vms = [listed(rec(1)), listed(rec(2), { host: "b", fresh: false, ip: null }), listed(rec(3, { name: "é ü" }))];
    expect(await body(new VmJsonCache(), vms)).toEqual(JSON.parse(JSON.stringify({ vms: vms.map(toApiVm) })));
    expect(await body(new VmJsonCache(), [])).toEqual({ vms: [] });
  });

  test("the same records give the same body; any change the API shows gives a new one", async () => {
    const cache = new VmJsonCache();
    const a = rec(1);
    const b = rec(2);
    const first = cache.list([listed(a), listed(b)]);
    expect(cache.list([listed(a), listed(b)])).toBe(first);
    // A new record that shows the same (only CPU time moved): same body.
    expect(cache.list([listed({ ...a, cpuTimeNs: 5n }), listed(b)])).toBe(first);
    const changes: [string, ListedVm[]][] = [
      ["state", [listed({ ...a, state: "stopped" }), listed(b)]],
      ["address", [listed(a, { ip: "10.0.0.9" }), listed(b)]],
      ["host state", [listed(a, { hostState: "cordoned" }), listed(b)]],
      ["freshness", [listed(a, { fresh: false }), listed(b)]],
      ["host", [listed(a, { host: "c" }), listed(b)]],
      ["disks", [listed({ ...a, disks: [{ ...a.disks[0]!, size_gb: 20 }] }), listed(b)]],
      ["a VM gone", [listed(a)]],
      ["order", [listed(b), listed(a)]],
    ];
    for (const [what, vms] of changes) {
      const got = await body(cache, vms);
      expect({ what, got }).toEqual({ what, got: JSON.parse(JSON.stringify({ vms: vms.map(toApiVm) })) });
    }
    // And back: what it shows now, not a kept body from before.
    expect(await body(cache, [listed(a), listed(b)])).toEqual(JSON.parse(JSON.stringify({ vms: [listed(a), listed(b)].map(toApiVm) })));
  });
});

describe("byCreation", () => {
  const at = (v: ListedVm[]) => v.map((x) => x.rec.name);
  test("merges hosts' sorted lists oldest first, equal times in host order", () => {
    const a = [1, 4, 5].map((n) => listed(rec(n)));
    const b = [2, 3, 6].map((n) => listed(rec(n), { host: "b" }));
    const c = [listed(rec(4, { name: "c-4" }), { host: "c" })];
    expect(at(byCreation([a, b, c]))).toEqual(["web-1", "web-2", "web-3", "web-4", "c-4", "web-5", "web-6"]);
    expect(byCreation([])).toEqual([]);
  });

  test("sorts a host's list that is out of order (a VM just created added at its end)", () => {
    const a = [3, 1, 2].map((n) => listed(rec(n)));
    const b = [0].map((n) => listed(rec(n), { host: "b" }));
    expect(at(byCreation([a, b]))).toEqual(["web-0", "web-1", "web-2", "web-3"]);
  });
});
