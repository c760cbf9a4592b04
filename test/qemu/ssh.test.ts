/**
 * End to end on the direct QEMU driver (TCG): POST /vms from the small bootable disk image
 * with an SSH key and restricted user networking → running → a real ssh client logs in with
 * that key → QMP passthrough → graceful stop (ACPI) → start → SSH again → delete → nothing
 * left in the state directory, no QEMU process left. rcloud runs as root here, so QEMU runs as
 * rcloud-qemu (qemu.run_as: auto), under its seccomp sandbox, and owns the VM's files.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { lookupUser, type RunAsUser } from "../../src/drivers/qemu/confine.ts";
import { uniqueName } from "../helpers/rig.ts";
import { startTestServer, waitHealthy, type TestServer } from "../helpers/server.ts";
import { makeSshKey, waitForSsh } from "../helpers/ssh.ts";
import { cleanupState, DISK_IMAGE, qemuAlive, qemuPids, stateFiles, tempDir } from "./helpers.ts";

const root = tempDir("ssh");
const stateDir = join(root, "state");
let server: TestServer;
let qemuUser: RunAsUser;

beforeAll(async () => {
  if (!existsSync(DISK_IMAGE)) throw new Error(`${DISK_IMAGE} missing: run scripts/lib/disk-image.sh (scripts/test does)`);
  if (process.getuid?.() !== 0) throw new Error("this test checks QEMU runs as rcloud-qemu, which needs rcloud (the test) to run as root");
  qemuUser = lookupUser("rcloud-qemu") ?? (() => {
    throw new Error("no user rcloud-qemu: scripts/lib/install-deps.sh creates it (scripts/test runs it)");
  })();
  const images = join(root, "images");
  mkdirSync(images);
  copyFileSync(DISK_IMAGE, join(images, "rcloud-tiny.qcow2"));
  server = await startTestServer({
    driver: "qemu",
    qemu: { accel: "tcg", state_dir: stateDir },
    images: { base_images_dir: images },
    vm_defaults: { network_mode: "user", user_network_restrict: true, memory_mb: 256, vcpus: 1, root_disk_gb: 1, stop_timeout_s: 30 },
  });
  await waitHealthy(server);
});

afterAll(async () => {
  await server.stop();
  await cleanupState(root);
});

test("create → SSH in → stop → start → SSH → delete leaves nothing behind", async () => {
  const key = makeSshKey();
  const name = uniqueName("ssh").slice(0, 40);
  const created = await server.req("POST", "/api/v1/vms", { name, image: "rcloud-tiny", ssh_public_key: key.publicKey, network: { mode: "user", restrict: true } });
  expect(created.status).toBe(201);
  const vm = created.json;
  expect(vm.state).toBe("running");
  expect(vm.ssh_port).toBeGreaterThan(1023);
  expect(vm.ip_address).toBe("127.0.0.1");
  expect(vm.network.mode).toBe("user");

  // The root overlay and the seed ISO live in the VM's directory; QEMU forwards SSH with restrict=on.
  const files = stateFiles(stateDir).map((f) => f.slice(vm.id.length + 1));
  expect(files).toEqual(expect.arrayContaining(["root.qcow2", "seed.iso", "vm.json", "qemu.pid", "qmp.sock", "serial.log"]));
  const [pid] = qemuPids(stateDir);
  expect(pid).toBeGreaterThan(1);
  const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
  expect(cmdline).toContain(`user,id=net0,hostfwd=tcp:127.0.0.1:${vm.ssh_port}-:22,restrict=on`);
  expectConfined(pid!, vm.id);

  const uname = await waitForSsh({ port: vm.ssh_port, user: "kdevops", key: key.privateKey }, "uname -r; hostname");
  const [release, hostname] = uname.trim().split("\n");
  expect(release).toMatch(/^\d+\.\d+\.\d+/);
  expect(hostname).toBe(name);

  const con = await server.req("GET", `/api/v1/vms/${vm.id}/console`);
  expect(con.json.ssh).toEqual({ host: "127.0.0.1", port: vm.ssh_port, user: "kdevops" });
  expect(readFileSync(con.json.log_file, "utf8")).toContain("RCLOUD-SSH-READY");

  const qmp = await server.req("POST", `/api/v1/vms/${vm.id}/qmp`, { execute: "query-status" });
  expect(qmp.status).toBe(200);
  expect(qmp.json.return.status).toBe("running");

  // Graceful stop: the guest handles the ACPI power button and QEMU exits.
  const stopped = await server.req("POST", `/api/v1/vms/${vm.id}/stop`);
  expect(stopped.status).toBe(200);
  expect(stopped.json.state).toBe("stopped");
  expect(readFileSync(con.json.log_file, "utf8")).toContain("RCLOUD-POWEROFF acpi");
  expect(qemuAlive(pid!, stateDir)).toBe(false);

  const started = await server.req("POST", `/api/v1/vms/${vm.id}/start`);
  expect(started.status).toBe(200);
  expect(started.json.state).toBe("running");
  expect(started.json.ssh_port).toBe(vm.ssh_port);
  expect(await waitForSsh({ port: vm.ssh_port, user: "kdevops", key: key.privateKey }, "hostname")).toBe(`${name}\n`);

  const [pid2] = qemuPids(stateDir);
  expectConfined(pid2!, vm.id); // started again: still rcloud-qemu, still sandboxed
  const del = await server.req("DELETE", `/api/v1/vms/${vm.id}`);
  expect(del.status).toBe(200);
  expect((await server.req("GET", `/api/v1/vms/${vm.id}`)).status).toBe(404);
  expect(readdirSync(join(stateDir, "vms"))).toEqual([]);
  expect(qemuAlive(pid2!, stateDir)).toBe(false);
}, 300_000);

/** QEMU runs as rcloud-qemu with seccomp filtering, and owns the VM's files; vm.json stays root's. */
function expectConfined(pid: number, id: string): void {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const field = (name: string) => status.match(new RegExp(`^${name}:\\s*(.*)$`, "m"))?.[1];
  const u = qemuUser.uid;
  expect(field("Uid")).toBe(`${u}\t${u}\t${u}\t${u}`);
  expect(field("Gid")?.split("\t")[0]).toBe(String(qemuUser.gid));
  expect(field("Seccomp")).toBe("2");
  expect(field("NoNewPrivs")).toBe("1");
  const dir = join(stateDir, "vms", id);
  for (const f of ["root.qcow2", "seed.iso", "serial.log", "qmp.sock", "serial.sock", "qga.sock", "qemu.pid"]) {
    expect(`${f}: ${statSync(join(dir, f)).uid}`).toBe(`${f}: ${u}`);
  }
  expect(statSync(join(dir, "vm.json")).uid).toBe(0);
  const d = statSync(dir);
  expect([d.uid, d.gid, d.mode & 0o7777]).toEqual([0, qemuUser.gid, 0o1770]);
}
