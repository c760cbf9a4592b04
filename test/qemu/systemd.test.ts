/**
 * The qemu driver under a real systemd as PID 1: `systemctl restart rcloud` and `systemctl stop
 * rcloud` leave the VMs running, because each QEMU runs in its own transient scope
 * (rcloud-vm-<id>.scope in machine.slice), as user rcloud-qemu, sandboxed.
 *
 * This machine's PID 1 is not systemd, so the test boots one: /lib/systemd/systemd as PID 1 of
 * new PID, mount, cgroup and UTS namespaces, with a private /run, a cgroup2 hierarchy rooted at
 * a cgroup the test makes (and removes), and a target that starts nothing. The network namespace
 * and the file system are shared, so the API is on this host's loopback and the state directory
 * is the test's temp dir. Because the file system is shared, that systemd must see no unit but
 * the test's: the distribution's units and generators are hidden under empty tmpfs mounts (a
 * service with default dependencies would otherwise pull in sysinit.target, whose
 * systemd-tmpfiles-setup.service empties this host's /tmp), the test drop-in sets
 * DefaultDependencies=no as well, and the test checks sysinit.target is not found before it
 * starts anything. rcloud runs there as the service deploy/rcloud.service plus the
 * drop-in deploy/rcloud-qemu-driver.conf, as shipped, except for a test drop-in: ExecStart runs
 * the source with bun, logs go to a file (no journald), the state directory is the temp dir.
 * Everything runs inside that systemd; killing it (PID 1 of its namespace) ends them all.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { stringify } from "yaml";
import { lookupUser } from "../../src/drivers/qemu/confine.ts";
import { uniqueName, waitFor } from "../helpers/rig.ts";
import { cleanupState, GUEST, tempDir } from "./helpers.ts";

const repo = resolve(import.meta.dir, "../..");
const root = tempDir("sd");
const stateDir = join(root, "state");
const images = join(root, "images");
const log = join(root, "rcloud.log");
let url = "";
let systemdPid = 0;
let unshare: ReturnType<typeof Bun.spawn> | null = null;
let cgroup = "";
/** Set once the test's systemd is proven unable to start any of the host's units. */
let isolated = false;

/** rcloud's log without the request lines. */
const rcloudLog = () => (existsSync(log) ? readFileSync(log, "utf8").split("\n").filter((l) => !l.includes('"msg":"request"')).join("\n").slice(-3000) : "(none)");

/** Runs a command in the private systemd's namespaces; returns its output, throws on failure. */
function inside(...argv: string[]): string {
  const p = Bun.spawnSync(["nsenter", "-t", String(systemdPid), "-p", "-m", "-C", "-u", "--", ...argv], { stdout: "pipe", stderr: "pipe" });
  const out = `${p.stdout.toString()}${p.stderr.toString()}`;
  if (p.exitCode !== 0) throw new Error(`${argv.join(" ")} (in the test's systemd) exited ${p.exitCode}: ${out}\nrcloud log: ${rcloudLog()}`);
  return out.trim();
}

/** The cgroup2 mount and this process's cgroup in it. */
function ownCgroup2(): string {
  const mount = readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .map((l) => l.split(" - "))
    .find(([, tail]) => tail?.startsWith("cgroup2 "))?.[0]
    ?.split(" ")[4];
  const path = readFileSync("/proc/self/cgroup", "utf8").split("\n").find((l) => l.startsWith("0::"))?.slice(3);
  if (!mount || path === undefined) throw new Error("no cgroup2 hierarchy mounted: the test's systemd needs one");
  return join(mount, path);
}

function removeCgroupTree(dir: string): void {
  if (!existsSync(dir)) return;
  for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) removeCgroupTree(join(dir, e.name));
  rmdirSync(dir);
}

async function req(method: string, path: string, body?: unknown): Promise<{ status: number; json: any }> {
  const res = await fetch(`${url}${path}`, { method, headers: body ? { "content-type": "application/json" } : {}, body: body ? JSON.stringify(body) : undefined });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : null };
}

async function healthy(what: string): Promise<void> {
  try {
    await waitFor(what, async () => (await fetch(`${url}/api/v1/health`).catch(() => null))?.status === 200, 60_000, 200);
  } catch (e) {
    const unit = Bun.spawnSync(["nsenter", "-t", String(systemdPid), "-p", "-m", "-C", "-u", "--", "systemctl", "status", "--no-pager", "rcloud.service"]).stdout.toString();
    throw new Error(`${(e as Error).message}\n${unit}\nrcloud log: ${rcloudLog()}`);
  }
}
const mainPid = () => Number(inside("systemctl", "show", "--value", "-p", "MainPID", "rcloud.service"));
const pidOf = (id: string) => Number(readFileSync(join(stateDir, "vms", id, "qemu.pid"), "utf8").trim());
/** /proc/<pid>/<file> in the test's systemd's PID namespace (pidfiles and MainPID are its PIDs), or null. */
function innerProc(pid: number, file: string): string | null {
  const p = Bun.spawnSync(["nsenter", "-t", String(systemdPid), "-p", "-m", "--", "cat", `/proc/${pid}/${file}`], { stdout: "pipe", stderr: "ignore" });
  return p.exitCode === 0 ? p.stdout.toString() : null;
}
const status = (pid: number, field: string) => innerProc(pid, "status")?.match(new RegExp(`^${field}:\\s*(.*)$`, "m"))?.[1];
/** Our QEMU, alive: not a zombie, our state directory on its command line. */
const qemuAlive = (pid: number) => !/^State:\s*[ZX]/m.test(innerProc(pid, "status") ?? "State: X") && (innerProc(pid, "cmdline") ?? "").includes(stateDir);

