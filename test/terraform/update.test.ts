/**
 * rcloud_vm changed in place with the real `terraform` against rcloud on qemu:///system (TCG
 * guest from the tiny disk image, restricted user networking): apply, change memory_gb (within
 * max_memory_gb) and append a data disk, `plan` shows an in-place update, apply, and the VM
 * is the same one — same id, same boot, a file in its tmpfs still there — with the new
 * memory and disk seen by the guest; the next plan is empty. Then root_disk_gb grows and the
 * first data disk is removed, also in place (the guest sees both, same boot); a smaller
 * root_disk_gb is planned as a replacement that says why.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { LibvirtClient } from "../../src/libvirt/index.ts";
import { serveProvider, type ProviderServer } from "../../src/terraform/plugin.ts";
import { BLOCK_SERIAL_LINES, tinyDiskImageDir } from "../helpers/guest.ts";
import { removePool, rig, uniqueName, unixUri } from "../helpers/rig.ts";
import { startTestServer, waitHealthy, type TestServer } from "../helpers/server.ts";
import { makeSshKey, sshRun, waitForSsh } from "../helpers/ssh.ts";
import { memTotalFits } from "../helpers/update-scenario.ts";
import { apply, plan, resourceValues, tempDir, workdir, writeMain } from "./harness.ts";

const poolName = `rctest-tfupdate-${process.pid}`;
let server: TestServer;
let provider: ProviderServer;
let lv: LibvirtClient;
let env: Record<string, string>;

beforeAll(async () => {
  lv = await LibvirtClient.connect(unixUri("qemu"));
  server = await startTestServer({
    libvirt: { uri: unixUri("qemu"), storage_pool_name: poolName, storage_pool_path: join(rig().rigDir, "pools", poolName), domain_type: "qemu" },
    images: { base_images_dir: tinyDiskImageDir("tf-update-images") },
    vm_defaults: { network_mode: "user", user_network_restrict: true, stop_timeout_s: 30 },
  });
  await waitHealthy(server);
  provider = await serveProvider({ quiet: !process.env.RCLOUD_TF_DEBUG });
  const cli = join(tempDir("rcloud-tf-update-"), "empty.tfrc");
  await Bun.write(cli, "");
  env = { TF_REATTACH_PROVIDERS: provider.reattachConfig(), TF_CLI_CONFIG_FILE: cli };
});

afterAll(async () => {
  provider?.stop();
  for (const vm of (await server?.req("GET", "/api/v1/vms"))?.json?.vms ?? []) await server.req("DELETE", `/api/v1/vms/${vm.id}`);
  await server?.stop();
  if (lv) {
    await removePool(lv, poolName);
    await lv.close();
  }
});

test("memory_gb, a data disk added then one removed, root disk grown: in place, same VM and boot, next plan empty; a shrink replaces", async () => {
  const key = makeSshKey();
  const name = uniqueName("tfupd").slice(0, 40);
  const hcl = (memoryGb: number, disks: number[], rootGb = 1) => `terraform {
  required_providers {
    rcloud = { source = "kdevops/rcloud" }
  }
}
provider "rcloud" {
  endpoint = "${server.url}"
  timeout  = "5m"
}
resource "rcloud_vm" "dev" {
  name           = "${name}"
  image          = "rcloud-tiny"
  vcpus          = 1
  memory_gb      = ${memoryGb}
  max_memory_gb  = 0.5
  root_disk_gb   = ${rootGb}
  extra_disks    = [${disks.map((gb) => `{ size_gb = ${gb} }`).join(", ")}]
  network        = { mode = "user" }
  ssh_public_key = ${JSON.stringify(key.publicKey)}
}
`;
  const dir = workdir(hcl(0.25, [1]));
  await apply(dir, env);
  const v1 = await resourceValues(dir, env, "rcloud_vm.dev");
  expect(v1).toMatchObject({ memory_gb: 0.25, max_memory_gb: 0.5, restart_required: false, extra_disks: [{ size_gb: 1, type: "virtio" }] });
  const ssh = { port: v1.ssh_port as number, user: "root", key: key.privateKey };
  await waitForSsh(ssh, "true");
  const probe = "cat /proc/sys/kernel/random/boot_id; awk '/^MemTotal:/ {print $2}' /proc/meminfo; cat /tmp/uptime-marker 2>/dev/null; for f in /sys/block/*/serial; do echo $(cat $f); done | sort | tr '\\n' ' '";
  await sshRun(ssh, "echo still-here > /tmp/uptime-marker");
  const [boot1, mem1] = (await sshRun(ssh, probe)).trim().split("\n");
  expect((await plan(dir, env)).code).toBe(0);

  writeMain(dir, hcl(0.375, [1, 2]));
  const p = await plan(dir, env);
  expect(p.code).toBe(2);
  expect(p.stdout).toContain("will be updated in-place");
  expect(p.stdout).not.toContain("must be replaced");
  expect(p.stdout).toMatch(/memory_gb\s+= 0\.25 -> 0\.375/);
  await apply(dir, env);
  const v2 = await resourceValues(dir, env, "rcloud_vm.dev");
  expect(v2).toMatchObject({ id: v1.id, memory_gb: 0.375, restart_required: false, extra_disks: [{ size_gb: 1, type: "virtio" }, { size_gb: 2, type: "virtio" }] });

  // The same boot of the same guest, with 128 MiB more and the new disk (serial kdevops1).
  const deadline = Date.now() + 60_000;
  let seen: string[] = [];
  for (;;) {
    seen = (await sshRun(ssh, probe)).trim().split("\n");
    if ((seen[3] ?? "").includes("kdevops1") && Number(seen[1]) >= Number(mem1) + 120 * 1024) break;
    if (Date.now() > deadline) throw new Error(`the guest did not show the new disk and memory: ${seen.join(" | ")}`);
    await Bun.sleep(1000);
  }
  expect({ boot: seen[0], marker: seen[2], disks: seen[3]?.trim() }).toEqual({ boot: boot1, marker: "still-here", disks: "kdevops0 kdevops1" });
  expect(memTotalFits(Number(seen[1]), 384)).toBe(true);
  expect((await plan(dir, env)).code).toBe(0);

  // A bigger root disk and the first data disk gone: in place too.
  writeMain(dir, hcl(0.375, [2], 2));
  const grow = await plan(dir, env);
  expect(grow.code).toBe(2);
  expect(grow.stdout).toContain("will be updated in-place");
  expect(grow.stdout).not.toContain("must be replaced");
  expect(grow.stdout).not.toContain("forces replacement");
  expect(grow.stdout).toMatch(/root_disk_gb\s+= 1 -> 2\n/);
  expect(grow.out).toContain("Data disks will be deleted");
  await apply(dir, env);
  const v3 = await resourceValues(dir, env, "rcloud_vm.dev");
  expect(v3).toMatchObject({ id: v1.id, root_disk_gb: 2, restart_required: false, extra_disks: [{ size_gb: 2, type: "virtio" }] });
  const api = (await server.req("GET", `/api/v1/vms/${v1.id}`)).json;
  expect(api.disks.map((d: { type: string; serial: string | null; size_gb: number }) => [d.type, d.size_gb, d.type === "data" ? d.serial : null])).toEqual([
    ["root", 2, null],
    ["data", 2, "kdevops1"],
  ]);
  // The guest, not rebooted, has a 2 GiB disk without a serial (the root disk) and only kdevops1.
  const blocks = ["for d in /sys/block/vd*; do", ...BLOCK_SERIAL_LINES, '  echo "${s:--} $(( $(cat $d/size) * 512 ))"', "done", "cat /proc/sys/kernel/random/boot_id"].join("\n");
  const until = Date.now() + 60_000;
  let lines: string[] = [];
  for (;;) {
    lines = (await sshRun(ssh, blocks)).trim().split("\n");
    if (lines.includes(`- ${2 * 1024 ** 3}`) && !lines.some((l) => l.startsWith("kdevops0 "))) break;
    if (Date.now() > until) throw new Error(`the guest did not show the grown root disk and the removed data disk: ${lines.join(" | ")}`);
    await Bun.sleep(1000);
  }
  expect(lines.slice(0, -1).sort()).toEqual([`- ${2 * 1024 ** 3}`, `kdevops1 ${2 * 1024 ** 3}`]);
  expect(lines.at(-1)).toBe(boot1);
  expect((await plan(dir, env)).code).toBe(0);

  // A smaller root disk cannot be made in place: the plan replaces the VM and says why.
  writeMain(dir, hcl(0.375, [2], 1));
  const shrink = await plan(dir, env);
  expect(shrink.code).toBe(2);
  expect(shrink.stdout).toContain("must be replaced");
  expect(shrink.stdout).toMatch(/root_disk_gb\s+= 2 -> 1 # forces replacement/);
  expect(shrink.out).toContain("root_disk_gb goes from 2 to 1: a root disk cannot shrink");
}, 420_000);
