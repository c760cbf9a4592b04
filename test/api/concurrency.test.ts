/**
 * Issue #17, fault 5: rcloud under concurrent calls on the same things, through the API of
 * `rcloud serve` (a child process) on the rig's test driver. Every answer is one of the
 * defined ones and everything ends in a defined state: a quota of 10 holds against 40 creates
 * at once, one VM deleted 20 times at once is deleted once, one name created 20 times at once
 * is created once, stop during create and delete during stop.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { uniqueName } from "../helpers/rig.ts";
import { spawnTestDriverServer, type ServerProcess } from "../helpers/serve-process.ts";

const project = `pc-${process.pid % 100000}`;
let server: ServerProcess;

beforeAll(async () => {
  server = await spawnTestDriverServer(`rctest-conc-${process.pid}`, { auth: { quotas: { [project]: { vms: 10 } } } });
});

afterAll(async () => {
  await server?.stop();
});

async function callOn(on: ServerProcess, method: string, path: string, body?: unknown) {
  const headers: Record<string, string> = { authorization: `Bearer ${on.token}` };
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(`${on.baseUrl}/api/v1${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const json = (await res.json().catch(() => null)) as any;
  return { status: res.status, code: json?.error?.code as string | undefined, json };
}

const call = (method: string, path: string, body?: unknown) => callOn(server, method, path, body);

const tally = (rs: { status: number; code?: string }[]) => {
  const t: Record<string, number> = {};
  for (const r of rs) t[`${r.status} ${r.code ?? ""}`.trim()] = (t[`${r.status} ${r.code ?? ""}`.trim()] ?? 0) + 1;
  return t;
};

async function names(prefix: string): Promise<string[]> {
  return ((await call("GET", "/vms")).json.vms as { name: string }[]).map((v) => v.name).filter((n) => n.startsWith(prefix));
}

describe("concurrency", () => {
  test("40 concurrent creates against a project quota of 10 VMs: exactly 10 × 201, 30 × 403 quota_exceeded", async () => {
    const prefix = uniqueName("q").slice(0, 40);
    const rs = await Promise.all(Array.from({ length: 40 }, (_, i) => call("POST", "/vms", { name: `${prefix}-${i}`, image: "debian13", project })));
    expect(tally(rs)).toEqual({ "201": 10, "403 quota_exceeded": 30 });
    expect((await names(prefix)).length).toBe(10);
    const refused = rs.find((r) => r.status === 403)!;
    expect(refused.json.error.message).toContain(project);
    // The quota is full, not broken: one more is refused, and after a delete one fits again.
    expect((await call("POST", "/vms", { name: `${prefix}-x`, image: "debian13", project })).code).toBe("quota_exceeded");
    const made = rs.filter((r) => r.status === 201).map((r) => r.json.id as string);
    expect((await call("DELETE", `/vms/${made[0]}`)).status).toBe(200);
    expect((await call("POST", "/vms", { name: `${prefix}-y`, image: "debian13", project })).status).toBe(201);
    await Promise.all([...made.slice(1), `${prefix}-y`].map((id) => call("DELETE", `/vms/${id}`)));
    expect(await names(prefix)).toEqual([]);
  });

  test("20 concurrent deletes of one VM: one 200, nineteen 404 not_found", async () => {
    const name = uniqueName("del").slice(0, 40);
    expect((await call("POST", "/vms", { name, image: "debian13" })).status).toBe(201);
    const rs = await Promise.all(Array.from({ length: 20 }, () => call("DELETE", `/vms/${name}`)));
    expect(tally(rs)).toEqual({ "200": 1, "404 not_found": 19 });
    expect((await call("GET", `/vms/${name}`)).status).toBe(404);
  });

  test("20 concurrent creates of one name: one 201, nineteen 409 name_taken", async () => {
    const name = uniqueName("same").slice(0, 40);
    const rs = await Promise.all(Array.from({ length: 20 }, () => call("POST", "/vms", { name, image: "debian13" })));
    expect(tally(rs)).toEqual({ "201": 1, "409 name_taken": 19 });
    expect(await names(name)).toEqual([name]);
    await call("DELETE", `/vms/${name}`);
  });

  test("stop during create: the create succeeds, the stop is 200, 404 or 409, and the VM ends running or stopped as answered", async () => {
    for (let i = 0; i < 5; i++) {
      const name = uniqueName(`sdc${i}`).slice(0, 40);
      const create = call("POST", "/vms", { name, image: "debian13" });
      await Bun.sleep(i * 5);
      const stop = call("POST", `/vms/${name}/stop?force=true`);
      const [c, s] = await Promise.all([create, stop]);
      expect(c.status).toBe(201);
      expect([200, 404, 409]).toContain(s.status);
      const g = await call("GET", `/vms/${name}`);
      expect(g.status).toBe(200);
      // A stop that answered 200 came after the create: the VM is stopped; otherwise it runs.
      expect(g.json.state).toBe(s.status === 200 ? "stopped" : "running");
      expect((await call("DELETE", `/vms/${name}`)).status).toBe(200);
    }
  });

  test("delete during stop: the delete is 200, the stop 200, 404 or 409, and the VM is gone", async () => {
    for (let i = 0; i < 5; i++) {
      const name = uniqueName(`dds${i}`).slice(0, 40);
      expect((await call("POST", "/vms", { name, image: "debian13" })).status).toBe(201);
      const stop = call("POST", `/vms/${name}/stop`);
      await Bun.sleep(i * 5);
      const del = call("DELETE", `/vms/${name}`);
      const [s, d] = await Promise.all([stop, del]);
      expect(d.status).toBe(200);
      expect([200, 404, 409]).toContain(s.status);
      expect((await call("GET", `/vms/${name}`)).status).toBe(404);
      expect(await names(name)).toEqual([]);
    }
  });
});

/**
 * A request by id looks its VM up, then waits for the name's lock. Lined up behind a delete
 * of that VM and a create of a new one by the same name (names are fleet-wide, the new one may
 * be another project's), it must not act on the new VM: 404, and the new VM is untouched.
 * The delete is held after destroying the VM, still defined, by the fault point
 * `delete.after-destroy:delay` (docs/reliability.md), so the lock queue (FIFO) is exactly
 * delete, create, request by id.
 */
