/**
 * The CLI's default key, end to end on qemu:///system with TCG: `rcloud vm create` without
 * --ssh-key installs ~/.ssh/id_ed25519.pub (through the cloud-init seed the libvirt driver
 * uploads), and `rcloud vm ssh` logs in with the matching private key and runs a command.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { LibvirtClient } from "../../src/libvirt/index.ts";
import { tinyDiskImageDir } from "../helpers/guest.ts";
import { removePool, rig, unixUri, waitFor } from "../helpers/rig.ts";
import { startTestServer, waitHealthy, type TestServer } from "../helpers/server.ts";

const repo = resolve(import.meta.dir, "../..");
const poolName = `rctest-clissh-${process.pid}`;
const vm = `rctest-clissh-${process.pid % 100000}`;
let server: TestServer;
let home: string;

async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const env: Record<string, string | undefined> = { ...process.env, RCLOUD_ENDPOINT: server.url, HOME: home, RCLOUD_TOKEN: undefined };
  const proc = Bun.spawn([process.execPath, join(repo, "src/main.ts"), ...args], { cwd: repo, env: env as Record<string, string>, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  return { code, stdout, stderr };
}

beforeAll(async () => {
  home = mkdtempSync(join(tmpdir(), "rcloud-cli-ssh-"));
  mkdirSync(join(home, ".ssh"), { mode: 0o700 });
  const kg = Bun.spawnSync(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "cli-ssh", "-f", join(home, ".ssh", "id_ed25519")]);
  if (kg.exitCode !== 0) throw new Error(`ssh-keygen failed (install openssh-client): ${kg.stderr.toString()}`);
  server = await startTestServer({
    libvirt: { uri: unixUri("qemu"), storage_pool_name: poolName, storage_pool_path: join(rig().rigDir, "pools", poolName), domain_type: "qemu" },
    images: { base_images_dir: tinyDiskImageDir("cli-ssh-images") },
    vm_defaults: { network_mode: "user", user_network_restrict: true, memory_mb: 256, vcpus: 1, root_disk_gb: 1 },
  });
  await waitHealthy(server);
});

afterAll(async () => {
  await server.req("DELETE", `/api/v1/vms/${vm}`);
  await server.stop();
  const lv = await LibvirtClient.connect(unixUri("qemu"));
  await removePool(lv, poolName);
  await lv.close();
});

test("vm create installs ~/.ssh/id_ed25519.pub by default; vm ssh logs in with it", async () => {
  const created = await cli(["vm", "create", vm, "--image", "rcloud-tiny", "--wait", "--timeout", "240s"]);
  expect({ code: created.code, stderr: created.stderr }).toEqual({ code: 0, stderr: "" });
  expect(created.stdout).toContain(`connect with: rcloud vm ssh ${vm}`);
  // dropbear may still be starting when the forwarded port first answers
  const login = await waitFor(
    "an SSH login through rcloud vm ssh",
    async () => {
      const r = await cli(["vm", "ssh", vm, "--", "-o", "BatchMode=yes", "-o", "UserKnownHostsFile=/dev/null", "id -un; hostname"]);
      return r.code === 0 ? r.stdout : null;
    },
    180_000,
    1000,
  );
  expect(login.trim().split("\n")).toEqual(["kdevops", vm]);
  const del = await cli(["vm", "delete", vm, "--yes"]);
  expect(del.code).toBe(0);
}, 300_000);
