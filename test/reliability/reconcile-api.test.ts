/**
 * POST /api/v1/reconcile: admin tokens only (401 without a token, 403 with a project token);
 * on libvirt (the rig's test driver) it removes volumes of rcloud's pool named after a VM id
 * with no VM, reports each, and leaves alone a listed VM's volumes and volumes it does not own;
 * on the QEMU driver it removes a VM directory without vm.json (a create cut short) and leaves
 * directories that are not VM ids.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createToken } from "../../src/auth/tokens.ts";
import { volumeXml } from "../../src/drivers/libvirt/storage-xml.ts";
import { QemuDriver } from "../../src/drivers/qemu/driver.ts";
import { LibvirtClient, remoteProcedures as P } from "../../src/libvirt/index.ts";
import { removePool, unixUri } from "../helpers/rig.ts";
import { startTestServer, testDriverConfig, type TestServer } from "../helpers/server.ts";

const dir = mkdtempSync(join(tmpdir(), "rcloud-reconcile-"));
const tokensFile = join(dir, "tokens.json");
const poolName = `rctest-reconcile-${process.pid}`;
let srv: TestServer;
let lv: LibvirtClient;
const admin = createToken(tokensFile, { name: "admin", role: "admin", project: null }).token;
const user = createToken(tokensFile, { name: "user", role: "user", project: "kernel-ci" }).token;

async function call(method: string, path: string, token: string | null, body?: unknown) {
  const headers: Record<string, string> = body ? { "content-type": "application/json" } : {};
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(`${srv.url}${path}`, { method, headers, body: body ? JSON.stringify(body) : undefined });
  return { status: res.status, json: (await res.json()) as any };
}

async function volumes(): Promise<string[]> {
  const { pool } = await lv.call(P.storagePoolLookupByName, { name: poolName });
  return (await lv.call(P.storagePoolListAllVolumes, { pool, need_results: 1, flags: 0 })).vols.map((v) => v.name).sort();
}

beforeAll(async () => {
  srv = await startTestServer({ ...(await testDriverConfig(poolName)), auth: { enabled: true, tokens_file: tokensFile } });
  lv = await LibvirtClient.connect(unixUri("test"));
  const deadline = Date.now() + 15_000;
  while ((await call("GET", "/api/v1/health", null)).status !== 200 && Date.now() < deadline) await Bun.sleep(100);
});

afterAll(async () => {
  const list = await call("GET", "/api/v1/vms", admin);
  for (const vm of list.json?.vms ?? []) await call("DELETE", `/api/v1/vms/${vm.id}`, admin);
  await srv?.stop();
  await removePool(lv, poolName);
  await lv?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("POST /api/v1/reconcile", () => {
  test("needs an admin token", async () => {
    expect((await call("POST", "/api/v1/reconcile", null)).status).toBe(401);
    const forbidden = await call("POST", "/api/v1/reconcile", user);
    expect(forbidden.status).toBe(403);
    expect(forbidden.json.error.code).toBe("forbidden");
    expect(forbidden.json.error.message).toContain("admin token");
    const ok = await call("POST", "/api/v1/reconcile", admin);
    expect(ok.status).toBe(200);
    expect(ok.json.hosts).toHaveLength(1);
    expect(ok.json.hosts[0].error).toBeNull();
  });

  test("libvirt: removes volumes named after a VM id with no VM, keeps a VM's own and foreign ones", async () => {
    const made = await call("POST", "/api/v1/vms", admin, { name: "rc-keep", image: "debian13", start: false, extra_disks: [{ size_gb: 1 }] });
    expect(made.status).toBe(201);
    const keptId = made.json.id as string;
    const { pool } = await lv.call(P.storagePoolLookupByName, { name: poolName });
    const orphan = "vm-0rphan00";
    for (const name of [`${orphan}-root.qcow2`, `${orphan}-seed.iso`, "not-rcloud.qcow2", "vm-notanid-root.qcow2"]) {
      await lv.call(P.storagePoolRefresh, { pool, flags: 0 });
      await lv.call(P.storageVolCreateXml, { pool, xml: volumeXml({ name, capacityBytes: 1024 * 1024, allocationBytes: 0, format: "raw" }), flags: 0 });
    }
    const r = await call("POST", "/api/v1/reconcile", admin);
    expect(r.status).toBe(200);
    const removed = r.json.hosts[0].removed as { kind: string; name: string; vm_id: string }[];
    expect(removed.map((x) => x.name).sort()).toEqual([`${orphan}-root.qcow2`, `${orphan}-seed.iso`]);
    expect(removed.every((x) => x.kind === "volume" && x.vm_id === orphan)).toBe(true);
    const left = await volumes();
    expect(left).toContain("not-rcloud.qcow2");
    expect(left).toContain("vm-notanid-root.qcow2");
    expect(left).toContain(`${keptId}-root.qcow2`);
    expect(left).toContain(`${keptId}-data0.qcow2`);
    expect(left.some((v) => v.startsWith(orphan))).toBe(false);
    // Nothing left to do: a second pass removes nothing.
    expect((await call("POST", "/api/v1/reconcile", admin)).json.hosts[0].removed).toEqual([]);
  });

  test("libvirt: reconciles during creates never remove a created VM's volumes", async () => {
    // A create that finishes while a pass runs (its volumes listed, the domains read before its
    // define) is neither creating nor listed when the pass looks at its volumes.
    for (let round = 0; round < 20; round++) {
      const removedIds = new Set<string>();
      let done = false;
      const creates = Promise.all(
        Array.from({ length: 6 }, (_, i) => call("POST", "/api/v1/vms", admin, { name: `rc-race-${round}-${i}`, image: "debian13", extra_disks: [{ size_gb: 1 }] })),
      ).finally(() => (done = true));
      const passes = (async () => {
        while (!done) {
          const r = await call("POST", "/api/v1/reconcile", admin);
          expect(r.status).toBe(200);
          for (const x of r.json.hosts[0].removed as { vm_id: string }[]) removedIds.add(x.vm_id);
        }
      })();
      const [made] = await Promise.all([creates, passes]);
      const created = made.map((m) => {
        expect(m.status === 201 ? 201 : m.json).toBe(201);
        return m.json.id as string;
      });
      expect(created.filter((id) => removedIds.has(id))).toEqual([]);
      const left = await volumes();
      for (const id of created) {
        expect(left).toContain(`${id}-root.qcow2`);
        expect(left).toContain(`${id}-data0.qcow2`);
      }
      for (const id of created) expect((await call("DELETE", `/api/v1/vms/${id}`, admin)).status).toBe(200);
    }
  });
});

describe("QEMU driver reconcile", () => {
  test("removes a VM directory without vm.json; leaves what is not a VM id", async () => {
    const root = mkdtempSync(join("/tmp", "rcq-rec-"));
    const state = join(root, "state");
    mkdirSync(join(root, "images"));
    const d = new QemuDriver({ binary: "qemu-system-x86_64", stateDir: state, accel: "tcg", runAs: null, baseImagesDir: join(root, "images"), kernelDir: null });
    try {
      await d.init();
      const cut = join(state, "vms", "vm-cut00000");
      const foreign = join(state, "vms", "not-a-vm");
      for (const p of [cut, foreign]) {
        mkdirSync(p, { recursive: true });
        writeFileSync(join(p, "root.qcow2"), "x");
      }
      const r = await d.reconcile();
      expect(r.removed).toEqual([{ kind: "vm-directory", name: cut, vmId: "vm-cut00000" }]);
      expect(existsSync(cut)).toBe(false);
      expect(existsSync(join(foreign, "root.qcow2"))).toBe(true);
    } finally {
      await d.close();
      rmSync(root, { recursive: true, force: true });
    }
  });
});
