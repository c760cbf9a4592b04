/**
 * rcloud_vm through real Terraform when things go wrong between the provider and a real rcloud
 * server (libvirtd test driver), made to happen by a proxy in between (fault-proxy.ts): a
 * create whose answer is lost or interrupted by Ctrl-C, reads that differ from the plan,
 * image look-ups that fail, an offline host; and plans that must stay consistent: allow_restart
 * turned on later or known only at apply, ide disks (reported as sata), a data source name
 * shaped like an id.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type FaultAction, type FaultProxy, startFaultProxy } from "./fault-proxy.ts";
import { apply, type Fixture, plan, resourceValues, showState, startFixture, TERRAFORM, tf, type TfResult, tfOk, workdir, writeMain } from "./harness.ts";

let fx: Fixture;
let proxy: FaultProxy;

beforeAll(async () => {
  fx = await startFixture("f");
  proxy = await startFaultProxy(fx.server.url);
});

afterEach(() => {
  if (proxy) proxy.rule = undefined; // a failed test must not leave its fault behind
});

afterAll(async () => {
  await proxy?.stop();
  await fx?.stop();
});

const APPLY = ["apply", "-auto-approve", "-input=false", "-no-color"];
const internalError: FaultAction = { answer: { status: 500, json: { error: { code: "internal_error", message: "injected" } } } };

function vmHcl(name: string, opts: { vcpus?: number; allowRestart?: string; extra?: string } = {}): string {
  return `${fx.header(proxy.url)}
resource "rcloud_vm" "vm" {
  name      = "${name}"
  vcpus     = ${opts.vcpus ?? 1}
  memory_gb = 0.25
  image     = "debian13"
  network   = { bridge = "default" }
${opts.allowRestart === undefined ? "" : `  allow_restart = ${opts.allowRestart}\n`}}
${opts.extra ?? ""}`;
}

async function ok(p: Promise<TfResult>, code = 0): Promise<TfResult> {
  const r = await p;
  if (r.code !== code) throw new Error(`terraform exited ${r.code}, expected ${code}:\n${r.out}`);
  return r;
}

async function apiVmsNamed(name: string): Promise<{ id: string; name: string; vcpus: number; restart_required: boolean; pending: unknown }[]> {
  const r = await fx.server.req("GET", "/api/v1/vms");
  return r.json.vms.filter((v: { name: string }) => v.name === name);
}

describe("create", () => {
  test("a create whose answer is lost is recorded (tainted) and replaced by the next apply, not refused as a name in use", async () => {
    const name = `${fx.prefix}-lost`;
    const dir = workdir(vmHcl(name));
    proxy.rule = ({ method, path }) => (method === "POST" && path === "/api/v1/vms" ? { drop: true } : undefined);
    const r = await tf(dir, APPLY, fx.env);
    proxy.rule = undefined;
    expect(r.code).toBe(1);
    expect(r.out).toContain("Cannot reach the rcloud API");
    const made = await apiVmsNamed(name);
    expect(made.length).toBe(1);
    expect((await resourceValues(dir, fx.env, "rcloud_vm.vm")).id).toBe(made[0]!.id);
    const p = await plan(dir, fx.env);
    expect(p.stdout).toContain("is tainted, so must be replaced");
    await apply(dir, fx.env);
    const again = await apiVmsNamed(name);
    expect(again.length).toBe(1);
    expect(again[0]!.id).not.toBe(made[0]!.id);
    expect((await resourceValues(dir, fx.env, "rcloud_vm.vm")).id).toBe(again[0]!.id);
  });

  test("Ctrl-C while the VM is being created: the create is not abandoned and Terraform records the VM", async () => {
    const name = `${fx.prefix}-intr`;
    const dir = workdir(vmHcl(name));
    proxy.rule = ({ method, path }) => (method === "POST" && path === "/api/v1/vms" ? { delayMs: 4000 } : undefined);
    const base: Record<string, string> = {};
    for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith("TF_")) base[k] = v;
    const proc = Bun.spawn([TERRAFORM, ...APPLY], { cwd: dir, env: { ...base, CHECKPOINT_DISABLE: "1", TF_IN_AUTOMATION: "1", ...fx.env }, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
    const output = Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text()]);
    const deadline = Date.now() + 60_000;
    while (!proxy.seen.includes("POST /api/v1/vms")) {
      if (Date.now() > deadline) throw new Error(`terraform never sent the create:\n${(await output).join("\n")}`);
      await Bun.sleep(50);
    }
    await Bun.sleep(500);
    proc.kill("SIGINT");
    const code = await proc.exited;
    const out = (await output).join("\n");
    proxy.rule = undefined;
    proxy.seen.length = 0;
    expect(code).not.toBe(0);
    const made = await apiVmsNamed(name);
    expect(made.length).toBe(1);
    const st = (await showState(dir, fx.env)).find((r) => r.address === "rcloud_vm.vm");
    if (!st) throw new Error(`the interrupted create left the VM out of the state:\n${out}`);
    expect(st.values.id).toBe(made[0]!.id);
  });
});

describe("in-place updates return the plan", () => {
  test("the configured image after create although images cannot be looked up; state and ip_address as planned after an update that did not restart", async () => {
    const name = `${fx.prefix}-steady`;
    const dir = workdir(vmHcl(name, { vcpus: 1 }));
    let created = false;
    proxy.rule = ({ method, path }) => {
      if (method === "POST" && path === "/api/v1/vms") created = true;
      else if (created && path.startsWith("/api/v1/images")) return internalError;
      return undefined;
    };
    await ok(tf(dir, APPLY, fx.env));
    proxy.rule = undefined;
    const v1 = await resourceValues(dir, fx.env, "rcloud_vm.vm");
    expect(v1).toMatchObject({ image: "debian13", state: "running" });
    expect(v1.ip_address).toMatch(/^\d+\.\d+\.\d+\.\d+$/);

    // More vcpus than the VM's maximum wait for the next start: no restart. The address reads
    // differently now (a best-effort look-up) and images cannot be looked up.
    writeMain(dir, vmHcl(name, { vcpus: 2 }));
    proxy.rule = ({ path }) => {
      if (path.startsWith("/api/v1/images")) return internalError;
      if (path.startsWith("/api/v1/vms/")) return { rewrite: (vm) => ({ ...vm, ip_address: "10.99.99.99", network: { ...vm.network, ip_address: "10.99.99.99" } }) };
      return undefined;
    };
    const r = await ok(tf(dir, [...APPLY, "-refresh=false"], fx.env));
    proxy.rule = undefined;
    expect(r.stdout).toContain("1 changed");
    expect(await resourceValues(dir, fx.env, "rcloud_vm.vm")).toMatchObject({ vcpus: 2, restart_required: true, state: "running", ip_address: v1.ip_address, image: "debian13" });
    expect((await plan(dir, fx.env)).code).toBe(0);
  });
});

describe("allow_restart", () => {
  test("turned on while changes wait for the next start: the apply restarts the VM and they are made", async () => {
    const name = `${fx.prefix}-later`;
    const dir = workdir(vmHcl(name, { vcpus: 1 }));
    await apply(dir, fx.env);
    writeMain(dir, vmHcl(name, { vcpus: 2 }));
    await apply(dir, fx.env);
    expect(await resourceValues(dir, fx.env, "rcloud_vm.vm")).toMatchObject({ vcpus: 2, restart_required: true });
    expect((await plan(dir, fx.env)).code).toBe(0);

    writeMain(dir, vmHcl(name, { vcpus: 2, allowRestart: "true" }));
    const p = await plan(dir, fx.env);
    expect(p.code).toBe(2);
    expect(p.stdout).toContain("will be updated in-place");
    await apply(dir, fx.env);
    expect(await resourceValues(dir, fx.env, "rcloud_vm.vm")).toMatchObject({ vcpus: 2, restart_required: false, state: "running" });
    const [vm] = await apiVmsNamed(name);
    expect({ vcpus: vm!.vcpus, restart_required: vm!.restart_required, pending: vm!.pending }).toEqual({ vcpus: 2, restart_required: false, pending: null });
    expect((await plan(dir, fx.env)).code).toBe(0);
  });

  test("known only at apply: the plan leaves what a restart changes unknown, and the apply restarts", async () => {
    const name = `${fx.prefix}-unk`;
    const dir = workdir(vmHcl(name, { vcpus: 1 }));
    await apply(dir, fx.env);
    const extra = `resource "terraform_data" "allow" {\n  input = true\n}\n`;
    writeMain(dir, vmHcl(name, { vcpus: 2, allowRestart: "terraform_data.allow.output", extra }));
    await ok(tf(dir, APPLY, fx.env));
    expect(await resourceValues(dir, fx.env, "rcloud_vm.vm")).toMatchObject({ vcpus: 2, restart_required: false, allow_restart: true });
    expect((await plan(dir, fx.env)).code).toBe(0);
  });
});

describe("ide disks", () => {
  test("an ide disk (reported as sata) imports as ide, and a state that says sata plans to ide without an invalid plan", async () => {
    const name = `${fx.prefix}-ide`;
    const created = await fx.server.req("POST", "/api/v1/vms", { name, image: "debian13", vcpus: 1, memory_mb: 256, extra_disks: [{ size_gb: 1, type: "ide" }], network: { mode: "bridge", bridge: "default" } });
    expect(created.status).toBe(201);
    expect(created.json.disks.find((d: { type: string }) => d.type === "data").driver).toBe("sata");
    const dir = workdir(`${fx.header()}
resource "rcloud_vm" "vm" {
  name        = "${name}"
  vcpus       = 1
  memory_gb   = 0.25
  image       = "debian13"
  extra_disks = [{ size_gb = 1, type = "ide" }]
  network     = { bridge = "default" }
}
`);
    await tfOk(dir, ["import", "-input=false", "-no-color", "rcloud_vm.vm", created.json.id], fx.env);
    expect((await resourceValues(dir, fx.env, "rcloud_vm.vm")).extra_disks).toEqual([{ size_gb: 1, type: "ide" }]);
    expect((await plan(dir, fx.env)).code).toBe(0);

    // A state written before (type = "sata"), planned without a refresh: the configured ide.
    const file = join(dir, "terraform.tfstate");
    writeFileSync(file, readFileSync(file, "utf8").replace(/"type": "ide"/, `"type": "sata"`));
    expect((await resourceValues(dir, fx.env, "rcloud_vm.vm")).extra_disks).toEqual([{ size_gb: 1, type: "sata" }]);
    const p = await plan(dir, fx.env, ["-refresh=false"]);
    expect(p.code).toBe(2);
    expect(p.stdout).toMatch(/"sata" -> "ide"/);
    await ok(tf(dir, [...APPLY, "-refresh=false"], fx.env));
    expect((await resourceValues(dir, fx.env, "rcloud_vm.vm")).extra_disks).toEqual([{ size_gb: 1, type: "ide" }]);
    expect((await plan(dir, fx.env)).code).toBe(0);
  });
});

describe("reads", () => {
  test("a VM on an offline host: the plan goes on with a warning and keeps its last known state", async () => {
    const name = `${fx.prefix}-down`;
    const dir = workdir(vmHcl(name));
    await apply(dir, fx.env);
    const id = (await resourceValues(dir, fx.env, "rcloud_vm.vm")).id as string;
    proxy.rule = ({ path }) =>
      path === `/api/v1/vms/${id}` ? { answer: { status: 503, json: { error: { code: "host_unavailable", message: `VM '${id}' is on host beta, which is not answering (offline)` } } } } : undefined;
    const p = await plan(dir, fx.env);
    proxy.rule = undefined;
    if (p.code !== 0) throw new Error(`plan with the VM's host offline exited ${p.code}:\n${p.out}`);
    expect(p.out).toContain("The VM's rcloud host is offline");
    expect(p.out.replace(/\s+/g, " ")).toContain("which is not answering (offline). Terraform keeps the VM's last known state");
  });

});

describe("data rcloud_vm", () => {
  test("data rcloud_vm by a name shaped like another VM's id: not found, on name", async () => {
    const name = `${fx.prefix}-ds`;
    const created = await fx.server.req("POST", "/api/v1/vms", { name, image: "debian13", memory_mb: 256, start: false, network: { mode: "none" } });
    expect(created.status).toBe(201);
    const dir = workdir(`${fx.header()}\ndata "rcloud_vm" "x" {\n  name = "${created.json.id}"\n}\n`);
    const r = await plan(dir, fx.env);
    expect(r.code).toBe(1);
    expect(r.out).toContain(`No VM named "${created.json.id}"`);
    expect(r.out).not.toContain("Provider produced invalid object");
  });
});
