/**
 * Terraform test harness: a real rcloud server (libvirtd test driver from the rig), the
 * provider served in-process in reattach mode (plaintext unix socket, TF_REATTACH_PROVIDERS),
 * and /usr/local/bin/terraform run in its own temp dir per step. Runs are async: the provider
 * lives on this event loop, so a blocking spawnSync would deadlock it. Temp dirs are removed at
 * the end (keep them with RCLOUD_TF_KEEP=1; RCLOUD_TF_DEBUG=1 shows the provider log).
 */
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LibvirtClient } from "../../src/libvirt/index.ts";
import { type ProviderServer, serveProvider } from "../../src/terraform/plugin.ts";
import { fleetConfig, mirrorFleetImages, newFleet, removeFleetPools, waitFleetOnline } from "../helpers/fleet.ts";
import { removePool, unixUri } from "../helpers/rig.ts";
import { mirrorToTestDriver, startTestServer, type TestServer, waitHealthy } from "../helpers/server.ts";

export const TERRAFORM = process.env.TF_ACC_TERRAFORM_PATH ?? "/usr/local/bin/terraform";

const tempDirs: string[] = [];

/** A temp dir removed by the fixture's stop(). */
export function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.push(dir);
  return dir;
}

export interface TfResult {
  code: number;
  stdout: string;
  stderr: string;
  /** stdout + stderr, for matching messages wherever Terraform put them. */
  out: string;
}

export interface Fixture {
  server: TestServer;
  provider: ProviderServer;
  /** Every VM a test creates is named with this prefix (cleanup deletes them all). */
  prefix: string;
  /** Environment for reattach runs. */
  env: Record<string, string>;
  cliConfig: string;
  /** The HCL terraform + provider blocks pointing at the test server. */
  header(endpoint?: string): string;
  stop(): Promise<void>;
}

/**
 * `fleet`: the server drives the three test-driver hosts of test/helpers/fleet.ts (alpha, beta,
 * gamma) instead of the one host of the rig's main daemon.
 */
export async function startFixture(tag: string, opts: { fleet?: boolean } = {}): Promise<Fixture> {
  const imagesDir = tempDir("rcloud-tf-images-");
  const image = join(imagesDir, "debian-13-generic-amd64-daily.raw");
  writeFileSync(image, "");
  truncateSync(image, 1024 ** 3); // sparse 1 GiB raw image, alias debian13
  const poolName = `rctest-tfpool-${tag}-${process.pid}`;
  const lv = await LibvirtClient.connect(unixUri("test")); // keeps the test driver's state alive
  const fleet = opts.fleet ? newFleet(poolName, imagesDir) : null;
  if (fleet) await mirrorFleetImages(fleet);
  else await mirrorToTestDriver(poolName, { imagesDir });
  const server = await startTestServer(
    fleet
      ? fleetConfig(fleet)
      : {
          libvirt: { uri: unixUri("test"), storage_pool_name: poolName, storage_pool_path: `/rctest/${poolName}` },
          images: { base_images_dir: imagesDir },
          vm_defaults: { network_mode: "bridge", network_bridge: "default", memory_mb: 256, vcpus: 1, root_disk_gb: 2 },
        },
  );
  await waitHealthy(server);
  if (fleet) await waitFleetOnline(server);
  const provider = await serveProvider({ quiet: !process.env.RCLOUD_TF_DEBUG });
  const cliDir = tempDir("rcloud-tf-cli-");
  const cliConfig = join(cliDir, "empty.tfrc");
  writeFileSync(cliConfig, "");
  const prefix = `rctest-tf${tag}-${process.pid % 100000}`;
  return {
    server,
    provider,
    prefix,
    cliConfig,
    env: { TF_REATTACH_PROVIDERS: provider.reattachConfig(), TF_CLI_CONFIG_FILE: cliConfig },
    header: (endpoint = server.url) =>
      `terraform {\n  required_providers {\n    rcloud = { source = "kdevops/rcloud" }\n  }\n}\n\nprovider "rcloud" {\n  endpoint = "${endpoint}"\n  timeout  = "2m"\n}\n`,
    async stop() {
      const list = await server.req("GET", "/api/v1/vms");
      for (const vm of (list.json?.vms ?? []) as { id: string; name: string }[]) {
        if (vm.name.startsWith(prefix)) await server.req("DELETE", `/api/v1/vms/${vm.id}`);
      }
      provider.stop();
      await server.stop();
      if (fleet) await removeFleetPools(fleet);
      else await removePool(lv, poolName);
      await lv.close();
      if (!process.env.RCLOUD_TF_KEEP) for (const d of tempDirs.splice(0)) rmSync(d, { recursive: true, force: true });
    },
  };
}

export function workdir(hcl?: string): string {
  const dir = tempDir("rcloud-tf-run-");
  if (hcl !== undefined) writeFileSync(join(dir, "main.tf"), hcl);
  return dir;
}

export function writeMain(dir: string, hcl: string): void {
  writeFileSync(join(dir, "main.tf"), hcl);
}

export async function tf(dir: string, args: string[], env: Record<string, string>): Promise<TfResult> {
  const base: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith("TF_")) base[k] = v;
  const proc = Bun.spawn([TERRAFORM, ...args], {
    cwd: dir,
    env: { ...base, CHECKPOINT_DISABLE: "1", TF_IN_AUTOMATION: "1", ...env },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  return { code, stdout, stderr, out: `${stdout}\n${stderr}` };
}

/** Runs terraform and fails with its output unless the exit code is one of `ok`. */
export async function tfOk(dir: string, args: string[], env: Record<string, string>, ok: number[] = [0]): Promise<TfResult> {
  const r = await tf(dir, args, env);
  if (!ok.includes(r.code)) throw new Error(`terraform ${args.join(" ")} exited ${r.code}:\n${r.out}`);
  return r;
}

export const apply = (dir: string, env: Record<string, string>) => tfOk(dir, ["apply", "-auto-approve", "-input=false", "-no-color"], env);
export const plan = (dir: string, env: Record<string, string>, extra: string[] = []) => tf(dir, ["plan", "-detailed-exitcode", "-input=false", "-no-color", ...extra], env);

export interface TfStateResource {
  address: string;
  type: string;
  mode: string;
  values: Record<string, unknown>;
}

/** `terraform show -json` → the root module's resources. */
export async function showState(dir: string, env: Record<string, string>): Promise<TfStateResource[]> {
  const r = await tfOk(dir, ["show", "-json", "-no-color"], env);
  const json = JSON.parse(r.stdout) as { values?: { root_module?: { resources?: TfStateResource[] } } };
  return json.values?.root_module?.resources ?? [];
}

export async function resourceValues(dir: string, env: Record<string, string>, address: string): Promise<Record<string, unknown>> {
  const res = (await showState(dir, env)).find((r) => r.address === address);
  if (!res) throw new Error(`${address} not in state`);
  return res.values;
}
