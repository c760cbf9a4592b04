/**
 * Debugging on qemu:///system (TCG), with real guests: `debug.gdb` puts QEMU's gdbstub on
 * 127.0.0.1 through the domain's qemu:commandline (libvirt 9.0 has no element for it);
 * Debian's gdb attaches, reads $pc, steps and detaches and the guest runs on. Every domain has
 * <panic model='isa'/>, and a guest panic (`echo c > /proc/sysrq-trigger` as root) does what
 * on_panic says through <on_crash>: dump (held, rcloud saves an ELF core of the guest's memory
 * into the pool: listed, downloaded through a volume stream, `file` says ELF core), restart
 * (libvirt resets it; the guest boots again), stop (destroyed: crashed, powered off),
 * preserve (held, crashed); start brings each back. Delete removes the dump volumes too.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { LibvirtClient, remoteProcedures as P } from "../../src/libvirt/index.ts";
import { checkDump, checkDumpRefusals, createPanicVms, gdbAttach, gdbBinary, panicGuest, startCrashedThenDelete, waitVm } from "../helpers/debug-scenario.ts";
import { EventCollector } from "../helpers/events.ts";
import { tinyDiskImageDir } from "../helpers/guest.ts";
import { removePool, rig, unixUri } from "../helpers/rig.ts";
import { startTestServer, waitHealthy, type TestServer } from "../helpers/server.ts";
import { makeSshKey, sshRun, waitForSsh } from "../helpers/ssh.ts";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";

const poolName = `rctest-dbg-${process.pid}`;
let server: TestServer;
let lv: LibvirtClient;
let events: EventCollector;
const key = makeSshKey();
const work = mkdtempSync(join(tmpdir(), "rcloud-dbg-"));

beforeAll(async () => {
  gdbBinary();
  const base = tinyDiskImageDir("e2e-images");
  lv = await LibvirtClient.connect(unixUri("qemu"));
  server = await startTestServer({
    libvirt: { uri: unixUri("qemu"), storage_pool_name: poolName, storage_pool_path: join(rig().rigDir, "pools", poolName), domain_type: "qemu" },
    images: { base_images_dir: base },
    vm_defaults: { network_mode: "user", user_network_restrict: true, memory_mb: 192, vcpus: 1, root_disk_gb: 1, stop_timeout_s: 20, on_panic: "stop" },
  });
  await waitHealthy(server);
  events = await EventCollector.open(`${server.url}/api/v1/events`);
});

afterAll(async () => {
  events?.close();
  await server?.stop();
  await removePool(lv, poolName);
  await lv?.close();
  rmSync(work, { recursive: true, force: true });
});

const ssh = (vm: any) => ({ port: vm.ssh_port, user: "kdevops", key: key.privateKey });

async function domainXml(name: string): Promise<string> {
  const { dom } = await lv.call(P.domainLookupByName, { name });
  return (await lv.call(P.domainGetXmlDesc, { dom, flags: 0 })).xml;
}

async function volumes(): Promise<string[]> {
  const { pool } = await lv.call(P.storagePoolLookupByName, { name: poolName });
  await lv.call(P.storagePoolRefresh, { pool, flags: 0 });
  return (await lv.call(P.storagePoolListAllVolumes, { pool, need_results: 1, flags: 0 })).vols.map((v) => v.name).sort();
}

test("gdb, pvpanic and every on_panic action on libvirt guests; delete leaves nothing", async () => {
  const { dump, restart, stop, preserve } = await createPanicVms(server, key.publicKey);
  // Read back from libvirt, not only the create's answer.
  const shown = await server.req("GET", `/api/v1/vms/${dump.id}`);
  expect(shown.json).toMatchObject({ gdb_port: dump.gdb_port, on_panic: "dump", crash_reason: null });

  // The domains: an ISA pvpanic each, <on_crash> per on_panic, the gdbstub on loopback.
  const onCrash = { dump: "preserve", restart: "restart", stop: "destroy", preserve: "preserve" } as const;
  for (const vm of [dump, restart, stop, preserve]) {
    const xml = await domainXml(vm.name);
    expect(xml).toContain("<panic model='isa'/>");
    expect(xml).toContain(`<on_crash>${onCrash[vm.on_panic as keyof typeof onCrash]}</on_crash>`);
    if (vm === dump) expect(xml).toContain(`<qemu:arg value='tcp:127.0.0.1:${dump.gdb_port}'/>`);
    else expect(xml).not.toContain("-gdb");
  }

  await Promise.all([dump, restart, stop, preserve].map((vm) => waitForSsh(ssh(vm), "true")));

  const gdb = await gdbAttach("127.0.0.1", dump.gdb_port);
  expect(gdb.pcs).toHaveLength(2);
  expect(gdb.pcs[0]).toBeGreaterThan(0n);
  expect(await sshRun(ssh(dump), "echo alive")).toBe("alive\n");
  expect((await server.req("GET", `/api/v1/vms/${dump.id}`)).json.state).toBe("running");

  await Promise.all([dump, restart, stop, preserve].map((vm) => panicGuest(ssh(vm))));

  const crashed = await waitVm(server, dump.id, (v) => v.state === "crashed", "dump VM crashed");
  expect(crashed.crash_reason).toBe("guest panicked");
  expect((await events.next("vm-crashed", dump.name, 60_000)).detail).toBe("panicked");
  const dumped = await events.next("vm-dumped", dump.name, 300_000);
  const name = await checkDump(server, dump, join(work, "dump.elf"));
  expect(dumped.detail).toBe(name);
  expect(await volumes()).toContain(`${dump.id}-${name}`);
  await checkDumpRefusals(server, dump.id);

  await events.next("vm-crashed", restart.name, 60_000);
  await waitForSsh(ssh(restart), "true");
  const again = await waitVm(server, restart.id, (v) => v.state === "running", "restarted VM running");
  expect(again.crash_reason).toBeNull();
  // Booted twice: the serial log (in the rig's pool directory, readable here) says so.
  const con = await server.req("GET", `/api/v1/vms/${restart.id}/console`);
  expect(readFileSync(con.json.logFile, "utf8").split("RCLOUD-SSH-READY").length - 1).toBe(2);

  const off = await waitVm(server, stop.id, (v) => v.state === "crashed", "stopped VM crashed");
  expect(off.crash_reason).toBe("guest panicked");
  const held = await waitVm(server, preserve.id, (v) => v.state === "crashed", "preserved VM crashed");
  expect(held.crash_reason).toBe("guest panicked");

  await startCrashedThenDelete(server, [stop, preserve], [dump, restart, stop, preserve], ssh);
  expect(await volumes()).toEqual([]);
}, 1_200_000);
