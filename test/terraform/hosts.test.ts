/**
 * The provider on a fleet, through real Terraform against a real rcloud server driving three
 * libvirtd test-driver hosts (test/helpers/fleet.ts): examples/hosts/main.tf applied as a user
 * would (three VMs of one placement group on three hosts, the rcloud_hosts data source), a
 * clean re-plan and destroy; `host` pinning, keeping and replacing; plan-time checks of `host`
 * and `placement_group`.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { resolve } from "node:path";
import { apply, type Fixture, plan, resourceValues, showState, startFixture, tf, tfOk, workdir, writeMain } from "./harness.ts";

let fx: Fixture;
const EXAMPLE_VMS = ["ci-node-0", "ci-node-1", "ci-node-2"];

beforeAll(async () => {
  fx = await startFixture("h", { fleet: true });
});

afterAll(async () => {
  for (const n of EXAMPLE_VMS) await fx?.server.req("DELETE", `/api/v1/vms/${n}`);
  await fx?.stop();
});

interface ApiVmLite {
  id: string;
  name: string;
  host: string;
  placement_group: string | null;
}

const apiVm = async (ref: string): Promise<ApiVmLite & { status: number }> => {
  const r = await fx.server.req("GET", `/api/v1/vms/${ref}`);
  return { ...r.json, status: r.status };
};

test("examples/hosts/main.tf: three VMs of one placement group on three hosts, the hosts data source, a clean re-plan, destroy", async () => {
  const example = await Bun.file(resolve(import.meta.dir, "../../examples/hosts/main.tf")).text();
  expect(example).toContain(`endpoint = "http://localhost:8765"`);
  const dir = workdir(example.replace(`"http://localhost:8765"`, `"${fx.server.url}"`));

  const applied = await apply(dir, fx.env);
  expect(applied.stdout).toContain("Apply complete! Resources: 3 added, 0 changed, 0 destroyed.");
  const vms = await Promise.all(EXAMPLE_VMS.map(apiVm));
  expect(vms.map((v) => v.status)).toEqual([200, 200, 200]);
  expect(vms.every((v) => v.placement_group === "ci")).toBe(true);
  expect(new Set(vms.map((v) => v.host))).toEqual(new Set(["alpha", "beta", "gamma"]));

  const out = JSON.parse((await tfOk(dir, ["output", "-json", "-no-color"], fx.env)).stdout);
  expect(out.hosts.value).toEqual({ alpha: "online", beta: "online", gamma: "online" });
  expect(out.placement.value).toEqual(Object.fromEntries(vms.map((v) => [v.name, v.host])));

  const state = await showState(dir, fx.env);
  const data = state.find((r) => r.address === "data.rcloud_hosts.all");
  const api = (await fx.server.req("GET", "/api/v1/hosts")).json.hosts as { name: string; uri: string; cpus: number; memory_mb: number; capacity: { vcpus: number } }[];
  const hosts = data?.values.hosts as { name: string; uri: string; state: string; labels: Record<string, string>; cpus: number; memory_mb: number; capacity: { vcpus: number } }[];
  expect(hosts.map((h) => h.name)).toEqual(["alpha", "beta", "gamma"]);
  for (const [i, h] of hosts.entries()) {
    expect(h).toMatchObject({ uri: api[i]?.uri, state: "online", cpus: api[i]?.cpus, memory_mb: api[i]?.memory_mb, labels: { rack: h.name === "alpha" ? "a" : "b" } });
    expect(h.capacity.vcpus).toBe((api[i]?.cpus ?? 0) * 64); // vm_defaults.vcpu_overcommit of the fleet config
  }
  expect(state.filter((r) => r.type === "rcloud_vm").map((r) => r.values.host).sort()).toEqual(["alpha", "beta", "gamma"]);

  const again = await plan(dir, fx.env);
  expect({ code: again.code, out: again.code === 0 ? "" : again.out }).toEqual({ code: 0, out: "" });

  await tfOk(dir, ["destroy", "-auto-approve", "-input=false", "-no-color"], fx.env);
  expect((await Promise.all(EXAMPLE_VMS.map(apiVm))).map((v) => v.status)).toEqual([404, 404, 404]);
}, 300_000);

describe("host and placement_group on rcloud_vm", () => {
  const vmHcl = (attrs: string) => `${fx.header()}
resource "rcloud_vm" "pinned" {
  name      = "${fx.prefix}-pin"
  image     = "debian13"
  memory_gb = 0.125
${attrs}}
`;

  test("a pinned host is kept when the pin is removed, and replaces the VM when it changes", async () => {
    const dir = workdir(vmHcl(`  host = "gamma"\n  placement_group = "pins"\n`));
    await apply(dir, fx.env);
    const first = await apiVm(`${fx.prefix}-pin`);
    expect(first).toMatchObject({ host: "gamma", placement_group: "pins" });
    expect(await resourceValues(dir, fx.env, "rcloud_vm.pinned")).toMatchObject({ host: "gamma", placement_group: "pins", id: first.id });

    writeMain(dir, vmHcl(`  placement_group = "pins"\n`)); // optional + computed: no pin means "wherever it is"
    expect((await plan(dir, fx.env)).code).toBe(0);

    writeMain(dir, vmHcl(`  host = "beta"\n  placement_group = "pins"\n`));
    const moved = await plan(dir, fx.env);
    expect(moved.code).toBe(2);
    expect(moved.stdout).toMatch(/~ host +\s*= "gamma" -> "beta" # forces replacement/);
    await apply(dir, fx.env);
    const second = await apiVm(`${fx.prefix}-pin`);
    expect(second.host).toBe("beta");
    expect(second.id).not.toBe(first.id);

    writeMain(dir, vmHcl(`  host = "beta"\n`));
    const regroup = await plan(dir, fx.env);
    expect(regroup.code).toBe(2);
    expect(regroup.stdout).toMatch(/- placement_group +\s*= "pins" -> null # forces replacement/);

    await tfOk(dir, ["destroy", "-auto-approve", "-input=false", "-no-color"], fx.env);
    expect((await apiVm(`${fx.prefix}-pin`)).status).toBe(404);
  }, 240_000);

  test("malformed host and placement_group fail validation; an unknown host fails the apply with the server's message", async () => {
    const cases: [string, string, string][] = [
      ["host", "Gamma", `host "Gamma" must be a host name`],
      ["host", "a_b", `host "a_b" must be a host name`],
      ["placement_group", "CI jobs", `placement_group "CI jobs" must be 1-63 lower-case letters`],
      ["placement_group", "-ci", `placement_group "-ci" must be 1-63`],
    ];
    for (const [attr, value, says] of cases) {
      const r = await tf(workdir(vmHcl(`  ${attr} = "${value}"\n`)), ["validate", "-no-color"], fx.env);
      expect(r.code).toBe(1);
      expect(r.out).toContain(says);
      expect(r.out).toContain(`${attr} = "${value}"`); // the diagnostic points at the attribute
    }
    const dir = workdir(vmHcl(`  host = "delta"\n`));
    const r = await tf(dir, ["apply", "-auto-approve", "-input=false", "-no-color"], fx.env);
    expect(r.code).toBe(1);
    expect(r.out.replace(/\s+/g, " ")).toContain("host: no host 'delta'; known: alpha, beta, gamma");
    expect(r.out).toContain(`host = "delta"`);
    expect((await apiVm(`${fx.prefix}-pin`)).status).toBe(404);
  }, 120_000);
});
