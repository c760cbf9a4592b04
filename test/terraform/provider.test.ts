/**
 * The rcloud Terraform provider through real Terraform (reattach mode) against a real rcloud
 * server on the rig's libvirtd test driver: lifecycle, plan stability, in-place vs replace,
 * import, drift, data sources and diagnostics.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { apply, type Fixture, plan, resourceValues, startFixture, tf, tfOk, workdir, writeMain } from "./harness.ts";

let fx: Fixture;

beforeAll(async () => {
  fx = await startFixture("p");
});

afterAll(async () => {
  await fx?.stop();
});

interface ApiVmLite {
  id: string;
  name: string;
  state: string;
  vcpus: number;
}

async function apiVms(): Promise<ApiVmLite[]> {
  const r = await fx.server.req("GET", "/api/v1/vms");
  return (r.json.vms as ApiVmLite[]).filter((v) => v.name.startsWith(fx.prefix));
}

function vmHcl(name: string, opts: { vcpus?: number; running?: boolean; image?: string; rootDiskGb?: number } = {}): string {
  return `${fx.header()}
resource "rcloud_vm" "web_server" {
  name      = "${name}"
  vcpus     = ${opts.vcpus ?? 2}
  memory_gb = 0.5
  image     = "${opts.image ?? "debian13"}"

  root_disk_gb = ${opts.rootDiskGb ?? 4}

  extra_disks = [
    {
      size_gb = 5
      type    = "virtio"
    }
  ]

  network = {
    bridge = "default"
  }
${opts.running === undefined ? "" : `  running = ${opts.running}\n`}}

output "vm_ip" {
  value = rcloud_vm.web_server.ip_address
}
`;
}

describe("schema", () => {
  test("rcloud_vm uses nested attributes; token is sensitive", async () => {
    const dir = workdir(`${fx.header()}\n`);
    const r = await tfOk(dir, ["providers", "schema", "-json"], fx.env);
    const schema = JSON.parse(r.stdout).provider_schemas["registry.terraform.io/kdevops/rcloud"];
    const vm = schema.resource_schemas.rcloud_vm.block.attributes;
    expect(vm.extra_disks.nested_type.nesting_mode).toBe("list");
    expect(vm.network.nested_type.nesting_mode).toBe("single");
    expect(vm.name.required).toBe(true);
    expect(vm.ip_address.computed).toBe(true);
    expect(schema.resource_schemas.rcloud_vm.version).toBe(0);
    expect(schema.provider.block.attributes.token.sensitive).toBe(true);
    expect(vm.host).toMatchObject({ optional: true, computed: true });
    expect(vm.placement_group.optional).toBe(true);
    expect(vm.placement_group.computed).toBeUndefined();
    expect(Object.keys(schema.data_source_schemas).sort()).toEqual(["rcloud_hosts", "rcloud_images", "rcloud_vm"]);
    const hosts = schema.data_source_schemas.rcloud_hosts.block.attributes.hosts;
    expect(hosts.nested_type.nesting_mode).toBe("list");
    expect(hosts.nested_type.attributes.labels.type).toEqual(["map", "string"]);
    expect(hosts.nested_type.attributes.allocated.nested_type.nesting_mode).toBe("single");
  });
});

describe("rcloud_vm lifecycle", () => {
  test("apply → clean plan → running in place → vcpus in place → a shrinking root disk replaces → out-of-band delete → re-create → destroy", async () => {
    const name = `${fx.prefix}-web`;
    const dir = workdir(vmHcl(name));

    // create
    const applied = await apply(dir, fx.env);
    expect(applied.stdout).toContain("1 added");
    const v1 = await resourceValues(dir, fx.env, "rcloud_vm.web_server");
    expect(v1).toMatchObject({
      name,
      vcpus: 2,
      memory_gb: 0.5,
      image: "debian13", // the alias as configured, although the API reports the image id
      root_disk_gb: 4,
      extra_disks: [{ size_gb: 5, type: "virtio" }],
      network: { bridge: "default", mode: "bridge" },
      running: true,
      state: "running",
      ssh_user: "kdevops",
    });
    expect(v1.id).toMatch(/^vm-[a-z0-9]{8}$/);
    expect(v1.ip_address).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
    expect(v1.mac_address).toMatch(/^52:54:00/);
    const out = await tfOk(dir, ["output", "-json"], fx.env);
    expect(JSON.parse(out.stdout).vm_ip.value).toBe(v1.ip_address as string);

    // no drift, with and without refresh
    expect((await plan(dir, fx.env, ["-refresh=false"])).code).toBe(0);
    expect((await plan(dir, fx.env)).code).toBe(0);

    // running = false: an in-place update
    writeMain(dir, vmHcl(name, { running: false }));
    const p1 = await plan(dir, fx.env);
    expect(p1.code).toBe(2);
    expect(p1.stdout).toContain("will be updated in-place");
    expect(p1.stdout).not.toContain("must be replaced");
    await apply(dir, fx.env);
    const v2 = await resourceValues(dir, fx.env, "rcloud_vm.web_server");
    expect(v2).toMatchObject({ id: v1.id, running: false, state: "stopped", ip_address: null });
    expect((await apiVms()).find((v) => v.id === v1.id)?.state).toBe("stopped");
    expect((await plan(dir, fx.env)).code).toBe(0);

    // back to running (default true), in place
    writeMain(dir, vmHcl(name));
    const p2 = await plan(dir, fx.env);
    expect(p2.stdout).toContain("will be updated in-place");
    await apply(dir, fx.env);
    expect(await resourceValues(dir, fx.env, "rcloud_vm.web_server")).toMatchObject({ id: v1.id, running: true, state: "running" });
    expect((await plan(dir, fx.env)).code).toBe(0);

    // vcpus beyond what the running VM can hot-plug: in place, waiting for its next start
    writeMain(dir, vmHcl(name, { vcpus: 3 }));
    const p3 = await plan(dir, fx.env);
    expect(p3.code).toBe(2);
    expect(p3.stdout).toContain("will be updated in-place");
    expect(p3.stdout).not.toContain("must be replaced");
    expect(p3.stdout).toMatch(/vcpus\s+= 2 -> 3\n/);
    await apply(dir, fx.env);
    const v3a = await resourceValues(dir, fx.env, "rcloud_vm.web_server");
    expect(v3a).toMatchObject({ id: v1.id, vcpus: 3, max_vcpus: 3, restart_required: true, running: true });
    const pending = (await fx.server.req("GET", `/api/v1/vms/${v1.id}`)).json;
    expect({ vcpus: pending.vcpus, pending: pending.pending }).toEqual({ vcpus: 2, pending: { vcpus: 3, max_vcpus: 3 } });
    expect((await plan(dir, fx.env)).code).toBe(0);

    // a smaller root disk cannot be made in place: replaced, and the plan says why
    writeMain(dir, vmHcl(name, { vcpus: 3, rootDiskGb: 3 }));
    const shrink = await plan(dir, fx.env);
    expect(shrink.code).toBe(2);
    expect(shrink.stdout).toContain("must be replaced");
    expect(shrink.stdout).toMatch(/root_disk_gb\s+= 4 -> 3 # forces replacement/);
    expect(shrink.out).toContain("a root disk cannot shrink");
    await apply(dir, fx.env);
    const v3b = await resourceValues(dir, fx.env, "rcloud_vm.web_server");
    expect(v3b.id).not.toBe(v1.id);
    expect(v3b).toMatchObject({ vcpus: 3, root_disk_gb: 3, restart_required: false });
    expect((await apiVms()).map((v) => v.id)).toEqual([v3b.id as string]);
    expect((await plan(dir, fx.env)).code).toBe(0);
    const v3 = v3b;

    // deleted behind Terraform's back: refresh drops it, plan creates it, apply re-creates it
    expect((await fx.server.req("DELETE", `/api/v1/vms/${v3.id}`)).status).toBe(200);
    const p4 = await plan(dir, fx.env);
    expect(p4.code).toBe(2);
    expect(p4.stdout).toContain("will be created");
    await apply(dir, fx.env);
    const v4 = await resourceValues(dir, fx.env, "rcloud_vm.web_server");
    expect(v4.id).not.toBe(v3.id);
    expect((await apiVms()).map((v) => v.id)).toEqual([v4.id as string]);
    expect((await plan(dir, fx.env)).code).toBe(0);

    // destroy leaves nothing
    await tfOk(dir, ["destroy", "-auto-approve", "-input=false", "-no-color"], fx.env);
    expect(await apiVms()).toEqual([]);
  });
});

describe("rcloud_vm variants", () => {
  test("created stopped, user-mode networking, server defaults filled in", async () => {
    const name = `${fx.prefix}-user`;
    const dir = workdir(`${fx.header()}
resource "rcloud_vm" "u" {
  name    = "${name}"
  image   = "debian-13-generic-amd64-daily.raw"
  network = { mode = "user" }
  running = false
}
`);
    await apply(dir, fx.env);
    const v = await resourceValues(dir, fx.env, "rcloud_vm.u");
    expect(v).toMatchObject({ running: false, state: "stopped", ip_address: null, vcpus: 1, memory_gb: 0.25, root_disk_gb: 2, extra_disks: [], network: { mode: "user", bridge: null } });
    expect(v.image).toBe("debian-13-generic-amd64-daily.raw"); // the file name as configured
    expect(typeof v.ssh_port).toBe("number");
    expect((await plan(dir, fx.env)).code).toBe(0);
    await tfOk(dir, ["destroy", "-auto-approve", "-input=false", "-no-color"], fx.env);
  });
});

describe("import", () => {
  test("a VM created through the API imports by id and by name with an empty plan", async () => {
    const name = `${fx.prefix}-imp`;
    const created = await fx.server.req("POST", "/api/v1/vms", {
      name,
      image: "debian13",
      vcpus: 1,
      memory_mb: 1536,
      root_disk_gb: 3,
      extra_disks: [{ size_gb: 2 }, { size_gb: 4, type: "nvme" }],
      network: { mode: "bridge", bridge: "default" },
    });
    expect(created.status).toBe(201);
    const id = created.json.id as string;
    const hcl = `${fx.header()}
resource "rcloud_vm" "imported" {
  name         = "${name}"
  vcpus        = 1
  memory_gb    = 1.5
  image        = "debian13"
  root_disk_gb = 3
  extra_disks  = [{ size_gb = 2 }, { size_gb = 4, type = "nvme" }]
  network      = { bridge = "default" }
}
`;
    for (const ref of [id, name]) {
      const dir = workdir(hcl);
      const imp = await tfOk(dir, ["import", "-input=false", "-no-color", "rcloud_vm.imported", ref], fx.env);
      expect(imp.stdout).toContain("Import successful");
      const p = await plan(dir, fx.env);
      if (p.code !== 0) throw new Error(`plan after import of ${ref} not empty:\n${p.out}`);
      expect(await resourceValues(dir, fx.env, "rcloud_vm.imported")).toMatchObject({
        id,
        image: "debian-13-generic-amd64-daily", // what the API reports; "debian13" in the config is the same image
        memory_gb: 1.5,
        extra_disks: [
          { size_gb: 2, type: "virtio" },
          { size_gb: 4, type: "nvme" },
        ],
      });
    }

    // ssh_public_key cannot be read back: after import it is adopted in place, not a replacement
    const dir = workdir(hcl.replace(`image        = "debian13"`, `image        = "debian13"\n  ssh_public_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl t@h"`));
    await tfOk(dir, ["import", "-input=false", "-no-color", "rcloud_vm.imported", id], fx.env);
    const p = await plan(dir, fx.env);
    expect(p.stdout).toContain("will be updated in-place");
    await apply(dir, fx.env);
    expect((await plan(dir, fx.env)).code).toBe(0);

    await tfOk(dir, ["destroy", "-auto-approve", "-input=false", "-no-color"], fx.env);
    expect((await fx.server.req("GET", `/api/v1/vms/${id}`)).status).toBe(404);
  });

  test("importing a VM that does not exist says so", async () => {
    const dir = workdir(`${fx.header()}\nresource "rcloud_vm" "x" {\n  name  = "${fx.prefix}-none"\n  image = "debian13"\n}\n`);
    const r = await tf(dir, ["import", "-input=false", "-no-color", "rcloud_vm.x", "vm-zzzzzzzz"], fx.env);
    expect(r.code).toBe(1);
    expect(r.out).toContain(`No VM with id or name "vm-zzzzzzzz"`);
  });
});

describe("data sources", () => {
  test("rcloud_images lists the images; rcloud_vm finds a VM by name and by id", async () => {
    const name = `${fx.prefix}-ds`;
    const created = await fx.server.req("POST", "/api/v1/vms", { name, image: "debian13", memory_mb: 512, extra_disks: [{ size_gb: 1 }] });
    expect(created.status).toBe(201);
    const dir = workdir(`${fx.header()}
data "rcloud_images" "all" {}
data "rcloud_vm" "by_name" {
  name = "${name}"
}
data "rcloud_vm" "by_id" {
  id = "${created.json.id}"
}
output "images" { value = data.rcloud_images.all.images }
output "vm" { value = data.rcloud_vm.by_name }
output "same" { value = data.rcloud_vm.by_id.name }
`);
    await apply(dir, fx.env);
    const outputs = JSON.parse((await tfOk(dir, ["output", "-json"], fx.env)).stdout);
    expect(outputs.images.value).toEqual([
      { id: "debian-13-generic-amd64-daily", name: "debian13", alias: "debian13", file_name: "debian-13-generic-amd64-daily.raw", format: "raw", virtual_size_gb: 1, hosts: ["local"] },
    ]);
    expect(outputs.vm.value).toMatchObject({
      id: created.json.id,
      name,
      memory_gb: 0.5,
      image: "debian-13-generic-amd64-daily",
      extra_disks: [{ size_gb: 1, type: "virtio" }],
      network: { mode: "bridge", bridge: "default" },
      running: true,
      state: "running",
      host: "local", // the one host of libvirt.uri
      placement_group: null,
    });
    expect(outputs.same.value).toBe(name);
    expect((await plan(dir, fx.env)).code).toBe(0);
    await fx.server.req("DELETE", `/api/v1/vms/${created.json.id}`);
  });

  test("rcloud_vm needs exactly one of id and name; a missing VM is an error", async () => {
    const dir = workdir(`${fx.header()}\ndata "rcloud_vm" "x" {}\n`);
    expect((await plan(dir, fx.env)).out).toContain("Set either id or name");
    writeMain(dir, `${fx.header()}\ndata "rcloud_vm" "x" {\n  name = "${fx.prefix}-missing"\n}\n`);
    const r = await plan(dir, fx.env);
    expect(r.code).toBe(1);
    expect(r.out).toContain(`No VM with name "${fx.prefix}-missing"`);
  });
});

describe("diagnostics", () => {
  test("a bad image fails the plan with a message naming the image and the alternatives", async () => {
    const dir = workdir(vmHcl(`${fx.prefix}-badimg`, { image: "nosuch-image-42" }));
    const r = await plan(dir, fx.env);
    expect(r.code).toBe(1);
    expect(r.out).toContain("Error: Image not found");
    expect(r.out).toContain(`"nosuch-image-42"`);
    expect(r.out).toContain("debian13");
    expect(r.out).toMatch(/on main\.tf line \d+, in resource "rcloud_vm" "web_server":/); // points at the attribute
    expect((await apiVms()).filter((v) => v.name.endsWith("-badimg"))).toEqual([]);
  });

  test("an unreachable endpoint names the URL and how to change it", async () => {
    const listener = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    const port = listener.port;
    listener.stop(true); // a port nobody listens on
    const endpoint = `http://127.0.0.1:${port}`;
    const dir = workdir(`${fx.header(endpoint)}\ndata "rcloud_images" "all" {}\n`);
    const r = await plan(dir, fx.env);
    expect(r.code).toBe(1);
    expect(r.out).toContain("Cannot reach the rcloud API");
    expect(r.out).toContain(endpoint);
    expect(r.out).toContain("RCLOUD_ENDPOINT");
  });

  test("API errors keep their message and point at the attribute", async () => {
    const dir = workdir(vmHcl(`${fx.prefix}-big`).replace("memory_gb = 0.5", "memory_gb = 64"));
    const r = await tf(dir, ["apply", "-auto-approve", "-input=false", "-no-color"], fx.env);
    expect(r.code).toBe(1);
    expect(r.out).toContain("Error: Not enough capacity on the rcloud host");
    expect(r.out.replace(/\s+/g, " ")).toMatch(/memory: 65536 MiB more would make 65536 MiB, over its \d+ MiB/); // the server's refusal, as it says it
    expect(r.out).toContain("memory_gb = 64"); // Terraform quotes the config line of the attribute path
    expect((await apiVms()).filter((v) => v.name.endsWith("-big"))).toEqual([]);
  });

  test("validation catches bad values before any API call", async () => {
    const dir = workdir(`${fx.header()}
resource "rcloud_vm" "v" {
  name        = "Bad_Name"
  image       = "debian13"
  memory_gb   = 0.3
  extra_disks = [{ size_gb = 1, type = "floppy" }]
  network     = { mode = "user", bridge = "br0" }
}
`);
    const r = await plan(dir, fx.env);
    expect(r.code).toBe(1);
    for (const s of ["must be a DNS label", "whole number of MiB", "type must be one of", "bridge only applies"]) expect(r.out).toContain(s);
  });
});

describe("unknown values at plan", () => {
  test("provider endpoint and VM name known only after apply", async () => {
    const dir = workdir(`${fx.header("PLACEHOLDER")}
resource "terraform_data" "later" {
  input = { endpoint = "${fx.server.url}", suffix = "late" }
}

resource "rcloud_vm" "v" {
  name      = "${fx.prefix}-\${terraform_data.later.output.suffix}"
  image     = "debian13"
  memory_gb = 0.25
}
`.replace(`"PLACEHOLDER"`, "terraform_data.later.output.endpoint"));
    const p = await plan(dir, fx.env);
    if (p.code !== 2) throw new Error(`plan failed:\n${p.out}`);
    expect(p.stdout).toContain("rcloud_vm.v will be created");
    expect(p.stdout).toMatch(/name\s+= \(known after apply\)/);
    await apply(dir, fx.env);
    expect(await resourceValues(dir, fx.env, "rcloud_vm.v")).toMatchObject({ name: `${fx.prefix}-late`, state: "running" });
    expect((await plan(dir, fx.env)).code).toBe(0);
    await tfOk(dir, ["destroy", "-auto-approve", "-input=false", "-no-color"], fx.env);
    expect((await apiVms()).filter((v) => v.name.endsWith("-late"))).toEqual([]);
  });
});

describe("examples/main.tf", () => {
  test("the design document's example validates and plans against a server", async () => {
    const example = await Bun.file(new URL("../../examples/main.tf", import.meta.url)).text();
    const dir = workdir(example.replace(`"http://localhost:8765"`, `"${fx.server.url}"`));
    expect((await tfOk(dir, ["validate", "-no-color"], fx.env)).stdout).toContain("The configuration is valid");
    const p = await plan(dir, fx.env);
    if (p.code !== 2) throw new Error(`plan failed:\n${p.out}`);
    for (const line of [/name\s+= "web-01"/, /vcpus\s+= 4/, /memory_gb\s+= 8/, /image\s+= "debian13"/, /root_disk_gb\s+= 100/, /size_gb = 500/, /bridge = "virbr0"/, /mode\s+= "bridge"/]) {
      expect(p.stdout).toMatch(line);
    }
  });
});
