/**
 * The debug scenario of both drivers (test/qemu/debug.test.ts, test/e2e/libvirt-debug.test.ts):
 * Debian's gdb on a VM's gdbstub, a guest panic from sysrq, and what a dump must hold.
 */
import { expect } from "bun:test";
import { closeSync, openSync, readSync, statSync } from "node:fs";
import { sshRun, waitForSsh } from "./ssh.ts";
import type { TestServer } from "./server.ts";

/** gdb, or a loud failure saying what to install. */
export function gdbBinary(): string {
  const path = Bun.which("gdb");
  if (!path) throw new Error("gdb is missing: apt-get install gdb (scripts/lib/install-deps.sh installs it)");
  return path;
}

/**
 * Debian's gdb attaches to the gdbstub, reads $pc, single-steps (the guest runs on under gdb),
 * reads $pc again and detaches (the guest runs free). Returns both $pc values.
 */
export async function gdbAttach(host: string, port: number): Promise<{ pcs: bigint[]; output: string }> {
  const p = Bun.spawn(
    [gdbBinary(), "-nx", "-batch", "-ex", "set pagination off", "-ex", `target remote ${host}:${port}`, "-ex", "p/x $pc", "-ex", "stepi", "-ex", "p/x $pc", "-ex", "detach"],
    { stdout: "pipe", stderr: "pipe", stdin: "ignore" },
  );
  const timer = setTimeout(() => p.kill("SIGKILL"), 120_000);
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  clearTimeout(timer);
  const output = `${out}\n${err}`;
  if (code !== 0) throw new Error(`gdb exited ${code}: ${output}`);
  const pcs = [...out.matchAll(/^\$\d+ = (0x[0-9a-f]+)$/gm)].map((m) => BigInt(m[1]!));
  return { pcs, output };
}

/** Panics the guest (root over SSH: the test guest gives root the keys too); the SSH session dies with it. */
export async function panicGuest(ssh: { port: number; key: string; host?: string }): Promise<void> {
  await sshRun({ ...ssh, user: "root" }, "sync; echo c > /proc/sysrq-trigger", 10).catch(() => {});
}

/** Polls GET /vms/{id} until `pred`; the last VM seen otherwise (in the failure message). */
export async function waitVm(server: TestServer, id: string, pred: (vm: any) => boolean, what: string, timeoutMs = 180_000): Promise<any> {
  const deadline = Date.now() + timeoutMs;
  let last: any = null;
  while (Date.now() < deadline) {
    const r = await server.req("GET", `/api/v1/vms/${id}`);
    last = r.json;
    if (r.status === 200 && pred(r.json)) return r.json;
    await Bun.sleep(500);
  }
  throw new Error(`${what}: not within ${timeoutMs} ms; last seen ${JSON.stringify(last)}`);
}

/** Bytes of guest memory an ELF core holds: the file sizes of its PT_LOAD segments (64-bit, little-endian). */
export function elfLoadBytes(path: string): { type: number; machine: number; loadBytes: number } {
  const fd = openSync(path, "r");
  try {
    const head = Buffer.alloc(64);
    readSync(fd, head, 0, 64, 0);
    if (head.toString("latin1", 0, 4) !== "\x7fELF" || head[4] !== 2 || head[5] !== 1) throw new Error(`${path} is not a 64-bit little-endian ELF file`);
    const type = head.readUInt16LE(16);
    const machine = head.readUInt16LE(18);
    const phoff = Number(head.readBigUInt64LE(32));
    const phentsize = head.readUInt16LE(54);
    const phnum = head.readUInt16LE(56);
    const ph = Buffer.alloc(phentsize * phnum);
    readSync(fd, ph, 0, ph.length, phoff);
    let loadBytes = 0;
    for (let i = 0; i < phnum; i++) {
      const o = i * phentsize;
      if (ph.readUInt32LE(o) === 1) loadBytes += Number(ph.readBigUInt64LE(o + 32));
    }
    return { type, machine, loadBytes };
  } finally {
    closeSync(fd);
  }
}

/**
 * The VM's one dump is listed and downloads as an ELF core (`file` says so) holding the
 * guest's memory (its PT_LOAD segments add up to at least memory_mb); `path` gets the bytes.
 */
