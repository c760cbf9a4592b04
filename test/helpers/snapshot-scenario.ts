/**
 * The snapshot scenario both drivers run on a real TCG guest over SSH (root in the guest, which
 * the tiny image gives the request's key too). The guest runs from its initramfs, so "a file"
 * is a marker written to the data disk (kdevops0, /dev/vdb) with fsync and read back after
 * dropping the page cache, i.e. from the disk:
 *
 *   running: marker + a background process → snapshot (memory) → process killed, marker
 *   zeroed → revert → the same PID runs and the marker is back;
 *   stopped: marker, stop → snapshot (disk only) → start, marker zeroed → revert (the VM ends
 *   stopped) → start → the marker is back;
 *   the memory snapshot again, from the stopped VM: it starts from it, the PID running again;
 *
 * and every refusal on the way (unknown VM or snapshot, bad name, duplicate, the wrong kind
 * for the VM's state), the CLI's list, the operation events, and a VM delete that takes its
 * snapshots along (`leftovers` reads what the driver would have left behind).
 */
import { expect } from "bun:test";
import { runCliProcess } from "./cli.ts";
import { uniqueName } from "./rig.ts";
import type { TestServer } from "./server.ts";
import { makeSshKey, sshRun, waitForSsh } from "./ssh.ts";

const SECTOR = 8; // where the marker goes on /dev/vdb (512-byte sectors)

