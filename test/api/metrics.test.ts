/** /metrics and request ids, against a real rcloud on libvirtd's test driver. */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { LibvirtClient } from "../../src/libvirt/index.ts";
import { removePool, uniqueName, unixUri } from "../helpers/rig.ts";
import { startTestServer, testDriverConfig, waitHealthy, type TestServer } from "../helpers/server.ts";

const poolName = `rctest-metrics-${process.pid}`;
let server: TestServer;

beforeAll(async () => {
  server = await startTestServer(await testDriverConfig(poolName));
  await waitHealthy(server);
});

afterAll(async () => {
  await server.stop();
  const lv = await LibvirtClient.connect(unixUri("test"));
  await removePool(lv, poolName);
  await lv.close();
});

test("metrics cover API requests, libvirt RPCs, operations and VMs by state", async () => {
  const name = uniqueName("metrics").slice(0, 40);
  expect((await server.req("POST", "/api/v1/vms", { name, image: "debian13" })).status).toBe(201);
  await server.req("GET", `/api/v1/vms/${name}`);
  await server.req("GET", "/api/v1/vms/rctest-nothing-here");
  const res = await fetch(`${server.url}/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toContain("text/plain");
  const text = await res.text();
  expect(text).toMatch(/rcloud_http_requests_total\{method="POST",route="\/api\/v1\/vms",status="201"\} 1/);
  expect(text).toMatch(/rcloud_http_requests_total\{method="GET",route="\/api\/v1\/vms\/:id",status="404"\} 1/);
  expect(text).toMatch(/rcloud_http_request_duration_seconds_bucket\{le="0.1",method="POST"/);
  expect(text).toMatch(/rcloud_libvirt_rpc_duration_seconds_count\{procedure="domain_define_xml_flags"\} \d+/);
  expect(text).toMatch(/rcloud_vm_operation_duration_seconds_count\{operation="create",outcome="ok"\} 1/);
  expect(text).toMatch(/rcloud_vms\{state="running"\} [1-9]/);
  expect(text).toMatch(/rcloud_hypervisor_up 1/);
  expect(text).toMatch(/rcloud_hypervisor_reconnects_total 0/);
  // One create, finished: nothing in flight or waiting; the window is where it starts.
  expect(text).toContain('rcloud_libvirt_slow_calls{state="in_flight"} 0');
  expect(text).toContain('rcloud_libvirt_slow_calls{state="waiting"} 0');
  expect(text).toMatch(/rcloud_libvirt_slow_call_window 5\n/);
  expect(text).toMatch(/rcloud_host_vcpus\{host="[a-z0-9-]+"\} [1-9]/);
  expect(text).toMatch(/rcloud_host_up\{host="[a-z0-9-]+"\} 1/);
  expect(text).toContain(`rcloud_vm_memory_bytes{vm="${name}"} ${256 * 1024 * 1024}`);
  expect(text).toMatch(/rcloud_process_resident_memory_bytes \d+/);
  await server.req("DELETE", `/api/v1/vms/${name}`);
});

test("promtool check metrics accepts the exposition", async () => {
  if (!Bun.which("promtool")) throw new Error("promtool missing: apt-get install prometheus (scripts/lib/install-deps.sh does)");
  const name = uniqueName("promtool").slice(0, 40);
  await server.req("POST", "/api/v1/vms", { name, image: "debian13" });
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const p = Bun.spawn(["promtool", "check", "metrics"], { stdin: "pipe", stdout: "pipe", stderr: "pipe" });
  p.stdin.write(text);
  await p.stdin.end();
  const [code, out, err] = await Promise.all([p.exited, new Response(p.stdout).text(), new Response(p.stderr).text()]);
  await server.req("DELETE", `/api/v1/vms/${name}`);
  expect(`${out}${err}`.trim()).toBe("");
  expect(code).toBe(0);
});

test("every response carries a request id; a sane one from the client is kept", async () => {
  const a = await fetch(`${server.url}/api/v1/health`);
  expect(a.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
  const b = await fetch(`${server.url}/api/v1/health`, { headers: { "x-request-id": "trace-42" } });
  expect(b.headers.get("x-request-id")).toBe("trace-42");
  const c = await fetch(`${server.url}/api/v1/health`, { headers: { "x-request-id": "bad id\u0001" } });
  expect(c.headers.get("x-request-id")).not.toBe("bad id\u0001");
});

test("a VM looked up by id costs a few calls, not a listing of every VM", async () => {
  const name = uniqueName("byid").slice(0, 40);
  const created = await server.req("POST", "/api/v1/vms", { name, image: "debian13" });
  expect(created.status).toBe(201);
  const id = created.json.id as string;
  const listings = async () => {
    const text = await (await fetch(`${server.url}/metrics`)).text();
    return Number(/rcloud_libvirt_rpc_duration_seconds_count\{procedure="connect_get_all_domain_stats"\} (\d+)/.exec(text)?.[1] ?? 0);
  };
  // A scrape lists the VMs itself (one bulk stats call per host): count between two scrapes, minus the second one's listing.
  const before = await listings();
  for (let i = 0; i < 3; i++) {
    const r = await server.req("GET", `/api/v1/vms/${id}`);
    expect(r.status).toBe(200);
    expect(r.json.name).toBe(name);
  }
  // Each lookup by a remembered id is one stats call for that one domain (its host is known);
  // an id not remembered would list every host first. Plus the second scrape's listing.
  expect((await listings()) - before).toBe(3 + 1);
  // A deleted VM's id is gone even though the service remembered it.
  await server.req("DELETE", `/api/v1/vms/${id}`);
  expect((await server.req("GET", `/api/v1/vms/${id}`)).status).toBe(404);
});

test("disk sizes are read once, not on every listing", async () => {
  const name = uniqueName("sizes").slice(0, 40);
  expect((await server.req("POST", "/api/v1/vms", { name, image: "debian13", extra_disks: [{ size_gb: 3 }] })).status).toBe(201);
  const lookups = async () => {
    const text = await (await fetch(`${server.url}/metrics`)).text();
    return Number(/rcloud_libvirt_rpc_duration_seconds_count\{procedure="storage_vol_lookup_by_path"\} (\d+)/.exec(text)?.[1] ?? 0);
  };
  const first = await server.req("GET", "/api/v1/vms");
  const before = await lookups();
  const second = await server.req("GET", "/api/v1/vms");
  expect((await lookups()) - before).toBe(0);
  const sizes = (r: typeof first) => (r.json.vms as { name: string; disks: { size_gb: number }[] }[]).find((v) => v.name === name)!.disks.map((d) => d.size_gb);
  expect(sizes(second)).toEqual(sizes(first));
  expect(sizes(second)).toEqual([2, 3]);
  await server.req("DELETE", `/api/v1/vms/${name}`);
});
