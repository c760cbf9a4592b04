/**
 * rcloud_vm plan/apply rules without Terraform, against a stub API: what Terraform would
 * reject as an invalid plan or an inconsistent result, and the create wait's timeout.
 */
import { describe, expect, test } from "bun:test";
import type { ApiVm } from "../../src/api-types/json.ts";
import type { RcloudClient } from "../../src/terraform/client.ts";
import { type CtyObject, isUnknown, UNKNOWN } from "../../src/terraform/cty.ts";
import { applyVm, type Ctx, planVm, validateVm, vmSchema } from "../../src/terraform/resource-vm.ts";

function apiVm(over: Partial<ApiVm> = {}): ApiVm {
  return {
    id: "vm-abcdefgh",
    name: "web-01",
    uuid: "u",
    state: "running",
    vcpus: 4,
    max_vcpus: 4,
    memory_mb: 8192,
    max_memory_mb: 8192,
    restart_required: false,
    pending: null,
    disks: [
      { type: "root", size_gb: 100, driver: "virtio", format: "qcow2", serial: null },
      { type: "data", size_gb: 500, driver: "virtio", format: "qcow2", serial: "kdevops0" },
    ],
    network: { mode: "bridge", bridge: "virbr0", ip_address: "10.0.0.5", mac_address: "52:54:00:00:00:01", ssh_port: null },
    image: "debian-13-generic-amd64-daily",
    ip_address: "10.0.0.5",
    ssh_port: null,
    ssh_user: "kdevops",
    kernel: null,
    initrd: null,
    cmdline: null,
    created_at: "2026-01-01T00:00:00.000Z",
    updated_at: "2026-01-01T00:00:00.000Z",
    host: "local",
    host_state: "online",
    placement_group: null,
    crash_reason: null,
    ...over,
  };
}

/** A stub of the REST client: images resolve as the real server does; VMs come from `vm()`. */
function ctxWith(vm: () => ApiVm | null, timeoutMs = 60_000): Ctx & { created: unknown[] } {
  const created: unknown[] = [];
  const images: Record<string, string> = { debian13: "debian-13-generic-amd64-daily", "debian-13-generic-amd64-daily": "debian-13-generic-amd64-daily" };
  const client = {
    endpoint: "http://stub",
    getImage: async (ref: string) => (images[ref] ? { id: images[ref] } : null),
    listImages: async () => [{ id: "debian-13-generic-amd64-daily", alias: "debian13" }],
    getVm: async () => vm(),
    createVm: async (body: unknown) => {
      created.push(body);
      return vm();
    },
  } as unknown as RcloudClient;
  return { client, timeoutMs, signal: new AbortController().signal, imageIds: new Map(), log: () => {}, created };
}

const config = (over: CtyObject = {}): CtyObject => {
  const c: CtyObject = Object.fromEntries(vmSchema.attributes.map((a) => [a.name, null]));
  return {
    ...c,
    name: "web-01",
    vcpus: 4,
    memory_gb: 8,
    image: "debian13",
    root_disk_gb: 100,
    extra_disks: [{ size_gb: 500, type: "virtio" }],
    network: { bridge: "virbr0", mode: null },
    ...over,
  };
};