export async function checkDump(server: TestServer, vm: { id: string; max_memory_mb: number }, path: string): Promise<string> {
  const list = await server.req("GET", `/api/v1/vms/${vm.id}/dumps`);
  expect(list.status).toBe(200);
  expect(list.json.dumps).toHaveLength(1);
  const dump = list.json.dumps[0];
  expect(dump.name).toMatch(/^dump-\d{8}T\d{6}Z\.elf$/);
  expect(Date.parse(dump.created_at)).toBeGreaterThan(Date.now() - 3_600_000);
  const res = await fetch(`${server.url}/api/v1/vms/${vm.id}/dumps/${dump.name}`);
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toBe("application/octet-stream");
  // A file on this host goes out with its length; a libvirt volume stream goes out chunked.
  const length = res.headers.get("content-length");
  if (length !== null) expect(Number(length)).toBe(dump.size_bytes);
  await Bun.write(path, res);
  expect(statSync(path).size).toBe(dump.size_bytes);
  const file = Bun.spawnSync(["file", "-b", path]).stdout.toString();
  expect(file).toMatch(/^ELF 64-bit LSB core file, x86-64/);
  const elf = elfLoadBytes(path);
  expect(elf.type).toBe(4); // ET_CORE
  expect(elf.machine).toBe(62); // EM_X86_64
  // All of the guest's RAM (q35 splits it around the PCI hole; ROMs and the like come on top).
  expect(elf.loadBytes).toBeGreaterThanOrEqual(vm.max_memory_mb * 1024 * 1024);
  return dump.name;
}

/** Dump names that are not the VM's own dumps answer 404 dump_not_found, and never reach a file. */
export async function checkDumpRefusals(server: TestServer, id: string): Promise<void> {
  // (A bare ".." is resolved by the URL itself, before any request is made.)
  for (const bad of ["..%2F..%2Fetc%2Fpasswd", "..%2Fvm.json", "vm.json", "dump-20990101T000000Z.elf", "root.qcow2", `dump-20990101T000000Z.elf%00`]) {
    const r = await server.req("GET", `/api/v1/vms/${id}/dumps/${bad}`);
    expect({ bad, status: r.status }).toEqual({ bad, status: 404 });
    if (r.json) expect(r.json.error.code).toBe("dump_not_found");
  }
  const none = await server.req("GET", `/api/v1/vms/no-such-vm-x/dumps`);
  expect(none.status).toBe(404);
  expect(none.json.error.code).toBe("not_found");
}

/** The four VMs of the scenario, one per on_panic action (stop is vm_defaults.on_panic), the dump one with a gdbstub. */
export async function createPanicVms(server: TestServer, publicKey: string): Promise<{ dump: any; restart: any; stop: any; preserve: any }> {
  const create = async (suffix: string, extra: Record<string, unknown>) => {
    const name = `rctest-dbg-${suffix}-${process.pid}-${Math.floor(Math.random() * 1e6)}`.slice(0, 40);
    const r = await server.req("POST", "/api/v1/vms", { name, image: "rcloud-tiny", ssh_public_key: publicKey, network: { mode: "user", restrict: true }, ...extra });
    expect(r.status).toBe(201);
    return r.json;
  };
  const [dump, restart, stop, preserve] = await Promise.all([
    create("dump", { debug: { gdb: true }, on_panic: "dump" }),
    create("restart", { on_panic: "restart" }),
    create("stop", {}),
    create("keep", { on_panic: "preserve", debug: { gdb: false } }),
  ]);
  expect(dump.gdb_port).toBeGreaterThan(1023);
  expect(dump.gdb_port).not.toBe(dump.ssh_port);
  expect([dump.on_panic, restart.on_panic, stop.on_panic, preserve.on_panic]).toEqual(["dump", "restart", "stop", "preserve"]);
  expect([restart.gdb_port, stop.gdb_port, preserve.gdb_port]).toEqual([null, null, null]);
  expect(dump.crash_reason).toBeNull();
  return { dump, restart, stop, preserve };
}

/** Crashed VMs (held or off) start afresh, the crash forgotten; then every VM is deleted. */
export async function startCrashedThenDelete(server: TestServer, crashed: any[], all: any[], ssh: (vm: any) => { port: number; user: string; key: string }): Promise<void> {
  for (const vm of crashed) expect((await server.req("GET", `/api/v1/vms/${vm.id}/dumps`)).json.dumps).toEqual([]);
  for (const vm of crashed) {
    const started = await server.req("POST", `/api/v1/vms/${vm.id}/start`);
    expect(started.status).toBe(200);
    expect(started.json.state).toBe("running");
    expect(started.json.crash_reason).toBeNull();
  }
  for (const vm of crashed) await waitForSsh(ssh(vm), "true");
  for (const vm of all) expect((await server.req("DELETE", `/api/v1/vms/${vm.id}`)).status).toBe(200);
}
