/**
 * The rcloud CLI as a real child process (`bun src/main.ts ...`) against a real rcloud
 * server (in-process, libvirtd's test driver from the rig): output, exit codes, errors.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse as parseYaml } from "yaml";
import { LibvirtClient } from "../../src/libvirt/index.ts";
import { bashCompleter, type CliRun, runCliProcess } from "../helpers/cli.ts";
import { removePool, unixUri } from "../helpers/rig.ts";
import { startTestServer, testDriverConfig, waitHealthy, type TestServer } from "../helpers/server.ts";

const poolName = `rctest-cli-${process.pid}`;
let server: TestServer;
let home: string;

function cli(args: string[], env: Record<string, string> = {}): Promise<CliRun> {
  return runCliProcess(args, { RCLOUD_ENDPOINT: server?.url, HOME: home, RCLOUD_TOKEN: undefined, ...env });
}

const name = (s: string) => `rctest-cli-${s}-${process.pid % 100000}`;
const created: string[] = [];

beforeAll(async () => {
  home = mkdtempSync(join(tmpdir(), "rcloud-cli-home-"));
  mkdirSync(join(home, ".ssh"), { mode: 0o700 });
  const kg = Bun.spawnSync(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "cli-test", "-f", join(home, ".ssh", "id_ed25519")]);
  if (kg.exitCode !== 0) throw new Error(`ssh-keygen failed: ${kg.stderr.toString()}`);
  server = await startTestServer(await testDriverConfig(poolName));
  await waitHealthy(server);
});

afterAll(async () => {
  for (const n of created) await server.req("DELETE", `/api/v1/vms/${n}`);
  await server.stop();
  const lv = await LibvirtClient.connect(unixUri("test"));
  await removePool(lv, poolName);
  await lv.close();
});

describe("vm lifecycle", () => {
  const vm = name("life");

  test("create --wait prints plain progress lines (not a TTY) and ends reachable", async () => {
    created.push(vm);
    // No key: libvirt's test driver cannot upload a cloud-init seed. The CLI installing
    // ~/.ssh/id_ed25519.pub by default is covered on qemu:///system (test/e2e/cli-ssh.test.ts).
    const r = await cli(["vm", "create", vm, "--image", "debian13", "--memory", "512M", "--disk", "3G", "--data-disk", "2G,type=scsi", "--no-ssh-key", "--wait", "--timeout", "60s"]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`Created VM ${vm} (vm-`);
    expect(r.stdout).toMatch(new RegExp(`VM ${vm} is ready at \\d+\\.\\d+\\.\\d+\\.\\d+; connect with: rcloud vm ssh ${vm}`));
    expect(r.stdout).not.toContain("\r");
    expect(r.stdout).not.toContain("\x1b[");
    const api = (await server.req("GET", `/api/v1/vms/${vm}`)).json;
    expect(api.memory_mb).toBe(512);
    expect(api.disks).toEqual([
      expect.objectContaining({ type: "root", size_gb: 3 }),
      expect.objectContaining({ type: "data", size_gb: 2, driver: "scsi" }),
    ]);
  });

  test("list: aligned table, exact API JSON, names", async () => {
    const t = await cli(["vm", "list"]);
    expect(t.code).toBe(0);
    const lines = t.stdout.trimEnd().split("\n");
    const header = lines[0] as string;
    expect(header).toMatch(/^NAME +ID +STATE +HOST +VCPUS +MEMORY +IP +SSH +IMAGE +AGE$/);
    const row = lines.find((l) => l.startsWith(`${vm} `)) as string;
    expect(row).toBeDefined();
    expect(row.indexOf("running")).toBe(header.indexOf("STATE"));
    expect(row.slice(header.indexOf("HOST")).split(" ")[0]).toBe("local"); // the one host of libvirt.uri
    expect(row.indexOf("512M")).toBe(header.indexOf("MEMORY"));
    expect(row).toContain("kdevops@");
    expect(row).toContain("debian-13-generic-amd64");
    expect(row.slice(header.lastIndexOf("AGE"))).toMatch(/^\d+[smhd]$/);

    const j = await cli(["vm", "list", "-o", "json"]);
    expect(j.code).toBe(0);
    expect(JSON.parse(j.stdout)).toEqual((await server.req("GET", "/api/v1/vms")).json);

    const n = await cli(["vm", "list", "-o", "names"]);
    expect(n.code).toBe(0);
    expect(n.stdout.split("\n")).toContain(vm);
    expect(n.stdout.split("\n").every((l) => !l.includes(" "))).toBe(true);
  });

  test("show: details, json and yaml; global flags before the command", async () => {
    const r = await cli(["vm", "show", vm]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^Name: +${vm}$`, "m"));
    expect(r.stdout).toMatch(/^State: +running$/m);
    expect(r.stdout).toMatch(/^Memory: +512M \(512 MiB\)$/m);
    expect(r.stdout).toMatch(/^ +data +2G +scsi +qcow2 +kdevops0$/m);
    const y = await cli(["-o", "yaml", "vm", "show", vm]);
    expect(y.code).toBe(0);
    expect(parseYaml(y.stdout).name).toBe(vm);
    const j = await cli(["--endpoint", server.url, "vm", "show", vm, "--output=json"], { RCLOUD_ENDPOINT: "http://127.0.0.1:1" });
    expect(j.code).toBe(0);
    expect(JSON.parse(j.stdout).name).toBe(vm);
  });

  test("stop, stop again (409 → 4), start, reboot", async () => {
    const s = await cli(["vm", "stop", vm, "--force"]);
    expect(s.code).toBe(0);
    expect(s.stdout).toBe(`Stopped VM ${vm}, stopped\n`);
    const again = await cli(["vm", "stop", vm]);
    expect(again.code).toBe(4);
    expect(again.stderr).toMatch(/^rcloud: .+\n$/);
    const st = await cli(["vm", "start", vm, "-o", "json"]);
    expect(st.code).toBe(0);
    expect(JSON.parse(st.stdout).state).toBe("running");
    const rb = await cli(["vm", "reboot", vm]);
    expect(rb.code).toBe(0);
    expect(rb.stdout).toContain(`Rebooted VM ${vm}`);
  });

  test("vm set and vm disk add/remove change the VM in place; what waits is said; bad input → 2 or 5", async () => {
    // Running: more vCPUs than it was made for wait for the next stop and start.
    const up = await cli(["vm", "set", vm, "--vcpus", "2"]);
    expect({ code: up.code, stderr: up.stderr }).toEqual({ code: 0, stderr: "" });
    expect(up.stdout).toBe(`Changed VM ${vm}: 1 vCPUs, 512M memory, running\nAt its next stop and start it gets: 2 vCPUs, max 2 vCPUs (rcloud vm set ${vm} --restart applies it now)\n`);
    expect((await cli(["vm", "show", vm])).stdout).toMatch(/\nPending: +2 vCPUs, max 2 vCPUs at the next stop and start\n/);
    // Stopped: everything goes into its definition at once.
    expect((await cli(["vm", "stop", vm, "--force"])).code).toBe(0);
    const set = await cli(["vm", "set", vm, "--memory", "1G", "-o", "json"]);
    expect(set.code).toBe(0);
    const j = JSON.parse(set.stdout);
    expect({ vcpus: j.vcpus, memory: j.memory_mb, restart: j.restart_required }).toEqual({ vcpus: 2, memory: 1024, restart: false });
    const add = await cli(["vm", "disk", "add", vm, "1G", "3G,type=nvme"]);
    expect(add.code).toBe(0);
    expect(add.stdout).toBe(`Added 2 disks to VM ${vm}: kdevops0 (2G scsi), kdevops1 (1G virtio), kdevops2 (3G nvme)\n`);
    const rm = await cli(["vm", "disk", "remove", vm, "kdevops0"]);
    expect(rm.stdout).toBe(`Removed kdevops0 from VM ${vm}; its data disks: kdevops1 (1G virtio), kdevops2 (3G nvme)\n`);
    const shrink = await cli(["vm", "set", vm, "--disk", "1G"]);
    expect(shrink.code).toBe(5);
    expect(shrink.stderr).toContain("root_disk_gb: the root disk cannot shrink");
    expect((await cli(["vm", "disk", "remove", vm, "sda"])).code).toBe(2);
    expect((await cli(["vm", "disk", "grow", vm, "1G"])).code).toBe(2);
    expect((await cli(["vm", "set", vm])).code).toBe(2);
    expect((await cli(["vm", "start", vm])).code).toBe(0);
  });

  test("console prints the API's console information", async () => {
    const r = await cli(["vm", "console", vm]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^Console: +serial$/m);
    expect(r.stdout).toMatch(new RegExp(`^Attach: +virsh .* console ${vm}`, "m"));
    const j = await cli(["vm", "console", vm, "-o", "json"]);
    expect(JSON.parse(j.stdout)).toEqual((await server.req("GET", `/api/v1/vms/${vm}/console`)).json);
  });

  test("ssh execs ssh with host, user, key and accept-new (RCLOUD_SSH_BINARY=/bin/echo)", async () => {
    const ip = (await server.req("GET", `/api/v1/vms/${vm}`)).json.ip_address;
    const r = await cli(["vm", "ssh", vm, "--", "-v", "uname", "-a"], { RCLOUD_SSH_BINARY: "/bin/echo" });
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`-o StrictHostKeyChecking=accept-new -i ${home}/.ssh/id_ed25519 kdevops@${ip} -v uname -a\n`);
    const f = await cli(["vm", "ssh", vm], { RCLOUD_SSH_BINARY: "/bin/false" });
    expect(f.code).toBe(1); // ssh's exit code
  });

  test("delete without --yes does not prompt when stdin is not a TTY; then 404 → 3", async () => {
    const d = await cli(["vm", "delete", vm]);
    expect(d.code).toBe(0);
    expect(d.stdout).toMatch(new RegExp(`^Deleted VM ${vm} \\(vm-[a-z0-9]+\\)\n$`));
    const s = await cli(["vm", "show", vm]);
    expect(s.code).toBe(3);
    expect(s.stdout).toBe("");
    expect(s.stderr).toBe(`rcloud: ${(await server.req("GET", `/api/v1/vms/${vm}`)).json.error.message}\n`);
    expect((await cli(["vm", "delete", vm, "--yes"])).code).toBe(3);
  });
});

describe("user networking", () => {
  const vm = name("user");

  test("ssh uses the forwarded port; --wait times out (7) while nothing answers on it", async () => {
    created.push(vm);
    const r = await cli(["vm", "create", vm, "--image", "debian13", "--network", "user", "--no-ssh-key", "--ssh-user", "dev", "--wait", "--timeout", "2s"]);
    expect(r.code).toBe(7);
    expect(r.stdout).toMatch(new RegExp(`\\[\\d+(\\.\\d)?s\\] ${vm}: running, waiting for SSH on 127\\.0\\.0\\.1:\\d+`));
    expect(r.stderr).toMatch(new RegExp(`^rcloud: timed out after 2s waiting for VM ${vm} \\(running, waiting for SSH on 127\\.0\\.0\\.1:\\d+\\)\n$`));
    const port = (await server.req("GET", `/api/v1/vms/${vm}`)).json.ssh_port;
    const s = await cli(["vm", "ssh", vm, "-i", join(home, ".ssh", "id_ed25519.pub")], { RCLOUD_SSH_BINARY: "/bin/echo" });
    expect(s.code).toBe(0);
    expect(s.stdout).toBe(`-o StrictHostKeyChecking=accept-new -p ${port} -i ${home}/.ssh/id_ed25519 dev@127.0.0.1\n`);
    expect((await cli(["vm", "delete", vm, "-y", "-o", "json"])).code).toBe(0);
  });
});

describe("errors and exit codes", () => {
  test("name taken → 4, bad image → 5, bad size → 2, unknown flag → 2", async () => {
    const vm = name("dup");
    created.push(vm);
    expect((await cli(["vm", "create", vm, "--image", "debian13", "--no-ssh-key", "-o", "json"])).code).toBe(0);
    const dup = await cli(["vm", "create", vm, "--image", "debian13", "--no-ssh-key"]);
    expect(dup.code).toBe(4);
    expect(dup.stderr).toMatch(/^rcloud: .*exists/);

    const img = await cli(["vm", "create", name("img"), "--image", "no-such-image"]);
    expect(img.code).toBe(5);
    expect(img.stderr).toBe("rcloud: no base image 'no-such-image'; available: debian13\n");

    for (const bad of [["--memory", "lots"], ["--memory", "0"], ["--disk", "1.5G"], ["--data-disk", "10G,type=floppy"], ["--network", "wifi"], ["--vcpus", "two"], ["--timeout", "soon"]]) {
      const r = await cli(["vm", "create", name("size"), "--image", "debian13", ...bad]);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(`'${bad[1]}'`);
    }
    const flag = await cli(["vm", "list", "--colour"]);
    expect(flag.code).toBe(2);
    expect(flag.stderr).toBe("rcloud: unknown flag '--colour' for 'rcloud vm list'; see 'rcloud vm list --help'\n");
    expect((await cli(["vm", "show"])).code).toBe(2);
    expect((await cli(["vm", "frobnicate"])).code).toBe(2);
    expect((await cli(["vm", "list", "-o", "xml"])).code).toBe(2);
    expect((await cli(["vm", "delete", vm, "--yes"])).code).toBe(0);
  });

  test("unreachable endpoint → 6, naming the URL", async () => {
    const r = await cli(["vm", "list"], { RCLOUD_ENDPOINT: "http://127.0.0.1:1" });
    expect(r.code).toBe(6);
    expect(r.stderr).toContain("http://127.0.0.1:1");
    expect(r.stderr).toStartWith("rcloud: cannot reach the rcloud server");
  });

  test("the token goes into the Authorization header and is never printed", async () => {
    let auth: string | null = null;
    const fake = Bun.serve({
      port: 0,
      hostname: "127.0.0.1",
      fetch(req) {
        auth = req.headers.get("authorization");
        return Response.json({ error: { code: "unauthorized", message: "invalid token" } }, { status: 401 });
      },
    });
    try {
      const r = await cli(["vm", "list", "--token", "s3cret-token"], { RCLOUD_ENDPOINT: `http://127.0.0.1:${fake.port}` });
      expect(auth as string | null).toBe("Bearer s3cret-token");
      expect(r.code).toBe(1);
      expect(r.stderr).toBe("rcloud: invalid token\n");
      const e = await cli(["status"], { RCLOUD_ENDPOINT: `http://127.0.0.1:${fake.port}`, RCLOUD_TOKEN: "env-token" });
      expect(auth as string | null).toBe("Bearer env-token");
      expect(e.stderr + e.stdout).not.toContain("env-token");
    } finally {
      fake.stop(true);
    }
  });
});

describe("other commands", () => {
  test("image list / show, status", async () => {
    const l = await cli(["image", "list"]);
    expect(l.code).toBe(0);
    expect(l.stdout).toMatch(/^NAME +ID +FILE +FORMAT +SIZE +ON DISK +HOSTS\ndebian13 +debian-13-generic-amd64 +debian-13-generic-amd64\.raw +raw +1G +0M +local\n$/);
    expect((await cli(["image", "list", "-o", "names"])).stdout).toBe("debian13\n");
    const s = await cli(["image", "show", "debian13", "-o", "json"]);
    expect(JSON.parse(s.stdout).file_name).toBe("debian-13-generic-amd64.raw");
    expect((await cli(["image", "show", "nope"])).code).toBe(3);
    const st = await cli(["status"]);
    expect(st.code).toBe(0);
    expect(st.stdout).toMatch(/^Hypervisor: +TEST /m);
    expect(st.stdout).toMatch(/^Storage: +pool rctest-cli-/m);
  });

  test("help for every command; existing commands unchanged", async () => {
    const top = await cli(["--help"]);
    expect(top.code).toBe(0);
    expect(top.stdout).toContain("7  timeout (--wait)");
    for (const c of ["vm create", "vm list", "vm show", "vm start", "vm stop", "vm reboot", "vm delete", "vm console", "vm ssh", "vm set", "vm disk", "image list", "image show", "image copy", "host list", "host show", "host cordon", "host uncordon", "status", "completion"]) {
      const r = await cli([...c.split(" "), "--help"]);
      expect(r.code).toBe(0);
      expect(r.stdout).toStartWith(`Usage: rcloud ${c}`);
    }
    expect((await cli(["vm", "console", "--help"])).stdout).toContain("websocket");
    const v = await cli(["version"]);
    expect(v.stdout).toStartWith("rcloud ");
    const u = await cli(["bogus"]);
    expect(u.code).toBe(2);
  });

  test("serve, hv-info and terraform-provider: --help prints usage and starts nothing; a bad flag is a usage error", async () => {
    for (const c of ["serve", "hv-info", "terraform-provider"]) {
      const r = await cli([c, "--help"]);
      expect(r.code).toBe(0);
      expect(r.stdout).toStartWith(`Usage: rcloud ${c}`);
    }
    // Each would otherwise run (serve until a signal): the test's timeout is the failure.
    const bad = await cli(["serve", "--port", "1"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("unknown flag '--port' for 'rcloud serve'");
    const missing = await cli(["serve", "--config"]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain("--config needs a value");
    expect((await cli(["terraform-provider", "--bogus"])).code).toBe(2);
  });

  test("completion bash passes bash -n and completes commands, flags and VM names", async () => {
    const r = await cli(["completion", "bash"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("complete -F _rcloud rcloud");
    const file = join(home, "rcloud.bash");
    writeFileSync(file, r.stdout);
    const syntax = Bun.spawnSync(["bash", "-n", file], { stderr: "pipe" });
    expect(syntax.stderr.toString()).toBe("");
    expect(syntax.exitCode).toBe(0);

    const vm = name("compl");
    created.push(vm);
    expect((await server.req("POST", "/api/v1/vms", { name: vm, image: "debian13" })).status).toBe(201);
    const complete = bashCompleter(r.stdout, home, server.url);
    expect((await complete("rcloud v")).sort()).toEqual(["version", "vm"]);
    expect(await complete("rcloud vm s")).toEqual(["show", "start", "stop", "ssh", "set", "snapshot"]);
    expect(await complete("rcloud vm create x --ne")).toEqual(["--network"]);
    expect(await complete("rcloud vm create x --network ")).toEqual(["bridge", "user", "none"]);
    expect(await complete("rcloud vm create x --image ")).toEqual(["debian13"]);
    expect(await complete("rcloud vm show ")).toContain(vm);
    expect(await complete("rcloud -o ")).toEqual(["table", "json", "yaml", "names"]);
    await server.req("DELETE", `/api/v1/vms/${vm}`);
  });
});