describe("plan", () => {
  test("create: configured values as configured, defaults filled, the rest unknown", async () => {
    const r = await planVm(ctxWith(() => null), null, config(), {});
    expect(r.diagnostics).toEqual([]);
    const p = r.planned as CtyObject;
    expect(p).toMatchObject({ name: "web-01", vcpus: 4, memory_gb: 8, image: "debian13", root_disk_gb: 100, running: true, extra_disks: [{ size_gb: 500, type: "virtio" }] });
    expect(p.network).toEqual({ bridge: "virbr0", mode: "bridge" }); // a bridge implies bridge mode
    for (const k of ["id", "state", "ip_address", "mac_address", "ssh_port", "created_at", "ssh_user"]) expect(isUnknown(p[k])).toBe(true);
    expect(Object.keys(p).sort()).toEqual(vmSchema.attributes.map((a) => a.name).sort());
  });

  test("create: unset extra_disks plan as an empty list, unset network as unknown", async () => {
    const r = await planVm(ctxWith(() => null), null, config({ extra_disks: null, network: null, vcpus: null }), {});
    const p = r.planned as CtyObject;
    expect(p.extra_disks).toEqual([]);
    expect(isUnknown(p.network)).toBe(true);
    expect(isUnknown(p.vcpus)).toBe(true);
  });

  test("configured unknowns stay unknown", async () => {
    const r = await planVm(ctxWith(() => null), null, config({ name: UNKNOWN, image: UNKNOWN }), {});
    expect(isUnknown((r.planned as CtyObject).name)).toBe(true);
    expect(r.diagnostics).toEqual([]); // no image look-up for an unknown image
  });

  test("update: an alias of the prior image id is no change; running toggles state and address", async () => {
    const ctx = ctxWith(() => null);
    const prior: CtyObject = { ...config(), image: "debian-13-generic-amd64-daily", id: "vm-abcdefgh", running: true, state: "running", ip_address: "10.0.0.5", mac_address: "m", ssh_port: null, created_at: "t", ssh_user: "kdevops", network: { bridge: "virbr0", mode: "bridge" } };
    const r = await planVm(ctx, prior, config({ running: false }), {});
    const p = r.planned as CtyObject;
    expect(p.image).toBe("debian-13-generic-amd64-daily");
    expect(p.running).toBe(false);
    expect(isUnknown(p.state) && isUnknown(p.ip_address)).toBe(true);
    expect(p.mac_address).toBe("m");
    expect(r.requiresReplace).toContainEqual(["image"]);
    expect(r.requiresReplace).not.toContainEqual(["running"]);
    expect(r.requiresReplace).not.toContainEqual(["vcpus"]);
  });

  test("update: sizes, disks and boot in place; a shrinking root disk replaces, with the reason", async () => {
    const ctx = ctxWith(() => null);
    const prior: CtyObject = {
      ...config(),
      id: "vm-abcdefgh",
      max_vcpus: 4,
      max_memory_gb: 8,
      restart_required: false,
      running: true,
      state: "running",
      ip_address: "10.0.0.5",
      mac_address: "m",
      ssh_port: null,
      created_at: "t",
      ssh_user: "kdevops",
      network: { bridge: "virbr0", mode: "bridge" },
      extra_disks: [
        { size_gb: 500, type: "virtio" },
        { size_gb: 20, type: "nvme" },
        { size_gb: 30, type: "ide" },
      ],
    };
    const grown = await planVm(ctx, prior, config({ vcpus: 6, memory_gb: 16, root_disk_gb: 200, extra_disks: [{ size_gb: 500, type: null }, { size_gb: 30, type: "ide" }, { size_gb: 40, type: "scsi" }] }), {});
    const g = grown.planned as CtyObject;
    expect(grown.requiresReplace.map((x) => x.join("."))).toEqual(["name", "image", "network", "ssh_public_key", "ssh_user", "host", "placement_group"]);
    // The maxima follow values that outgrow them; kept disks keep their type; the plan warns about the deleted disk.
    expect({ max_vcpus: g.max_vcpus, max_memory_gb: g.max_memory_gb, extra_disks: g.extra_disks }).toEqual({
      max_vcpus: 6,
      max_memory_gb: 16,
      extra_disks: [
        { size_gb: 500, type: "virtio" },
        { size_gb: 30, type: "ide" },
        { size_gb: 40, type: "scsi" },
      ],
    });
    expect(isUnknown(g.restart_required)).toBe(true);
    expect(grown.diagnostics.map((d) => [d.severity, d.summary])).toEqual([["WARNING", "Data disks will be deleted"]]);
    expect(grown.diagnostics[0]?.detail).toContain("extra_disks[1] (20 GiB, nvme)");

    const shrunk = await planVm(ctx, prior, config({ root_disk_gb: 50 }), {});
    expect(shrunk.requiresReplace).toContainEqual(["root_disk_gb"]);
    expect(shrunk.diagnostics.map((d) => d.detail).join("\n")).toContain("root_disk_gb goes from 100 to 50: a root disk cannot shrink");
  });

  test("after import, ssh_public_key is not a replacement", async () => {
    const prior: CtyObject = { ...config(), id: "vm-abcdefgh", ssh_public_key: null };
    const imported = await planVm(ctxWith(() => null), prior, config({ ssh_public_key: "ssh-ed25519 AAAA k" }), { imported: true });
    expect(imported.requiresReplace).not.toContainEqual(["ssh_public_key"]);
    const normal = await planVm(ctxWith(() => null), prior, config({ ssh_public_key: "ssh-ed25519 AAAA k" }), {});
    expect(normal.requiresReplace).toContainEqual(["ssh_public_key"]);
  });

  test("an unknown image is an error on the image attribute", async () => {
    const r = await planVm(ctxWith(() => null), null, config({ image: "debian99" }), {});
    expect(r.diagnostics).toHaveLength(1);
    expect(r.diagnostics[0]?.detail).toContain(`"debian99"`);
    expect(r.diagnostics[0]?.detail).toContain("debian13 (debian-13-generic-amd64-daily)");
    expect(r.diagnostics[0]?.attribute).toEqual({ steps: [{ attribute_name: "image" }] });
  });
});

