/**
 * The CLI's host commands and the host parts of vm/image commands, as a child process against a
 * real rcloud server driving three real libvirtd hosts (the rig's test-driver daemons, see
 * test/helpers/fleet.ts): tables, -o json/names, cordon, pinning and placement groups, the
 * HOST column (also for a frozen host), image hosts and copy, client-side name checks, and
 * bash completion of host names.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bashCompleter, type CliRun, runCliProcess } from "../helpers/cli.ts";
import { newFleet, removeFleetPools, startFleetServer } from "../helpers/fleet.ts";
import { rig, waitFor } from "../helpers/rig.ts";
import { fakeImageDir, type TestServer } from "../helpers/server.ts";

const fleet = newFleet(`rctest-clifleet-${process.pid}`, fakeImageDir());
const home = mkdtempSync(join(tmpdir(), "rcloud-cli-fleet-home-")); // no ~/.ssh: no key is sent
const name = (s: string) => `rctest-clih-${s}-${process.pid % 100000}`;
let server: TestServer;

function cli(args: string[]): Promise<CliRun> {
  return runCliProcess(args, { RCLOUD_ENDPOINT: server.url, HOME: home, RCLOUD_TOKEN: undefined });
}

async function api(path: string) {
  return (await server.req("GET", `/api/v1${path}`)).json;
}

/** The row of `name` in a table, cut into cells by the header's column starts. */
function row(table: string, first: string): Record<string, string> {
  const lines = table.trimEnd().split("\n");
  const header = lines[0] as string;
  const starts = [...header.matchAll(/\S+(?: \S+)*/g)].map((m) => ({ col: m[0], at: m.index ?? 0 }));
  const line = lines.find((l) => l.startsWith(`${first} `));
  if (!line) throw new Error(`no row ${first} in:\n${table}`);
  return Object.fromEntries(starts.map((s, i) => [s.col, line.slice(s.at, starts[i + 1]?.at ?? line.length).trim()]));
}

beforeAll(async () => {
  server = await startFleetServer(fleet);
});

afterAll(async () => {
  for (const vm of (await api("/vms")).vms ?? []) await server.req("DELETE", `/api/v1/vms/${vm.id}`);
  await server.stop();
  await removeFleetPools(fleet);
  rmSync(home, { recursive: true, force: true });
});