export async function snapshotScenario(server: TestServer, leftovers: (vm: { id: string; name: string }) => Promise<string[]>): Promise<void> {
  const key = makeSshKey();
  const name = uniqueName("snap").slice(0, 40);
  const created = await server.req("POST", "/api/v1/vms", {
    name,
    image: "rcloud-tiny",
    ssh_public_key: key.publicKey,
    network: { mode: "user", restrict: true },
    extra_disks: [{ size_gb: 1 }],
  });
  expect(created.status).toBe(201);
  const vm = created.json;
  const guest = { port: vm.ssh_port as number, user: "root", key: key.privateKey };
  const sh = (cmd: string) => sshRun(guest, cmd, 30);
  const writeMarker = (text: string) => sh(`printf '%s' '${text}' | dd of=/dev/vdb bs=512 seek=${SECTOR} conv=notrunc,fsync 2>/dev/null; sync`);
  const zeroMarker = () => sh(`dd if=/dev/zero of=/dev/vdb bs=512 seek=${SECTOR} count=1 conv=notrunc,fsync 2>/dev/null; sync`);
  const readMarker = async () => (await sh(`sync; echo 3 > /proc/sys/vm/drop_caches; dd if=/dev/vdb bs=512 skip=${SECTOR} count=1 2>/dev/null | tr -d '\\000'`)).trim();
  const snaps = (ref = vm.id) => server.req("GET", `/api/v1/vms/${ref}/snapshots`);
  const take = (body: unknown, ref = vm.id) => server.req("POST", `/api/v1/vms/${ref}/snapshots`, body);
  const revert = (snap: string) => server.req("POST", `/api/v1/vms/${vm.id}/snapshots/${snap}/revert`);

  await waitForSsh(guest, "true");

  // ---- refusals ----
  expect((await snaps()).json).toEqual({ snapshots: [] });
  const unknownVm = await take({ name: "s1" }, "no-such-vm-snap");
  expect([unknownVm.status, unknownVm.json.error.code]).toEqual([404, "not_found"]);
  expect((await snaps("no-such-vm-snap")).status).toBe(404);
  for (const bad of ["bad name", "-dash", "x".repeat(64), "a/b", "", "1", "42"]) {
    const r = await take({ name: bad });
    expect(`${bad}: ${r.status} ${r.json.error.code}`).toBe(`${bad}: 422 validation_error`);
  }
  const noDiskOnly = await take({ name: "d0", memory: false });
  expect([noDiskOnly.status, noDiskOnly.json.error.code]).toEqual([409, "invalid_state"]);
  expect(noDiskOnly.json.error.message).toContain("stop it first");

  // ---- memory: a running guest goes on where it was ----
  await writeMarker("RCLOUD-SNAP-MEM");
  const pid = (await sh("setsid sleep 86400 </dev/null >/dev/null 2>&1 & echo $!")).trim();
  expect(pid).toMatch(/^\d+$/);
  const mem = await take({ name: "mem-1" });
  expect(mem.status).toBe(201);
  expect(mem.json).toMatchObject({ name: "mem-1", memory: true, state: "running" });
  expect(Date.parse(mem.json.created_at)).toBeGreaterThan(Date.parse(vm.created_at) - 2000);
  const dup = await take({ name: "mem-1" });
  expect([dup.status, dup.json.error.code]).toEqual([409, "snapshot_exists"]);

  await sh(`kill ${pid}; sleep 1`);
  await zeroMarker();
  expect(await readMarker()).toBe("");
  expect((await sh(`kill -0 ${pid} 2>/dev/null && echo alive || echo gone`)).trim()).toBe("gone");

  const back = await revert("mem-1");
  expect(back.status).toBe(200);
  expect(back.json.state).toBe("running");
  const after = await waitForSsh(guest, `kill -0 ${pid} 2>/dev/null && cat /proc/${pid}/cmdline | tr '\\000' ' ' || echo gone`);
  expect(after.trim()).toBe("sleep 86400");
  expect(await readMarker()).toBe("RCLOUD-SNAP-MEM");

  // ---- disk only: taken stopped, reverted → stopped, the disk as it was ----
  await writeMarker("RCLOUD-SNAP-DSK");
  expect((await server.req("POST", `/api/v1/vms/${vm.id}/stop`)).json.state).toBe("stopped");
  const noMemory = await take({ name: "m0", memory: true });
  expect([noMemory.status, noMemory.json.error.code]).toEqual([409, "invalid_state"]);
  expect(noMemory.json.error.message).toContain("start it");
  const disk = await take({ name: "disk_1.a" });
  expect(disk.status).toBe(201);
  expect(disk.json).toMatchObject({ name: "disk_1.a", memory: false, state: "stopped", vm_state_bytes: null });

  expect((await server.req("POST", `/api/v1/vms/${vm.id}/start`)).json.state).toBe("running");
  await waitForSsh(guest, "true");
  await zeroMarker();
  expect(await readMarker()).toBe("");
  const reverted = await revert("disk_1.a");
  expect(reverted.status).toBe(200);
  expect(reverted.json.state).toBe("stopped");
  expect((await server.req("POST", `/api/v1/vms/${vm.id}/start`)).json.state).toBe("running");
  await waitForSsh(guest, "true");
  expect(await readMarker()).toBe("RCLOUD-SNAP-DSK");

  // ---- memory, reverted from a stopped VM: it starts from the snapshot ----
  expect((await server.req("POST", `/api/v1/vms/${vm.id}/stop?force=true`)).json.state).toBe("stopped");
  const fromStopped = await revert("mem-1");
  expect(fromStopped.status).toBe(200);
  expect(fromStopped.json.state).toBe("running");
  expect((await waitForSsh(guest, `cat /proc/${pid}/cmdline | tr '\\000' ' '`)).trim()).toBe("sleep 86400");
  expect(await readMarker()).toBe("RCLOUD-SNAP-MEM");

  // ---- the list, from the API and the CLI ----
  const list = (await snaps()).json.snapshots;
  expect(list.map((s: { name: string; memory: boolean; state: string }) => [s.name, s.memory, s.state])).toEqual([
    ["mem-1", true, "running"],
    ["disk_1.a", false, "stopped"],
  ]);
  const cli = await runCliProcess(["vm", "snapshot", "list", vm.name, "-o", "json"], { RCLOUD_ENDPOINT: server.url, RCLOUD_TOKEN: undefined });
  expect(cli.code).toBe(0);
  expect(JSON.parse(cli.stdout).snapshots.map((s: { name: string }) => s.name)).toEqual(["mem-1", "disk_1.a"]);
  const table = await runCliProcess(["vm", "snapshot", "list", vm.name], { RCLOUD_ENDPOINT: server.url, RCLOUD_TOKEN: undefined });
  expect(table.stdout).toMatch(/^NAME\s+CREATED\s+MEMORY\s+STATE/);
  expect(table.stdout).toMatch(/mem-1\s+\S+\s+yes\s+running/);

  // ---- unknown snapshots and names, then delete ----
  for (const r of [await revert("nope"), await server.req("DELETE", `/api/v1/vms/${vm.id}/snapshots/nope`)]) {
    expect([r.status, r.json.error.code]).toEqual([404, "not_found"]);
    expect(r.json.error.message).toContain("mem-1");
  }
  const badRevert = await revert("bad!name");
  expect([badRevert.status, badRevert.json.error.code]).toEqual([422, "validation_error"]);
  const cliDelete = await runCliProcess(["vm", "snapshot", "delete", vm.name, "mem-1"], { RCLOUD_ENDPOINT: server.url, RCLOUD_TOKEN: undefined });
  expect(cliDelete.code).toBe(0);
  expect(cliDelete.stdout).toContain("Deleted snapshot mem-1");
  expect((await snaps()).json.snapshots.map((s: { name: string }) => s.name)).toEqual(["disk_1.a"]);

  // ---- events ----
  const events = await fetch(`${server.url}/api/v1/events?since=0&follow=false&type=operation&vm=${vm.id}`).then((r) => r.text());
  const ops = events
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as { action: string; detail: string })
    .filter((e) => e.action.startsWith("snapshot-"))
    .map((e) => `${e.action} ${e.detail}`);
  expect(ops).toEqual(["snapshot-created mem-1", "snapshot-reverted mem-1", "snapshot-created disk_1.a", "snapshot-reverted disk_1.a", "snapshot-reverted mem-1", "snapshot-deleted mem-1"]);

  // ---- the VM's delete takes the remaining snapshot along ----
  expect((await server.req("DELETE", `/api/v1/vms/${vm.id}`)).status).toBe(200);
  expect((await snaps()).status).toBe(404);
  expect(await leftovers(vm)).toEqual([]);
}