describe("apply", () => {
  test("create returns every known planned value unchanged and fills the unknowns", async () => {
    const ctx = ctxWith(() => apiVm());
    const planned = (await planVm(ctx, null, config(), {})).planned as CtyObject;
    const r = await applyVm(ctx, null, planned);
    expect(r.diagnostics).toEqual([]);
    const s = r.newState as CtyObject;
    for (const [k, v] of Object.entries(planned)) if (!isUnknown(v)) expect(s[k]).toEqual(v);
    expect(s).toMatchObject({ id: "vm-abcdefgh", ip_address: "10.0.0.5", state: "running", ssh_user: "kdevops" });
    expect(ctx.created[0]).toEqual({
      name: "web-01",
      image: "debian13",
      start: true,
      vcpus: 4,
      memory_mb: 8192,
      root_disk_gb: 100,
      extra_disks: [{ size_gb: 500, type: "virtio" }],
      network: { mode: "bridge", bridge: "virbr0" },
    });
  });

  test("update: one PATCH; with allow_restart, what waits is applied by a restart; the state is the plan", async () => {
    const prior = (await applyVm(ctxWith(() => apiVm()), null, (await planVm(ctxWith(() => apiVm()), null, config(), {})).planned as CtyObject)).newState as CtyObject;
    let current = apiVm();
    const patches: unknown[] = [];
    const ctx = ctxWith(() => current);
    (ctx.client as unknown as { updateVm: (id: string, body: Record<string, unknown>) => Promise<ApiVm> }).updateVm = async (_id, body) => {
      patches.push(body);
      current = body.restart
        ? apiVm({ vcpus: 8, max_vcpus: 8, memory_mb: 16384, max_memory_mb: 16384 })
        : apiVm({ restart_required: true, pending: { vcpus: 8, max_vcpus: 8, memory_mb: 16384, max_memory_mb: 16384 } });
      return current;
    };
    for (const allow of [false, true]) {
      patches.length = 0;
      current = apiVm();
      const planned = (await planVm(ctx, prior, config({ vcpus: 8, memory_gb: 16, allow_restart: allow }), {})).planned as CtyObject;
      const r = await applyVm(ctx, prior, planned);
      expect(r.diagnostics).toEqual([]);
      const s = r.newState as CtyObject;
      for (const [k, v] of Object.entries(planned)) if (!isUnknown(v)) expect(s[k]).toEqual(v);
      expect({ vcpus: s.vcpus, memory_gb: s.memory_gb, max_vcpus: s.max_vcpus, restart_required: s.restart_required }).toEqual({ vcpus: 8, memory_gb: 16, max_vcpus: 8, restart_required: !allow });
      expect(patches).toEqual(allow ? [{ vcpus: 8, max_vcpus: 8, memory_mb: 16384, max_memory_mb: 16384 }, { restart: true }] : [{ vcpus: 8, max_vcpus: 8, memory_mb: 16384, max_memory_mb: 16384 }]);
    }
  });

  test("a VM that never gets an address fails after the timeout but stays in the state", async () => {
    const ctx = ctxWith(() => apiVm({ ip_address: null, network: { ...apiVm().network, ip_address: null } }), 300);
    const planned = (await planVm(ctx, null, config(), {})).planned as CtyObject;
    const r = await applyVm(ctx, null, planned);
    expect(r.diagnostics[0]?.summary).toBe("VM not ready");
    expect(r.diagnostics[0]?.detail).toContain("timed out after 0 s waiting for an IP address on virbr0");
    expect((r.newState as CtyObject).id).toBe("vm-abcdefgh"); // recorded, so Terraform taints it
  });

  test("ide disks read back as sata (the server's bus) keep the configured type; nvme is not virtio", async () => {
    const vm = apiVm();
    vm.disks[1]!.driver = "sata";
    const ctx = ctxWith(() => vm);
    const planned = (await planVm(ctx, null, config({ extra_disks: [{ size_gb: 500, type: "ide" }] }), {})).planned as CtyObject;
    const r = await applyVm(ctx, null, planned);
    expect((r.newState as CtyObject).extra_disks).toEqual([{ size_gb: 500, type: "ide" }]);
    // a virtio disk where nvme was configured is a different disk: the read shows virtio
    vm.disks[1]!.driver = "virtio";
    const nvme = (await planVm(ctx, null, config({ extra_disks: [{ size_gb: 500, type: "nvme" }] }), {})).planned as CtyObject;
    const r2 = await applyVm(ctx, null, nvme);
    expect((r2.newState as CtyObject).extra_disks).toEqual([{ size_gb: 500, type: "virtio" }]);
  });
});