describe("host commands", () => {
  test("host list: a row per host with the API's figures; -o json is the API's answer; -o names", async () => {
    const r = await cli(["host", "list"]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout.split("\n")[0]).toMatch(/^NAME +STATE +CPUS +MEMORY +ALLOCATED +VMS +LAST-CONTACT +URI$/);
    const hosts = (await api("/hosts")).hosts as { name: string; cpus: number; uri: string; vms: number }[];
    for (const h of hosts) {
      const cells = row(r.stdout, h.name);
      expect(cells).toMatchObject({ STATE: "online", CPUS: String(h.cpus), VMS: String(h.vms), URI: h.uri });
      expect(cells.ALLOCATED).toMatch(/^\d+ vCPUs?, \d+(\.\d)?[MG]$/);
      expect(cells["LAST-CONTACT"]).toMatch(/^\d+s ago$/);
    }
    const j = await cli(["host", "list", "-o", "json"]);
    const listed = JSON.parse(j.stdout).hosts as Record<string, unknown>[];
    // last_contact and free memory move between two readings; everything else is the API's.
    const still = (h: Record<string, unknown>) => ({ ...h, last_contact: null, available_memory_mb: null });
    expect(listed.map(still)).toEqual(((await api("/hosts")).hosts as Record<string, unknown>[]).map(still));
    expect((await cli(["host", "list", "-o", "names"])).stdout).toBe("alpha\nbeta\ngamma\n");
  });

  test("host show: fields; an unknown host is 3 with the server's message; a malformed name is 2 before any request", async () => {
    const r = await cli(["host", "show", "alpha"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^Name: +alpha$/m);
    expect(r.stdout).toMatch(/^State: +online$/m);
    expect(r.stdout).toMatch(/^Labels: +rack=a$/m);
    expect(r.stdout).toMatch(new RegExp(`^libvirt: +${(await api("/hosts/alpha")).versions.libvirt}$`, "m"));
    expect(JSON.parse((await cli(["host", "show", "beta", "-o", "json"])).stdout)).toMatchObject({ name: "beta", labels: { rack: "b" } });
    const missing = await cli(["host", "show", "nope"]);
    expect(missing.code).toBe(3);
    expect(missing.stderr).toBe(`rcloud: ${(await server.req("GET", "/api/v1/hosts/nope")).json.error.message}\n`);
    const bad = await cli(["host", "show", "Not_A_Host"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toStartWith("rcloud: invalid host name 'Not_A_Host': a host name is 1-63 lower-case letters");
    expect((await cli(["host", "cordon"])).code).toBe(2);
  });

  test("cordon: the host takes no new VMs (a pin to it is refused, 5); uncordon gives it back", async () => {
    const c = await cli(["host", "cordon", "alpha"]);
    expect(c.code).toBe(0);
    expect(c.stdout).toBe("Cordoned host alpha, cordoned; it takes no new VMs\n");
    expect((await api("/hosts/alpha")).state).toBe("cordoned");
    expect(row((await cli(["host", "list"])).stdout, "alpha").STATE).toBe("cordoned");
    const refused = await cli(["vm", "create", name("cord"), "--image", "debian13", "--host", "alpha"]);
    expect(refused.code).toBe(5);
    expect(refused.stderr).toContain("cordoned");
    const u = await cli(["host", "uncordon", "alpha", "-o", "json"]);
    expect(u.code).toBe(0);
    expect(JSON.parse(u.stdout)).toMatchObject({ name: "alpha", state: "online" });
  });
});

describe("VMs on hosts", () => {
  test("create --placement-group spreads a group over the hosts; --host pins; vm list and show name the host", async () => {
    const group = ["g0", "g1", "g2"].map(name);
    // One after the other: concurrent creates are the API tests' business (test/api/hosts.test.ts).
    const made: CliRun[] = [];
    for (const n of group) made.push(await cli(["vm", "create", n, "--image", "debian13", "--placement-group", "ci_grp-1"]));
    for (const [i, r] of made.entries()) {
      expect(r.stderr).toBe("");
      expect(r.stdout).toMatch(new RegExp(`^Created VM ${group[i]} \\(vm-[a-z0-9]{8}\\) on host (alpha|beta|gamma), running\\n$`));
    }
    const vms = await Promise.all(group.map((n) => api(`/vms/${n}`)));
    expect(new Set(vms.map((v) => v.host)).size).toBe(3);
    expect(vms.every((v) => v.placement_group === "ci_grp-1")).toBe(true);

    const pinned = await cli(["vm", "create", name("pin"), "--image", "debian13", "--host", "gamma", "-o", "json"]);
    expect(pinned.code).toBe(0);
    expect(JSON.parse(pinned.stdout)).toMatchObject({ name: name("pin"), host: "gamma", placement_group: null });

    const list = await cli(["vm", "list"]);
    expect(list.code).toBe(0);
    for (const v of vms) expect(row(list.stdout, v.name).HOST).toBe(v.host);
    expect(row(list.stdout, name("pin")).HOST).toBe("gamma");

    const onGamma = await cli(["vm", "list", "--host", "gamma", "-o", "names"]);
    expect(onGamma.stdout.trim().split("\n").sort()).toEqual((await api("/vms?host=gamma")).vms.map((v: { name: string }) => v.name).sort());
    expect(onGamma.stdout).toContain(name("pin"));
    expect(JSON.parse((await cli(["vm", "list", "--host", "beta", "-o", "json"])).stdout)).toEqual(await api("/vms?host=beta"));
    expect((await cli(["vm", "list", "--host", "nope"])).code).toBe(3);

    const show = await cli(["vm", "show", group[0] as string]);
    expect(show.stdout).toMatch(new RegExp(`^Host: +${vms[0].host}$`, "m"));
    expect(show.stdout).toMatch(/^Placement group: +ci_grp-1$/m);
    expect((await cli(["vm", "show", name("pin")])).stdout).not.toContain("Placement group");
  }, 60_000);

  test("malformed --host and --placement-group are usage errors (2) and nothing is created", async () => {
    for (const bad of [["--host", "Alpha"], ["--host", "al_pha"], ["--placement-group", "CI"], ["--placement-group", "a b"], ["--placement-group", "x-"]]) {
      const r = await cli(["vm", "create", name("bad"), "--image", "debian13", ...bad]);
      expect(r.code).toBe(2);
      expect(r.stderr).toStartWith(`rcloud: invalid ${bad[0]} '${bad[1]}'`);
    }
    expect((await cli(["vm", "list", "--host", "A"])).code).toBe(2);
    expect((await server.req("GET", `/api/v1/vms/${name("bad")}`)).status).toBe(404);
  });

  test("a frozen host: vm list shows its VMs as unknown on 'HOST (offline)' and stays fast", async () => {
    const vm = name("frozen");
    expect((await cli(["vm", "create", vm, "--image", "debian13", "--host", "gamma"])).code).toBe(0);
    await cli(["vm", "list"]); // gamma's listing is remembered
    const pid = rig().instances.fault.libvirtdPid; // host gamma
    process.kill(pid, "SIGSTOP");
    let list: CliRun;
    let ms: number;
    try {
      const t0 = performance.now();
      list = await cli(["vm", "list"]);
      ms = performance.now() - t0;
    } finally {
      process.kill(pid, "SIGCONT");
    }
    expect(list.code).toBe(0);
    expect(row(list.stdout, vm)).toMatchObject({ STATE: "unknown", HOST: "gamma (offline)" });
    expect(ms).toBeLessThan(5000); // the server answers within 2 s; the rest is starting the CLI
    await waitFor("gamma answers again", async () => (await api(`/vms/${vm}`)).host_state === "online", 20_000, 250);
    expect(row((await cli(["vm", "list"])).stdout, vm).HOST).toBe("gamma");
  }, 60_000);
});

describe("images and status on a fleet", () => {
  test("image list and show name the hosts holding each image", async () => {
    const l = await cli(["image", "list"]);
    expect(l.code).toBe(0);
    expect(row(l.stdout, "debian13").HOSTS).toBe((await api("/images/debian13")).hosts.join(","));
    expect(row(l.stdout, "debian13").HOSTS).toBe("alpha,beta,gamma");
    expect((await cli(["image", "show", "debian13"])).stdout).toMatch(/^Hosts: +alpha, beta, gamma$/m);
  });

  test("image copy: the server's answers become exit codes; flags are checked first", async () => {
    const have = await cli(["image", "copy", "debian13", "--to", "beta"]);
    expect(have.code).toBe(4); // 409: beta has it already
    expect(have.stderr).toBe(`rcloud: ${(await server.req("POST", "/api/v1/images/debian13/copy", { to: "beta" })).json.error.message}\n`);
    expect(have.stderr).toContain("already has image");
    expect((await cli(["image", "copy", "no-such-image", "--to", "beta"])).code).toBe(3);
    expect((await cli(["image", "copy", "debian13", "--to", "nope"])).code).toBe(3);
    const noTo = await cli(["image", "copy", "debian13"]);
    expect(noTo.code).toBe(2);
    expect(noTo.stderr).toBe("rcloud: image copy needs --to HOST (see 'rcloud host list')\n");
    expect((await cli(["image", "copy", "debian13", "--to", "beta", "--from", "Gamma"])).stderr).toStartWith("rcloud: invalid --from 'Gamma'");
  });

  test("status sums the fleet and counts hosts by state", async () => {
    const s = await cli(["status"]);
    expect(s.code).toBe(0);
    expect(s.stdout).toMatch(/^Hosts: +3 \(3 online\)$/m);
    expect(s.stdout).toMatch(new RegExp(`^Fleet: +${(await api("/status")).cpus} CPUs`, "m"));
  });
});

test("bash completion offers the server's host names for host commands and --host", async () => {
  const complete = bashCompleter((await cli(["completion", "bash"])).stdout, home, server.url);
  expect((await complete("rcloud h")).sort()).toEqual(["help", "host", "hv-info"]);
  expect(await complete("rcloud host ")).toEqual(["list", "show", "cordon", "uncordon"]);
  expect(await complete("rcloud host cordon ")).toEqual(["alpha", "beta", "gamma"]);
  expect(await complete("rcloud host show b")).toEqual(["beta"]);
  expect(await complete("rcloud vm create x --host ")).toEqual(["alpha", "beta", "gamma"]);
  expect(await complete("rcloud vm create x --pl")).toEqual(["--placement-group"]);
  expect(await complete("rcloud vm list --host g")).toEqual(["gamma"]);
  expect(await complete("rcloud image copy debian13 --to ")).toEqual(["alpha", "beta", "gamma"]);
}, 60_000);
