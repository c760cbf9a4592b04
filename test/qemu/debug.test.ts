/**
 * Debugging on the direct QEMU driver (TCG), with real guests: `debug.gdb` exposes QEMU's
 * gdbstub on 127.0.0.1 (Debian's gdb attaches, reads $pc, steps, detaches; the guest runs on
 * and answers SSH), every VM has a pvpanic device, and a guest panic (`echo c >
 * /proc/sysrq-trigger` as root) does what the VM's on_panic says: dump (state crashed with
 * crash_reason, events vm-crashed and vm-dumped, the dump listed and downloaded, an ELF core
 * holding the guest's memory), restart (the guest boots again), stop (powered off, crashed),
 * preserve (held, crashed); start brings each back. Delete leaves nothing behind.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { copyFileSync, existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { checkDump, checkDumpRefusals, createPanicVms, gdbAttach, gdbBinary, panicGuest, startCrashedThenDelete, waitVm } from "../helpers/debug-scenario.ts";
import { runCliProcess } from "../helpers/cli.ts";
import { EventCollector } from "../helpers/events.ts";
import { uniqueName } from "../helpers/rig.ts";
import { startTestServer, waitHealthy, type TestServer } from "../helpers/server.ts";
import { makeSshKey, sshRun, waitForSsh } from "../helpers/ssh.ts";
import { cleanupState, DISK_IMAGE, qemuPids, stateFiles, tempDir } from "./helpers.ts";

const root = tempDir("dbg");
const stateDir = join(root, "state");
let server: TestServer;
let events: EventCollector;
const key = makeSshKey();

beforeAll(async () => {
  if (!existsSync(DISK_IMAGE)) throw new Error(`${DISK_IMAGE} missing: run scripts/lib/disk-image.sh (scripts/test does)`);
  gdbBinary();
  const images = join(root, "images");
  mkdirSync(images);
  copyFileSync(DISK_IMAGE, join(images, "rcloud-tiny.qcow2"));
  server = await startTestServer({
    driver: "qemu",
    qemu: { accel: "tcg", state_dir: stateDir },
    images: { base_images_dir: images },
    vm_defaults: { network_mode: "user", user_network_restrict: true, memory_mb: 192, vcpus: 1, root_disk_gb: 1, stop_timeout_s: 20, on_panic: "stop" },
  });
  await waitHealthy(server);
  events = await EventCollector.open(`${server.url}/api/v1/events`);
});

afterAll(async () => {
  events?.close();
  await server?.stop();
  await cleanupState(root);
});

const cli = (args: string[]) => runCliProcess(args, { RCLOUD_ENDPOINT: server.url, RCLOUD_TOKEN: undefined, HOME: root });
const ssh = (vm: any) => ({ port: vm.ssh_port, user: "kdevops", key: key.privateKey });

test("gdb, pvpanic and every on_panic action on real guests; delete leaves nothing", async () => {
  const { dump, restart, stop, preserve } = await createPanicVms(server, key.publicKey);

  // QEMU's command line: the ISA pvpanic with a held panic for all; the gdbstub on loopback only.
  const pids = qemuPids(stateDir);
  expect(pids).toHaveLength(4);
  for (const pid of pids) {
    const args = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    expect(args.join(" ")).toContain("-device pvpanic -action panic=pause");
    const gdb = args.indexOf("-gdb");
    if (args.some((a) => a.includes(`hostfwd=tcp:127.0.0.1:${dump.ssh_port}-`))) expect(args[gdb + 1]).toBe(`tcp:127.0.0.1:${dump.gdb_port}`);
    else expect(gdb).toBe(-1);
  }

  await Promise.all([dump, restart, stop, preserve].map((vm) => waitForSsh(ssh(vm), "true")));

  // gdb attaches, reads $pc, steps, detaches; the guest runs on.
  const gdb = await gdbAttach("127.0.0.1", dump.gdb_port);
  expect(gdb.pcs).toHaveLength(2);
  expect(gdb.pcs[0]).toBeGreaterThan(0n);
  expect(gdb.output).toMatch(/Detaching from program|\[Inferior 1 \(process 1\) detached\]/);
  expect(await sshRun(ssh(dump), "echo alive")).toBe("alive\n");
  expect((await server.req("GET", `/api/v1/vms/${dump.id}`)).json.state).toBe("running");

  // The guest's pvpanic driver is bound to the device.
  expect(await sshRun({ ...ssh(dump), user: "root" }, "ls /sys/bus/platform/drivers/pvpanic-mmio/ | grep -c QEMU0001")).toBe("1\n");

  // Panic all four.
  await Promise.all([dump, restart, stop, preserve].map((vm) => panicGuest(ssh(vm))));

  // dump: crashed, reason, events, a dump that is an ELF core of the guest's memory.
  const crashed = await waitVm(server, dump.id, (v) => v.state === "crashed", "dump VM crashed");
  expect(crashed.crash_reason).toBe("guest panicked");
  await events.next("vm-crashed", dump.name, 60_000);
  const dumped = await events.next("vm-dumped", dump.name, 300_000);
  const name = await checkDump(server, dump, join(root, "dump.elf"));
  expect(dumped.detail).toBe(name);
  await checkDumpRefusals(server, dump.id);

  // The CLI: vm show says why it crashed, vm dumps lists it, vm dump download streams the same bytes.
  const show = await cli(["vm", "show", dump.name]);
  expect(show.stdout).toMatch(new RegExp(`GDB port: +${dump.gdb_port}\n`));
  expect(show.stdout).toMatch(/On panic: +dump\n/);
  expect(show.stdout).toMatch(/Crash reason: +guest panicked\n/);
  expect((await cli(["vm", "dumps", dump.name, "-o", "names"])).stdout).toBe(`${name}\n`);
  expect((await cli(["vm", "dumps", dump.name])).stdout).toMatch(new RegExp(`^NAME +SIZE +CREATED\n${name.replace(".", "\\.")} +\\d+\\.\\dM +20`));
  const saved = join(root, "cli.elf");
  const dl = await cli(["vm", "dump", "download", dump.name, name, "-f", saved]);
  expect(dl.code).toBe(0);
  expect(Bun.spawnSync(["cmp", saved, join(root, "dump.elf")]).exitCode).toBe(0);
  expect((await cli(["vm", "dump", "download", dump.name, "../vm.json"])).code).toBe(2);
  expect((await cli(["vm", "dump", "download", dump.name, "dump-20990101T000000Z.elf", "-f", join(root, "none.elf")])).code).toBe(3);

  // restart: the guest boots again, SSH answers, it is running and no longer crashed.
  await events.next("vm-crashed", restart.name, 60_000);
  expect(await waitForSsh(ssh(restart), "cat /proc/sys/kernel/random/boot_id")).toMatch(/^[0-9a-f-]{36}\n$/);
  const again = await waitVm(server, restart.id, (v) => v.state === "running", "restarted VM running");
  expect(again.crash_reason).toBeNull();
  expect(readFileSync(join(stateDir, "vms", restart.id, "serial.log"), "utf8").split("RCLOUD-SSH-READY").length - 1).toBe(2);

  // stop: powered off (no QEMU), crashed with its reason; preserve: held, crashed.
  const off = await waitVm(server, stop.id, (v) => v.state === "crashed", "stopped VM crashed");
  expect(off.crash_reason).toBe("guest panicked");
  await waitVm(server, stop.id, () => qemuPids(join(stateDir, "vms", stop.id)).length === 0, "QEMU of the stop VM gone");
  const held = await waitVm(server, preserve.id, (v) => v.state === "crashed", "preserved VM crashed");
  expect(held.crash_reason).toBe("guest panicked");
  expect(qemuPids(join(stateDir, "vms", preserve.id))).toHaveLength(1);
  // start brings a crashed VM back (stopped or held), the crash forgotten.
  await startCrashedThenDelete(server, [stop, preserve], [dump, restart, stop, preserve], ssh);
  expect(stateFiles(stateDir)).toEqual([]);
  expect(qemuPids(stateDir)).toEqual([]);
}, 1_200_000);

test("CLI: vm create --gdb --on-panic (defined, not started)", async () => {
  const name = uniqueName("dbg-cli").slice(0, 40);
  const r = await cli(["vm", "create", name, "--image", "rcloud-tiny", "--no-ssh-key", "--network", "none", "--gdb", "--on-panic", "dump", "--no-start", "-o", "json"]);
  expect(r.code).toBe(0);
  const vm = JSON.parse(r.stdout);
  expect(vm).toMatchObject({ state: "stopped", on_panic: "dump", crash_reason: null });
  expect(vm.gdb_port).toBeGreaterThan(1023);
  expect((await cli(["vm", "create", "x", "--image", "rcloud-tiny", "--on-panic", "reboot"])).code).toBe(2);
  expect((await server.req("DELETE", `/api/v1/vms/${vm.id}`)).status).toBe(200);
});

test("debug and on_panic are validated", async () => {
  const bad = [
    [{ debug: { gdb: "yes" } }, "debug"],
    [{ debug: { kgdb: true } }, "debug"],
    [{ on_panic: "reboot" }, "on_panic"],
  ] as const;
  for (const [body, field] of bad) {
    const r = await server.req("POST", "/api/v1/vms", { name: uniqueName("dbg-bad").slice(0, 40), image: "rcloud-tiny", ...body });
    expect({ body, status: r.status }).toEqual({ body, status: 422 });
    expect(JSON.stringify(r.json)).toContain(field);
  }
});
