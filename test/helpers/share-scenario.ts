/**
 * Shares on a real guest, the same on both drivers (test/qemu/shares.test.ts,
 * test/e2e/libvirt-shares.test.ts): the refusals first (no guest), then one TCG guest with four
 * shares — virtiofs read-write and read-only, 9p read-write and read-only — mounted by the
 * test disk's /init from cloud-init's `mounts:`; files cross both ways over SSH, a
 * `make modules_install`-style tree written in the guest lands on the host, read-only shares
 * refuse writes, and after delete no virtiofsd serves the directories any more. And a share
 * redirected on the host after create (a directory on its way swapped for a symbolic link, as a
 * guest sharing the parent read-write could do) stops the next start.
 */
import { expect } from "bun:test";
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { uniqueName } from "./rig.ts";
import type { TestServer } from "./server.ts";
import { makeSshKey, sshRun, waitForSsh } from "./ssh.ts";

/** The directories a share test uses: `root` is vm_defaults.share_dirs; `outside` is not in it. */
export interface ShareDirs {
  root: string;
  outside: string;
}

/** Makes the share directory tree under `base` (writable for QEMU's and virtiofsd's users: 9p writes as QEMU's). */
export function makeShareDirs(base: string): ShareDirs {
  const root = join(base, "shared");
  const outside = join(base, "outside");
  for (const d of [root, outside, join(root, "linux"), join(root, "ref"), join(root, "p9"), join(root, "p9ro")]) {
    mkdirSync(d, { recursive: true });
    chmodSync(d, 0o777);
  }
  chmodSync(base, 0o755);
  writeFileSync(join(root, "linux", "from-host.txt"), "written on the host\n");
  writeFileSync(join(root, "ref", "README"), "reference tree\n");
  writeFileSync(join(root, "p9", "from-host.txt"), "9p from the host\n");
  writeFileSync(join(root, "p9ro", "README"), "9p reference\n");
  // A link inside the share directory that leads out of it.
  symlinkSync("/etc", join(root, "escape"));
  return { root, outside };
}

/** PIDs of virtiofsd processes whose command line names `path` (rcloud's or libvirt's). */
export function virtiofsdsServing(path: string): number[] {
  const pids: number[] = [];
  for (const e of readdirSync("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const args = readFileSync(`/proc/${e}/cmdline`, "utf8").split("\0");
      if (args.some((a) => a.endsWith("virtiofsd")) && args.some((a) => a.includes(path))) pids.push(Number(e));
    } catch {
      // gone
    }
  }
  return pids;
}

/** Every refusal answers before anything is made, with a stable code and the field. */
export async function shareRefusals(server: TestServer, dirs: ShareDirs, image: string): Promise<void> {
  const name = uniqueName("shr").slice(0, 40);
  const create = (shares: unknown[]) => server.req("POST", "/api/v1/vms", { name, image, network: { mode: "none" }, shares });
  const cases: [unknown[], number, string, string, RegExp][] = [
    [[{ host_path: dirs.outside, tag: "x" }], 422, "share_not_allowed", "shares[0].host_path", /share_dirs/],
    [[{ host_path: join(dirs.root, "escape"), tag: "x" }], 422, "share_not_allowed", "shares[0].host_path", /share_dirs/],
    [[{ host_path: join(dirs.root, "escape", "ssh"), tag: "x" }], 422, "share_not_allowed", "shares[0].host_path", /share_dirs/],
    [[{ host_path: `${dirs.root}/linux/../../outside`, tag: "x" }], 422, "validation_error", "shares[0].host_path", /'\.\.'/],
    [[{ host_path: join(dirs.root, "missing"), tag: "x" }], 422, "validation_error", "shares[0].host_path", /does not exist/],
    [[{ host_path: join(dirs.root, "linux", "from-host.txt"), tag: "x" }], 422, "validation_error", "shares[0].host_path", /not a directory/],
    [[{ host_path: join(dirs.root, "linux"), tag: "a" }, { host_path: join(dirs.root, "ref"), tag: "a" }], 422, "validation_error", "shares[1].tag", /unique/],
    [[{ host_path: join(dirs.root, "linux"), tag: "a".repeat(32), transport: "9p" }], 422, "validation_error", "shares[0].tag", /31/],
  ];
  for (const [shares, status, code, field, message] of cases) {
    const r = await server.req("POST", "/api/v1/vms", { name, image, network: { mode: "none" }, shares });
    expect({ shares, status: r.status, code: r.json?.error?.code, field: r.json?.error?.field }).toEqual({ shares, status, code, field });
    expect(r.json.error.message).toMatch(message);
  }
  // A tag that is no safe name never reaches the service (the body's schema), still 422.
  const bad = await create([{ host_path: join(dirs.root, "linux"), tag: "../x" }]);
  expect(bad.status).toBe(422);
  const list = await server.req("GET", "/api/v1/vms");
  expect(list.json.vms.map((v: { name: string }) => v.name)).not.toContain(name);
}

