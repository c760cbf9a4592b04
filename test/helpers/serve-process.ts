/**
 * `rcloud serve` as a child process on the rig's libvirt test driver, with API tokens on and
 * one admin token: what the fuzzer and the soak talk to. A process of its own so that a crash
 * is seen as one and its RSS and file descriptors are its own (/proc/<pid>).
 */
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { stringify } from "yaml";
import { createToken } from "../../src/auth/index.ts";
import { LibvirtClient } from "../../src/libvirt/index.ts";
import { removePool, unixUri } from "./rig.ts";
import { fakeImageDir, mirrorToTestDriver } from "./server.ts";

export interface ServerProcess {
  baseUrl: string;
  token: string;
  pid: number;
  pool: string;
  /** True while the process runs. */
  alive(): boolean;
  /** Deletes every VM left, stops the process (SIGTERM, by PID), removes the pool and files. */
  stop(): Promise<void>;
}

function freePort(): number {
  const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = probe.port;
  probe.stop(true);
  return port;
}

/** Writes a config (extra merged over it, `extra.auth` into the auth section), starts
 * `bun src/main.ts serve` on the rig's test driver, waits until healthy. */
export async function spawnTestDriverServer(poolName: string, extra: Record<string, unknown> = {}, env: Record<string, string> = {}): Promise<ServerProcess> {
  const imagesDir = fakeImageDir();
  await mirrorToTestDriver(poolName, { imagesDir });
  return spawnServer(
    {
      libvirt: { uri: unixUri("test"), storage_pool_name: poolName, storage_pool_path: `/rctest/${poolName}` },
      images: { base_images_dir: imagesDir },
      vm_defaults: { network_mode: "none", memory_mb: 128, vcpus: 1, root_disk_gb: 1, memory_overcommit: 64, vcpu_overcommit: 64 },
      ...extra,
    },
    { uri: unixUri("test"), pool: poolName, dirs: [imagesDir] },
    env,
  );
}

/**
 * `rcloud serve` with `config` (its server and auth sections added: a free loopback port, a
 * tokens file with one admin token); `stop` removes `pool` from libvirt at `uri` and `dirs`.
 * `env`: extra environment variables for the server process.
 */
export async function spawnServer(
  config: Record<string, unknown>,
  cleanup: { uri: string; pool: string; dirs: string[] },
  env: Record<string, string> = {},
): Promise<ServerProcess> {
  const repo = resolve(import.meta.dir, "../..");
  const work = mkdtempSync(join(tmpdir(), "rcloud-serve-"));
  const tokensFile = join(work, "tokens.json");
  const { token } = createToken(tokensFile, { name: "fuzz-admin", role: "admin", project: null });
  const port = freePort();
  mkdirSync(join(work, "state"));
  const cfg = join(work, "rcloud.yaml");
  const { auth: authExtra, ...rest } = config;
  await Bun.write(
    cfg,
    stringify({
      server: { bind_address: `127.0.0.1:${port}`, state_dir: join(work, "state") },
      auth: { enabled: true, tokens_file: tokensFile, ...(authExtra as Record<string, unknown> | undefined) },
      logging: { level: "error", format: "text" },
      ...rest,
    }),
  );
  const proc = Bun.spawn([process.execPath, "src/main.ts", "serve", "--config", cfg], {
    cwd: repo,
    env: { ...process.env, ...env },
    stdout: "ignore",
    stderr: "inherit",
  });
  const baseUrl = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  while (!(await fetch(`${baseUrl}/api/v1/health`).then((r) => r.ok, () => false))) {
    if (proc.exitCode !== null || Date.now() > deadline) {
      proc.kill();
      throw new Error(`rcloud serve did not become healthy on port ${port} (exit ${proc.exitCode})`);
    }
    await Bun.sleep(100);
  }
  const auth = { authorization: `Bearer ${token}` };
  return {
    baseUrl,
    token,
    pid: proc.pid,
    pool: cleanup.pool,
    alive: () => proc.exitCode === null && proc.signalCode === null,
    stop: async () => {
      if (proc.exitCode === null) {
        const list = (await fetch(`${baseUrl}/api/v1/vms`, { headers: auth }).then((r) => r.json(), () => ({}))) as { vms?: { id: string }[] };
        for (const vm of list.vms ?? []) await fetch(`${baseUrl}/api/v1/vms/${vm.id}`, { method: "DELETE", headers: auth }).catch(() => {});
        proc.kill("SIGTERM");
        await proc.exited;
      }
      const lv = await LibvirtClient.connect(cleanup.uri);
      await removePool(lv, cleanup.pool);
      await lv.close();
      rmSync(work, { recursive: true, force: true });
      for (const d of cleanup.dirs) rmSync(d, { recursive: true, force: true });
    },
  };
}