describe("a request by id behind a delete and re-create of its VM's name", () => {
  let held: ServerProcess;

  beforeAll(async () => {
    held = await spawnTestDriverServer(`rctest-conc-held-${process.pid}`, {}, { RCLOUD_FAULT_POINTS: "delete.after-destroy:delay=600" });
  });

  afterAll(async () => {
    await held?.stop();
  });

  const on = (method: string, path: string, body?: unknown) => callOn(held, method, path, body);

  async function lineUp(prefix: string, byId: (id: string) => ReturnType<typeof on>) {
    const name = uniqueName(prefix).slice(0, 40);
    const a = await on("POST", "/vms", { name, image: "debian13" });
    expect(a.status).toBe(201);
    const del = on("DELETE", `/vms/${name}`);
    await Bun.sleep(150); // the delete holds the lock, VM A still defined
    const create = on("POST", "/vms", { name, image: "debian13" });
    await Bun.sleep(150); // the create waits for the lock
    const third = byId(a.json.id); // looks up VM A (still there), then waits behind the create
    const [d, c, t] = await Promise.all([del, create, third]);
    expect(d.status).toBe(200);
    expect(d.json.id).toBe(a.json.id);
    expect(c.status).toBe(201);
    expect(c.json.id).not.toBe(a.json.id);
    expect(`${t.status} ${t.code}`).toBe("404 not_found");
    const b = await on("GET", `/vms/${c.json.id}`);
    expect(b.status).toBe(200);
    expect(b.json.state).toBe("running");
    expect((await on("DELETE", `/vms/${c.json.id}`)).status).toBe(200);
  }

  test("DELETE by id: 404, the new VM of that name stays", async () => {
    await lineUp("dbi", (id) => on("DELETE", `/vms/${id}`));
  });

  test("stop by id: 404, the new VM of that name keeps running", async () => {
    await lineUp("sbi", (id) => on("POST", `/vms/${id}/stop?force=true`));
  });

  test("reboot by id: 404, not the new VM's reboot", async () => {
    await lineUp("rbi", (id) => on("POST", `/vms/${id}/reboot`));
  });
});
