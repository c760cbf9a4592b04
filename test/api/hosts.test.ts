/**
 * Many hosts through the API, on three real libvirtd daemons of the rig serving libvirt's test
 * driver (cheap domains, so placement can be tested with dozens of VMs): GET /hosts, placement
 * (spread, pinning, groups, cordon kept across restarts), names unique across hosts, listing
 * by host, and a host frozen with SIGSTOP during creates (the others go on, listing stays
 * under 2 s, the host goes offline and comes back), PATCHes growing VMs at once, and a listing
 * answering after a create and a delete it began before (fault point list.before-cache). test/e2e/hosts.test.ts boots real guests
 * on hosts reached over TLS, SSH and TCP.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { fleetConfig, mirrorFleetImages, newFleet, removeFleetPools, startFleetServer } from "../helpers/fleet.ts";
import { rig, tcpUri, unixUri, waitFor } from "../helpers/rig.ts";
import { spawnServer } from "../helpers/serve-process.ts";
import { fakeImageDir, startTestServer, type TestServer, waitHealthy } from "../helpers/server.ts";

const fleet = newFleet(`rctest-fleet-${process.pid}`, fakeImageDir());
let server: TestServer;

async function deleteAll(s: TestServer): Promise<void> {
  const vms = (await s.req("GET", "/api/v1/vms")).json?.vms ?? [];
  await Promise.all(vms.map((vm: { id: string }) => s.req("DELETE", `/api/v1/vms/${vm.id}`)));
}

function expectCode(r: { status: number; json: any }, status: number, code: string): void {
  expect({ status: r.status, code: r.json?.error?.code }).toEqual({ status, code });
}

function perHost(vms: { host: string }[]): Record<string, number> {
  const n: Record<string, number> = { alpha: 0, beta: 0, gamma: 0 };
  for (const vm of vms) n[vm.host] = (n[vm.host] ?? 0) + 1;
  return n;
}

beforeAll(async () => {
  server = await startFleetServer(fleet);
});

afterAll(async () => {
  await deleteAll(server);
  await server.stop();
  await removeFleetPools(fleet);
});

describe("hosts", () => {
  test("GET /hosts lists every host with its facts; the URI carries no credentials", async () => {
    const r = await server.req("GET", "/api/v1/hosts");
    expect(r.status).toBe(200);
    expect(r.json.hosts.map((h: { name: string }) => h.name)).toEqual(["alpha", "beta", "gamma"]);
    for (const h of r.json.hosts) {
      expect(h).toMatchObject({ driver: "libvirt", state: "online", last_error: null });
      expect(h.cpus).toBeGreaterThan(0);
      expect(h.memory_mb).toBeGreaterThan(0);
      expect(h.capacity.vcpus).toBe(h.cpus * 64);
      expect(h.uri).not.toContain("?");
      expect(Date.parse(h.last_contact)).toBeGreaterThan(Date.now() - 60_000);
      expect(h.versions.libvirt).toMatch(/^\d+\.\d+\.\d+$/);
    }
    expect(r.json.hosts[0].labels).toEqual({ rack: "a" });
    const one = await server.req("GET", "/api/v1/hosts/beta");
    expect(one.json).toMatchObject({ name: "beta", uri: tcpUri("test", "remote") });
    const missing = await server.req("GET", "/api/v1/hosts/nope");
    expect(missing.status).toBe(404);
    expect(missing.json.error.message).toContain("alpha, beta, gamma");
    const status = (await server.req("GET", "/api/v1/status")).json;
    expect(status.hosts).toEqual({ total: 3, online: 3, offline: 0, cordoned: 0 });
    expect(status.cpus).toBe(r.json.hosts.reduce((n: number, h: { cpus: number }) => n + h.cpus, 0));
    expect(status.uri).toBeNull();
  });

  test("60 concurrent creates spread evenly over three equal hosts; ?host= lists one host's VMs", async () => {
    const names = Array.from({ length: 60 }, (_, i) => `spread-${process.pid % 1000}-${i}`);
    const results = await Promise.all(names.map((name) => server.req("POST", "/api/v1/vms", { name, image: "debian13" })));
    expect(results.map((r) => r.status)).toEqual(names.map(() => 201));
    const counts = perHost(results.map((r) => r.json));
    expect(Math.max(...Object.values(counts)) - Math.min(...Object.values(counts))).toBeLessThanOrEqual(1);
    const beta = (await server.req("GET", "/api/v1/vms?host=beta")).json.vms;
    expect(beta.length).toBe(counts.beta);
    expect(beta.every((vm: { host: string; host_state: string }) => vm.host === "beta" && vm.host_state === "online")).toBe(true);
    expect((await server.req("GET", "/api/v1/vms?host=nope")).status).toBe(404);
    const hosts = (await server.req("GET", "/api/v1/hosts")).json.hosts;
    for (const h of hosts) expect(h.vms).toBe(counts[h.name]);
    await deleteAll(server);
  }, 120_000);

  test("pinning, placement groups, and names unique across hosts", async () => {
    const pinned = await server.req("POST", "/api/v1/vms", { name: "pin-one", image: "debian13", host: "gamma" });
    expect(pinned.status).toBe(201);
    expect(pinned.json.host).toBe("gamma");
    const again = await server.req("POST", "/api/v1/vms", { name: "pin-one", image: "debian13", host: "alpha" });
    expect(again.status).toBe(409);
    expect(again.json.error.code).toBe("name_taken");
    expect(again.json.error.message).toContain("gamma");
    const unknown = await server.req("POST", "/api/v1/vms", { name: "pin-two", image: "debian13", host: "nope" });
    expect(unknown.status).toBe(422);
    expect(unknown.json.error.field).toBe("host");
    // Pile VMs on alpha: spread alone would now avoid it, but a group fills hosts without members first.
    await Promise.all([1, 2, 3].map((i) => server.req("POST", "/api/v1/vms", { name: `pile-${i}`, image: "debian13", host: "beta" })));
    const group = await Promise.all([1, 2, 3].map((i) => server.req("POST", "/api/v1/vms", { name: `grp-${i}`, image: "debian13", placement_group: "ci" })));
    expect(group.map((r) => r.status)).toEqual([201, 201, 201]);
    expect(new Set(group.map((r) => r.json.host)).size).toBe(3);
    expect(group.every((r) => r.json.placement_group === "ci")).toBe(true);
    // Lookups by name and id find a VM on whichever host it is.
    const byId = await server.req("GET", `/api/v1/vms/${pinned.json.id}`);
    expect(byId.json).toMatchObject({ name: "pin-one", host: "gamma" });
    await deleteAll(server);
  }, 60_000);

  test("creates that arrive together while the hosts' facts are being re-read still see each other's choices", async () => {
    // Facts are re-read after 2 s: every create then awaits the same reading and resumes in one tick.
    for (const round of [1, 2]) {
      await Bun.sleep(2500);
      const group = await Promise.all([1, 2, 3].map((i) => server.req("POST", "/api/v1/vms", { name: `race-${round}-${i}`, image: "debian13", placement_group: `race-${round}` })));
      expect(group.map((r) => r.status)).toEqual([201, 201, 201]);
      expect(new Set(group.map((r) => r.json.host)).size).toBe(3);
    }
    await deleteAll(server);
  }, 60_000);

  test("a cordoned host takes no new VMs, also after rcloud restarts; uncordon gives it back", async () => {
    const c = await server.req("POST", "/api/v1/hosts/alpha/cordon");
    expect(c.json).toMatchObject({ name: "alpha", state: "cordoned" });
    const created = await Promise.all([1, 2, 3, 4].map((i) => server.req("POST", "/api/v1/vms", { name: `cord-${i}`, image: "debian13" })));
    expect(created.every((r) => r.status === 201 && r.json.host !== "alpha")).toBe(true);
    const refused = await server.req("POST", "/api/v1/vms", { name: "cord-pin", image: "debian13", host: "alpha" });
    expect(refused.status).toBe(422);
    expect(refused.json.error.message).toContain("cordoned");
    await server.stop();
    server = await startTestServer(fleetConfig(fleet));
    await waitHealthy(server);
    expect((await server.req("GET", "/api/v1/hosts/alpha")).json.state).toBe("cordoned");
    expect((await server.req("POST", "/api/v1/vms", { name: "cord-5", image: "debian13" })).json.host).not.toBe("alpha");
    expect((await server.req("POST", "/api/v1/hosts/alpha/uncordon")).json.state).toBe("online");
    expect((await server.req("POST", "/api/v1/vms", { name: "cord-6", image: "debian13", host: "alpha" })).status).toBe(201);
    await deleteAll(server);
  }, 60_000);
});

describe("growing VMs in place (PATCH)", () => {
  test("PATCHes growing two VMs at once cannot both take the last room; a VM grown twice counts once", async () => {
    const gamma = (await server.req("GET", "/api/v1/hosts/gamma")).json;
    const free = gamma.capacity.memory_mb - gamma.allocated.memory_mb;
    // Two running VMs of 256 MiB (room to grow live) and a filler: 512 MiB left on gamma.
    const mk = (name: string, memory_mb: number) => server.req("POST", "/api/v1/vms", { name, image: "debian13", host: "gamma", memory_mb, max_memory_mb: Math.max(memory_mb, 2048) });
    const [a, b] = await Promise.all([mk("grow-a", 256), mk("grow-b", 256)]);
    const filler = await mk("grow-fill", free - 1024);
    expect([a.status, b.status, filler.status]).toEqual([201, 201, 201]);
    expect((await server.req("GET", "/api/v1/hosts/gamma")).json.allocated.memory_mb).toBe(gamma.capacity.memory_mb - 512);
    // Each alone fits (+384), both do not: one is refused, and gamma stays within its memory.
    const both = await Promise.all(["grow-a", "grow-b"].map((n) => server.req("PATCH", `/api/v1/vms/${n}`, { memory_mb: 640 })));
    expect(both.map((r) => r.status).sort()).toEqual([200, 422]);
    const refused = both.find((r) => r.status === 422)!;
    expect(refused.json.error).toMatchObject({ code: "capacity_exceeded", field: "memory_mb" });
    const grown = both.find((r) => r.status === 200)!.json;
    expect(grown.memory_mb).toBe(640);
    // The grown VM again, no listing between: its own share counts once, at its new size (640 → 900 does not fit; → 768 does).
    expectCode(await server.req("PATCH", `/api/v1/vms/${grown.id}`, { memory_mb: 900 }), 422, "capacity_exceeded");
    expect((await server.req("PATCH", `/api/v1/vms/${grown.id}`, { memory_mb: 768 })).status).toBe(200);
    const after = (await server.req("GET", "/api/v1/hosts/gamma")).json;
    expect(after.allocated.memory_mb).toBe(after.capacity.memory_mb);
    await deleteAll(server);
  }, 60_000);
});

describe("a host that stops answering", () => {
  test("SIGSTOP during 12 concurrent creates: the others succeed, listing stays under 2 s, the host goes offline and comes back", async () => {
    const frozen = rig().instances.remote.libvirtdPid; // host beta
    // A VM on beta before it freezes, to see how it is shown meanwhile.
    const before = await server.req("POST", "/api/v1/vms", { name: "frozen-vm", image: "debian13", host: "beta" });
    expect(before.status).toBe(201);
    await server.req("GET", "/api/v1/vms"); // beta's listing is remembered
    process.kill(frozen, "SIGSTOP");
    try {
      const results = await Promise.all(Array.from({ length: 12 }, (_, i) => server.req("POST", "/api/v1/vms", { name: `stop-${i}`, image: "debian13" })));
      for (const r of results) {
        // Placed on alpha or gamma: created; placed on beta before it was seen frozen: 503.
        if (r.status === 201) expect(r.json.host).not.toBe("beta");
        else expect({ status: r.status, code: r.json.error.code }).toEqual({ status: 503, code: "host_unavailable" });
      }
      expect(results.filter((r) => r.status === 201).length).toBeGreaterThanOrEqual(8);
      const t0 = performance.now();
      const list = await server.req("GET", "/api/v1/vms");
      expect(performance.now() - t0).toBeLessThan(2000);
      const shown = list.json.vms.find((vm: { name: string }) => vm.name === "frozen-vm");
      expect(shown).toMatchObject({ host: "beta", state: "unknown", host_state: "offline" });
      await waitFor("beta offline", async () => (await server.req("GET", "/api/v1/hosts/beta")).json.state === "offline", 20_000, 250);
      const t1 = performance.now();
      const op = await server.req("POST", "/api/v1/vms/frozen-vm/stop?force=true");
      expect(performance.now() - t1).toBeLessThan(2000);
      expect({ status: op.status, code: op.json.error.code }).toEqual({ status: 503, code: "host_unavailable" });
      expect((await server.req("GET", "/api/v1/status")).json.hosts).toMatchObject({ online: 2, offline: 1 });
      expect((await server.req("GET", "/metrics")).text).toContain('rcloud_host_up{host="beta"} 0');
    } finally {
      process.kill(frozen, "SIGCONT");
    }
    await waitFor("beta online again", async () => (await server.req("GET", "/api/v1/hosts/beta")).json.state === "online", 20_000, 250);
    const back = (await server.req("GET", "/api/v1/vms/frozen-vm")).json;
    expect(back).toMatchObject({ host: "beta", host_state: "online" });
    expect(back.state).not.toBe("unknown");
    // Creates given up on while beta was frozen are undone once it finishes them.
    await waitFor("no VM of a refused create left on beta", async () => {
      const vms = (await server.req("GET", "/api/v1/vms?host=beta")).json.vms as { name: string }[];
      return vms.every((vm) => vm.name === "frozen-vm");
    }, 20_000, 250);
    await deleteAll(server);
  }, 120_000);
});

describe("a listing slower than the creates and deletes beside it", () => {
  test("a create or delete made while a listing ran is kept in the host's cache: names are judged right while the host does not answer", async () => {
    // Every listing is held 2.5 s after its host answered, before it reaches rcloud's cache
    // (fault point list.before-cache): a create and a delete finish meanwhile.
    const slow = newFleet(`rctest-fleetslow-${process.pid}`, fakeImageDir());
    await mirrorFleetImages(slow);
    const { server: _own, ...config } = fleetConfig(slow);
    const s = await spawnServer(config, { uri: unixUri("test", "main"), pool: slow.pool, dirs: [slow.stateDir] }, { RCLOUD_FAULT_POINTS: "list.before-cache:delay=2500" });
    const call = async (method: string, path: string, body?: unknown) => {
      const headers: Record<string, string> = { authorization: `Bearer ${s.token}` };
      if (body !== undefined) headers["content-type"] = "application/json";
      const res = await fetch(`${s.baseUrl}/api/v1${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
      return { status: res.status, json: (await res.json().catch(() => null)) as any };
    };
    const frozen = rig().instances.remote.libvirtdPid; // host beta
    try {
      await waitFor("all three hosts online", async () => (await call("GET", "/hosts")).json.hosts.every((h: { state: string }) => h.state === "online"), 20_000, 250);
      expect((await call("POST", "/vms", { name: "slow-gone", image: "debian13", host: "beta" })).status).toBe(201);
      await Bun.sleep(3000); // beta's cache has slow-gone
      const listing = call("GET", "/hosts/beta"); // a listing of beta begins: slow-gone, no slow-new
      await Bun.sleep(200);
      expect((await call("POST", "/vms", { name: "slow-new", image: "debian13", host: "beta" })).status).toBe(201);
      expect((await call("DELETE", "/vms/slow-gone")).status).toBe(200);
      await listing;
      await Bun.sleep(2500); // that listing has reached the cache
      process.kill(frozen, "SIGSTOP");
      try {
        // beta does not answer: its cache decides whether it has a name.
        expectCode(await call("POST", "/vms", { name: "slow-new", image: "debian13", host: "alpha" }), 409, "name_taken");
        expect((await call("POST", "/vms", { name: "slow-gone", image: "debian13", host: "alpha" })).status).toBe(201);
        expect((await call("GET", "/hosts/beta")).json.vms).toBe(1);
      } finally {
        process.kill(frozen, "SIGCONT");
      }
      await waitFor("beta answers", async () => (await call("GET", "/hosts/beta")).json.state === "online", 20_000, 250);
    } finally {
      await s.stop();
      await removeFleetPools(slow);
    }
  }, 90_000);
});

describe("what a host's URI shows", () => {
  test("no user name or local paths of the URI reach clients: health, host errors, 503 answers, the console command", async () => {
    const secrets = "keyfile=/secret/key&pkipath=/secret/pki&known_hosts=/secret/known_hosts";
    const alpha = `${unixUri("test", "main")}&${secrets}`;
    const lost = `test+unix://rcuser@/default?socket=/secret/lost.sock&${secrets}`;
    const leaks = (text: string) => expect(text).not.toMatch(/\/secret|rcuser/);
    const config = fleetConfig(fleet);
    const both = await startTestServer({ ...config, hosts: [{ name: "alpha", uri: alpha }, { name: "lost", uri: lost }] });
    try {
      await waitFor("alpha online, lost failed", async () => {
        const hosts = (await both.req("GET", "/api/v1/hosts")).json.hosts as { name: string; state: string; last_error: string | null }[];
        return hosts[0]?.state === "online" && hosts[1]?.last_error != null;
      });
      const health = await both.req("GET", "/api/v1/health");
      expect(health.json.hypervisor.detail).toContain("1 of 2 hosts online; offline: lost (");
      leaks(health.text);
      const down = await both.req("GET", "/api/v1/hosts/lost");
      expect(down.json).toMatchObject({ state: "offline", uri: "test+unix:///default" });
      expect(down.json.last_error).toContain("<socket>");
      leaks(down.text);
      const vm = await both.req("POST", "/api/v1/vms", { name: "uri-console", image: "debian13", host: "alpha" });
      expect(vm.status).toBe(201);
      const con = await both.req("GET", "/api/v1/vms/uri-console/console");
      expect(con.json.command).toBe("virsh -c test+unix:///default console uri-console");
      leaks(con.text);
      await both.req("DELETE", "/api/v1/vms/uri-console");
    } finally {
      await both.stop();
    }
    // Its only host down: health and VM calls answer 503 with the host's error.
    const alone = await startTestServer({ ...config, hosts: [{ name: "lost", uri: lost }] });
    try {
      await waitFor("lost failed", async () => (await alone.req("GET", "/api/v1/hosts/lost")).json.last_error != null);
      const health = await alone.req("GET", "/api/v1/health");
      expect(health.status).toBe(503);
      expect(health.json.hypervisor.detail).toContain("<socket>");
      leaks(health.text);
      const vms = await alone.req("GET", "/api/v1/vms");
      expect({ status: vms.status, code: vms.json.error.code }).toEqual({ status: 503, code: "hypervisor_unavailable" });
      expect(vms.json.error.message).toContain("<socket>");
      leaks(vms.text);
    } finally {
      await alone.stop();
    }
  }, 60_000);
});