/** One guest with four shares: both directions, a module tree, read-only refusals, nothing left after delete. */
export async function shareRoundTrip(server: TestServer, dirs: ShareDirs, image: string, opts: { hostEnforcesReadOnly: string[] }): Promise<void> {
  const key = makeSshKey();
  const name = uniqueName("shr").slice(0, 40);
  const p = (d: string) => join(dirs.root, d);
  const created = await server.req("POST", "/api/v1/vms", {
    name,
    image,
    ssh_public_key: key.publicKey,
    network: { mode: "user", restrict: true },
    shares: [
      { host_path: p("linux"), tag: "linux" },
      { host_path: p("ref"), tag: "ref", readonly: true },
      { host_path: p("p9"), tag: "p9", transport: "9p" },
      { host_path: p("p9ro"), tag: "p9ro", readonly: true, transport: "9p" },
    ],
  });
  expect({ status: created.status, error: created.json?.error ?? null }).toEqual({ status: 201, error: null });
  const vm = created.json;
  const wantShares = [
    { host_path: p("linux"), tag: "linux", readonly: false, transport: "virtiofs" },
    { host_path: p("ref"), tag: "ref", readonly: true, transport: "virtiofs" },
    { host_path: p("p9"), tag: "p9", readonly: false, transport: "9p" },
    { host_path: p("p9ro"), tag: "p9ro", readonly: true, transport: "9p" },
  ];
  expect(vm.shares).toEqual(wantShares);
  expect((await server.req("GET", `/api/v1/vms/${vm.id}`)).json.shares).toEqual(wantShares);
  try {
    expect(virtiofsdsServing(p("linux")).length).toBeGreaterThan(0);
    expect(virtiofsdsServing(p("ref")).length).toBeGreaterThan(0);
    const login = { port: vm.ssh_port, user: "root", key: key.privateKey };
    await waitForSsh(login, "true");
    // The machine is shared and slow: a login that fails at the SSH level (exit 255, before
    // the command ran) is tried again; every command here can run twice.
    const run = async (command: string): Promise<string> => {
      console.error(`[${new Date().toISOString()}] guest: ${command.slice(0, 80)}`);
      for (let attempt = 1; ; attempt++) {
        try {
          return await sshRun(login, command, 60);
        } catch (e) {
          if (attempt >= 3 || !/ssh exited 255/.test((e as Error).message)) throw e;
        }
      }
    };
    // The guest's /init mounted every `mounts:` row of the seed, read-only ones read-only.
    const logFile = (await server.req("GET", `/api/v1/vms/${vm.id}/console`)).json.log_file;
    const log = readFileSync(logFile, "utf8");
    const mounts = await run("cat /proc/mounts");
    for (const [tag, fstype, access] of [["linux", "virtiofs", "rw"], ["ref", "virtiofs", "ro"], ["p9", "9p", "rw"], ["p9ro", "9p", "ro"]]) {
      expect(log).toContain(`RCLOUD-MOUNT ${tag} /mnt/${tag} ${fstype} ok`);
      expect(mounts).toMatch(new RegExp(`^${tag} /mnt/${tag} ${fstype} ${access},`, "m"));
    }
    // Host → guest.
    // One file a login, each through a pipe (busybox cat would sendfile(2) straight to the socket).
    const read = async (f: string) => (await run(`cat ${f} | cat; echo "rc=$?"`)).trim();
    expect([await read("/mnt/linux/from-host.txt"), await read("/mnt/ref/README"), await read("/mnt/p9/from-host.txt"), await read("/mnt/p9ro/README")]).toEqual([
      "written on the host\nrc=0",
      "reference tree\nrc=0",
      "9p from the host\nrc=0",
      "9p reference\nrc=0",
    ]);
    // Guest → host: a file, and a modules_install-like tree, on both read-write shares.
    const install = (dir: string) =>
      `echo from-guest > ${dir}/from-guest.txt && mkdir -p ${dir}/lib/modules/6.1.0-test/kernel/fs && cp /proc/version ${dir}/lib/modules/6.1.0-test/kernel/fs/version.ko && ln -sf kernel ${dir}/lib/modules/6.1.0-test/build && sync`;
    await run(`${install("/mnt/linux")} && ${install("/mnt/p9")}`);
    const guestVersion = await run("cat /proc/version");
    for (const d of ["linux", "p9"]) {
      expect(readFileSync(join(p(d), "from-guest.txt"), "utf8")).toBe("from-guest\n");
      expect(readFileSync(join(p(d), "lib/modules/6.1.0-test/kernel/fs/version.ko"), "utf8")).toBe(guestVersion);
      expect(existsSync(join(p(d), "lib/modules/6.1.0-test/build/fs/version.ko"))).toBe(true);
    }
    // A file the host writes now is seen by the running guest.
    writeFileSync(join(p("linux"), "later.txt"), "later\n");
    writeFileSync(join(p("p9"), "later.txt"), "later 9p\n");
    expect(await run("cat /mnt/linux/later.txt /mnt/p9/later.txt")).toBe("later\nlater 9p\n");
    // Read-only shares refuse writes (EROFS), and nothing appears on the host.
    for (const d of ["ref", "p9ro"]) {
      const out = await run(`touch /mnt/${d}/nope 2>&1; echo "rc=$?"`);
      expect(out).toMatch(/Read-only file system/);
      expect(out).toContain("rc=1");
      expect(existsSync(join(p(d), "nope"))).toBe(false);
    }
    // Remounted read-write by the guest's root: the host still refuses where it enforces it.
    for (const d of opts.hostEnforcesReadOnly) {
      const out = await run(`mount -o remount,rw /mnt/${d}; touch /mnt/${d}/nope 2>&1; echo "rc=$?"`);
      expect(out).toMatch(/Read-only file system/);
      expect(out).toContain("rc=1");
      expect(existsSync(join(p(d), "nope"))).toBe(false);
    }
  } catch (e) {
    // What the guest said last, for the failure's report.
    const logFile = (await server.req("GET", `/api/v1/vms/${vm.id}/console`)).json?.log_file;
    if (logFile && existsSync(logFile)) console.error(`--- ${vm.name} console (last 3000 bytes) ---\n${readFileSync(logFile, "utf8").slice(-3000)}`);
    throw e;
  } finally {
    const del = await server.req("DELETE", `/api/v1/vms/${vm.id}`);
    expect(del.status).toBe(200);
  }
  // Nothing left behind: no virtiofsd serves the directories (libvirt's stop with the domain too).
  const deadline = Date.now() + 30_000;
  while ((virtiofsdsServing(p("linux")).length > 0 || virtiofsdsServing(p("ref")).length > 0) && Date.now() < deadline) await Bun.sleep(200);
  expect(virtiofsdsServing(p("linux"))).toEqual([]);
  expect(virtiofsdsServing(p("ref"))).toEqual([]);
}