beforeAll(async () => {
  for (const tool of ["unshare", "nsenter", "systemd-run", "setpriv"]) {
    if (!Bun.which(tool)) throw new Error(`${tool} is missing: install util-linux and systemd (scripts/lib/install-deps.sh)`);
  }
  if (!existsSync("/lib/systemd/systemd")) throw new Error("/lib/systemd/systemd is missing: install systemd (scripts/lib/install-deps.sh)");
  if (!lookupUser("rcloud-qemu")) throw new Error("no user rcloud-qemu: scripts/lib/install-deps.sh creates it");
  chmodSync(root, 0o711); // rcloud-qemu reaches the VM directories below it

  mkdirSync(images);
  Bun.spawnSync(["qemu-img", "create", "-q", "-f", "qcow2", join(images, "rcloud-tiny.qcow2"), "64M"]);
  const port = (() => {
    const l = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    const p = l.port;
    l.stop(true);
    return p;
  })();
  url = `http://127.0.0.1:${port}`;
  writeFileSync(
    join(root, "rcloud.yaml"),
    stringify({
      driver: "qemu",
      logging: { level: "info", format: "text" },
      server: { bind_address: `127.0.0.1:${port}` },
      qemu: { accel: "tcg", state_dir: stateDir, run_as: "auto" },
      images: { base_images_dir: images },
      vm_defaults: { network_mode: "none", memory_mb: 128, vcpus: 1, root_disk_gb: 1, kernel_dir: join(GUEST.kernel, ".."), stop_timeout_s: 5 },
    }),
  );

  // The units: as shipped, plus the test's drop-in.
  const units = join(root, "units");
  mkdirSync(join(units, "rcloud.service.d"), { recursive: true });
  const shipped = readFileSync(join(repo, "deploy/rcloud.service"), "utf8");
  const execStart = `ExecStart=${process.execPath} ${join(repo, "src/main.ts")} serve --config ${join(root, "rcloud.yaml")}`;
  writeFileSync(join(units, "rcloud.service"), shipped.replace(/^ExecStart=.*$/m, execStart));
  writeFileSync(join(units, "rcloud.service.d", "qemu-driver.conf"), readFileSync(join(repo, "deploy/rcloud-qemu-driver.conf"), "utf8"));
  writeFileSync(
    join(units, "rcloud.service.d", "zz-test.conf"),
    [
      "[Unit]",
      "DefaultDependencies=no",
      "[Service]",
      `StandardOutput=append:${log}`,
      "StandardError=inherit",
      // The state directory is the test's temp dir (under /tmp, so no PrivateTmp), not /var/lib/rcloud.
      "PrivateTmp=no",
      "StateDirectory=",
      "ReadWritePaths=",
      `ReadWritePaths=${root}`,
      "",
    ].join("\n"),
  );
  writeFileSync(join(units, "rcloud-test.target"), "[Unit]\nDescription=rcloud test: nothing to start\nDefaultDependencies=no\n");

  // systemd as PID 1 of new namespaces, in a cgroup of its own.
  cgroup = join(ownCgroup2(), `rcloud-test-systemd-${process.pid}`);
  mkdirSync(cgroup);
  const script = [
    "set -e",
    `echo $$ > ${cgroup}/cgroup.procs`,
    "exec env container=rcloud-test unshare --pid --fork --mount --cgroup --uts sh -c '" +
      [
        "set -e",
        "mount --make-rprivate /",
        "mount -t tmpfs tmpfs /run",
        "mkdir -p /run/systemd/system",
        `cp -r ${units}/. /run/systemd/system/`,
        // Only the test's units: hide the distribution's (and the generators, which read /etc/fstab).
        "for d in /usr/lib/systemd/system /etc/systemd/system /usr/lib/systemd/system-generators /etc/systemd/system-generators /usr/lib/systemd/system-environment-generators; do if [ -d $d ]; then mount -t tmpfs -o ro tmpfs $d; fi; done",
        "umount -l /sys/fs/cgroup 2>/dev/null || true",
        "mount -t cgroup2 cgroup2 /sys/fs/cgroup",
        "mount -t proc proc /proc",
        "hostname rcloud-test-systemd",
        "exec /lib/systemd/systemd --system --unit=rcloud-test.target --log-target=console",
      ].join("; ") +
      "'",
  ].join("\n");
  unshare = Bun.spawn(["sh", "-c", script], { stdin: "ignore", stdout: Bun.file(join(root, "systemd.log")), stderr: Bun.file(join(root, "systemd.log")) });
  const children = () => readFileSync(`/proc/${unshare!.pid}/task/${unshare!.pid}/children`, "utf8").trim();
  systemdPid = await waitFor("the test's systemd to start", () => (unshare!.exitCode === null ? Number(children()) || null : Promise.reject(new Error(`systemd exited: ${readFileSync(join(root, "systemd.log"), "utf8")}`))), 20_000, 50);
  await waitFor("the test's systemd to be up", () => {
    const p = Bun.spawnSync(["nsenter", "-t", String(systemdPid), "-p", "-m", "-C", "-u", "--", "systemctl", "is-system-running"], { stdout: "pipe", stderr: "pipe" });
    return ["running", "degraded"].includes(p.stdout.toString().trim());
  }, 30_000, 100);
  expect(inside("readlink", "/proc/1/exe")).toBe("/usr/lib/systemd/systemd");
  expect(existsSync(`/proc/${systemdPid}/root/run/systemd/system`)).toBe(true);
  // The guard: nothing of the host's boot can be started by this systemd.
  for (const unit of ["sysinit.target", "basic.target", "systemd-tmpfiles-setup.service", "systemd-journald.service"]) {
    const state = inside("systemctl", "show", "--value", "-p", "LoadState", unit);
    if (state !== "not-found") throw new Error(`the test's systemd can load the host's ${unit} (${state}); refusing to go on`);
  }
  isolated = true;
}, 60_000);