describe("host and placement_group", () => {
  test("plan: a configured host is planned as is, an unset one is unknown on create and the prior host after; both force replacement", async () => {
    const ctx = ctxWith(() => null);
    const pinned = (await planVm(ctx, null, config({ host: "gamma", placement_group: "ci" }), {})).planned as CtyObject;
    expect(pinned).toMatchObject({ host: "gamma", placement_group: "ci" });
    const placed = (await planVm(ctx, null, config(), {})).planned as CtyObject;
    expect(isUnknown(placed.host)).toBe(true);
    expect(placed.placement_group).toBeNull(); // optional, not computed: unset is no group
    const prior: CtyObject = { ...config(), image: "debian-13-generic-amd64-daily", id: "vm-abcdefgh", host: "beta", placement_group: null, state: "running", ip_address: "10.0.0.5", mac_address: "m", ssh_port: null, created_at: "t", ssh_user: "kdevops", running: true, network: { bridge: "virbr0", mode: "bridge" } };
    const kept = await planVm(ctx, prior, config(), {});
    expect((kept.planned as CtyObject).host).toBe("beta");
    expect(kept.requiresReplace).toContainEqual(["host"]);
    expect(kept.requiresReplace).toContainEqual(["placement_group"]);
  });

  test("apply sends host and placement_group and records the host the server chose", async () => {
    const ctx = ctxWith(() => apiVm({ host: "beta", placement_group: "ci" }));
    const planned = (await planVm(ctx, null, config({ placement_group: "ci" }), {})).planned as CtyObject;
    const r = await applyVm(ctx, null, planned);
    expect(r.newState).toMatchObject({ host: "beta", placement_group: "ci" });
    expect(ctx.created[0]).toMatchObject({ placement_group: "ci" });
    expect(ctx.created[0]).not.toHaveProperty("host");
    const pin = ctxWith(() => apiVm({ host: "gamma" }));
    await applyVm(pin, null, (await planVm(pin, null, config({ host: "gamma" }), {})).planned as CtyObject);
    expect(pin.created[0]).toMatchObject({ host: "gamma" });
  });

  test("validation against the API's patterns, pointing at the attribute; unknowns pass", () => {
    expect(validateVm(config({ host: "alpha-2", placement_group: "ci_1" }))).toEqual([]);
    expect(validateVm(config({ host: UNKNOWN, placement_group: UNKNOWN }))).toEqual([]);
    const bad = validateVm(config({ host: "Alpha", placement_group: "ci group" }));
    expect(bad.map((d) => d.attribute)).toEqual([{ steps: [{ attribute_name: "host" }] }, { steps: [{ attribute_name: "placement_group" }] }]);
    expect(bad[0]?.detail).toContain(`host "Alpha" must be a host name`);
    expect(validateVm(config({ host: "x".repeat(64) }))).toHaveLength(1);
    expect(validateVm(config({ placement_group: "-ci" }))).toHaveLength(1);
  });
});