/**
 * A stopped VM shares `sub/etc` (virtiofs) and `sub/p9` (9p) of the share directory. `sub` is
 * then swapped for a symbolic link, as another guest sharing the share directory read-write
 * could do: to / (the VM would get the host's /etc) and to another directory inside
 * share_dirs (not the one shared at create). Each start is refused, 422 share_not_allowed,
 * and the VM stays stopped with nothing serving /etc; with `sub` put back it starts.
 */
export async function shareRedirected(server: TestServer, dirs: ShareDirs, image: string): Promise<void> {
  const sub = join(dirs.root, "sub");
  const other = join(dirs.root, "other");
  for (const d of [join(sub, "etc"), join(sub, "p9"), join(other, "etc"), join(other, "p9")]) {
    mkdirSync(d, { recursive: true });
    chmodSync(d, 0o777);
  }
  const name = uniqueName("shm").slice(0, 40);
  const created = await server.req("POST", "/api/v1/vms", {
    name,
    image,
    start: false,
    network: { mode: "none" },
    shares: [
      { host_path: join(sub, "etc"), tag: "etc" },
      { host_path: join(sub, "p9"), tag: "p9", transport: "9p" },
    ],
  });
  expect({ status: created.status, error: created.json?.error ?? null }).toEqual({ status: 201, error: null });
  const id = created.json.id;
  try {
    renameSync(sub, `${sub}.real`);
    for (const [target, said] of [["/", /etc \(.*\/sub\/etc\) no longer leads to a directory inside vm_defaults\.share_dirs/], [other, /now leads to .*\/other\/etc, not to the directory shared at create/]] as const) {
      rmSync(sub, { force: true });
      symlinkSync(target, sub);
      const r = await server.req("POST", `/api/v1/vms/${id}/start`);
      expect({ target, status: r.status, code: r.json?.error?.code }).toEqual({ target, status: 422, code: "share_not_allowed" });
      expect(r.json.error.message).toMatch(said);
      expect(r.json.error.message).toMatch(/put the directory back/);
      expect((await server.req("GET", `/api/v1/vms/${id}`)).json.state).toBe("stopped");
      expect(virtiofsdsServing("/etc")).toEqual([]);
    }
    // Put back, the same VM starts (the check refuses only what moved).
    rmSync(sub, { force: true });
    renameSync(`${sub}.real`, sub);
    const started = await server.req("POST", `/api/v1/vms/${id}/start`);
    expect({ status: started.status, error: started.json?.error ?? null, state: started.json?.state }).toEqual({ status: 200, error: null, state: "running" });
  } finally {
    const del = await server.req("DELETE", `/api/v1/vms/${id}`);
    expect(del.status).toBe(200);
  }
}