afterAll(async () => {
  if (systemdPid) {
    try {
      process.kill(systemdPid, "SIGKILL"); // PID 1 of its namespace: everything in it goes too
    } catch {
      // gone
    }
  }
  if (unshare) await unshare.exited;
  await cleanupState(root);
  removeCgroupTree(cgroup);
});

test("systemctl restart and stop rcloud leave its VMs running: each QEMU is in its own scope, as rcloud-qemu, sandboxed", async () => {
  if (!isolated) throw new Error("the test's systemd was not set up (see the error of beforeAll)");
  inside("systemctl", "start", "rcloud.service");
  await healthy("rcloud (the systemd service) to become healthy");
  const firstMain = mainPid();
  expect(status(firstMain, "Uid")?.split(/\s+/)[0]).toBe("0"); // the qemu drop-in: root, to create scopes

  const vm = (await req("POST", "/api/v1/vms", { name: uniqueName("sd").slice(0, 40), image: "rcloud-tiny", kernel: GUEST.kernel, initrd: GUEST.initrd, cmdline: "console=ttyS0 panic=-1 quiet" })).json;
  expect(vm.state).toBe("running");
  const pid = pidOf(vm.id);
  const scope = `rcloud-vm-${vm.id}.scope`;
  // Its own scope in machine.slice, not rcloud.service's cgroup; systemd knows it.
  const cg = innerProc(pid, "cgroup")?.split("\n").find((l) => l.startsWith("0::"));
  expect(cg).toEndWith(`/machine.slice/${scope}`);
  expect(inside("systemctl", "show", "--value", "-p", "ActiveState", scope)).toBe("active");
  const qemuUser = lookupUser("rcloud-qemu")!;
  expect(status(pid, "Uid")).toBe(`${qemuUser.uid}\t${qemuUser.uid}\t${qemuUser.uid}\t${qemuUser.uid}`);
  expect(status(pid, "Seccomp")).toBe("2");

  inside("systemctl", "restart", "rcloud.service");
  await healthy("rcloud to be healthy again after systemctl restart");
  expect(mainPid()).not.toBe(firstMain);
  expect(qemuAlive(pid)).toBe(true);
  expect(pidOf(vm.id)).toBe(pid);
  expect((await req("GET", `/api/v1/vms/${vm.id}`)).json.state).toBe("running");
  expect((await req("POST", `/api/v1/vms/${vm.id}/qmp`, { execute: "query-status" })).json.return.status).toBe("running");

  inside("systemctl", "stop", "rcloud.service");
  expect(inside("systemctl", "show", "--value", "-p", "ActiveState", "rcloud.service")).toBe("inactive");
  expect(qemuAlive(pid)).toBe(true);
  inside("systemctl", "start", "rcloud.service");
  await healthy("rcloud to be healthy after systemctl start");
  expect((await req("GET", `/api/v1/vms/${vm.id}`)).json.state).toBe("running");

  // Stopped by rcloud: the scope goes with it.
  expect((await req("DELETE", `/api/v1/vms/${vm.id}`)).status).toBe(200);
  expect(qemuAlive(pid)).toBe(false);
  await waitFor("the VM's scope to go", () => inside("systemctl", "show", "--value", "-p", "ActiveState", scope) === "inactive", 10_000, 100);
  inside("systemctl", "stop", "rcloud.service");
}, 240_000);
