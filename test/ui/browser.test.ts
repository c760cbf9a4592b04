/**
 * The web page (/ui/) in a real browser: the single executable built by scripts/build.sh
 * serves it (auth on, the direct QEMU driver, a TCG guest from the bootable test disk), and
 * Debian's chromium, headless, is driven over the DevTools protocol: the token prompt, the
 * host panel, a VM created with the form (with a data disk and an SSH key, both seen in the
 * guest over SSH), its row following the event stream (a stop and a start made behind the
 * page's back show up without a reload), its serial console with the boot text and a command
 * typed into it, an API error shown in the API's words, the console log downloaded, reboot,
 * stop, start and delete from the page (each but start confirmed). Every request the page makes goes to
 * rcloud. Screenshots of each step go to $RCLOUD_TEST_ARTIFACTS/ui (default
 * test-artifacts/ui); the list and the console are checked not to be blank.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { copyFileSync, existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { stringify } from "yaml";
import { createToken } from "../../src/auth/index.ts";
import { launchChromium, type Page } from "../helpers/cdp.ts";
import { BLOCK_SERIAL_LINES } from "../helpers/guest.ts";
import { decodePng, inkRatio } from "../helpers/png.ts";
import { uniqueName } from "../helpers/rig.ts";
import { makeSshKey, waitForSsh } from "../helpers/ssh.ts";
import { cleanupState, DISK_IMAGE, tempDir } from "../qemu/helpers.ts";

const repo = resolve(import.meta.dir, "../..");
const artifacts = join(process.env.RCLOUD_TEST_ARTIFACTS ?? join(repo, "test-artifacts"), "ui");
const root = tempDir("ui");
let rcloud: ReturnType<typeof Bun.spawn> | null = null;
let browser: { page: Page; close: () => Promise<void> } | null = null;
let url = "";
let token = "";

async function freePort(): Promise<number> {
  const s = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = s.port;
  s.stop(true);
  return port;
}

beforeAll(async () => {
  if (!existsSync(DISK_IMAGE)) throw new Error(`${DISK_IMAGE} missing: run scripts/lib/disk-image.sh (scripts/test does)`);
  rmSync(artifacts, { recursive: true, force: true });
  mkdirSync(artifacts, { recursive: true });
  const exe = join(root, "rcloud");
  const build = Bun.spawnSync([join(repo, "scripts/build.sh"), "--outfile", exe], { stderr: "pipe" });
  if (build.exitCode !== 0) throw new Error(`scripts/build.sh failed: ${build.stderr.toString()}`);
  const images = join(root, "images");
  mkdirSync(images, { recursive: true });
  copyFileSync(DISK_IMAGE, join(images, "rcloud-tiny.qcow2"));
  const tokens = join(root, "tokens.json");
  token = createToken(tokens, { name: "ui", role: "admin", project: null }).token;
  const port = await freePort();
  url = `http://127.0.0.1:${port}`;
  writeFileSync(
    join(root, "rcloud.yaml"),
    stringify({
      server: { bind_address: `127.0.0.1:${port}` },
      driver: "qemu",
      qemu: { accel: "tcg", state_dir: join(root, "state") },
      images: { base_images_dir: images },
      vm_defaults: { network_mode: "user", user_network_restrict: true, memory_mb: 128, vcpus: 1, root_disk_gb: 1, stop_timeout_s: 60 },
      auth: { enabled: true, tokens_file: tokens },
      logging: { level: "warn", format: "text" },
    }),
  );
  rcloud = Bun.spawn([exe, "serve", "--config", join(root, "rcloud.yaml")], { stdout: "ignore", stderr: "pipe" });
  for (let i = 0; i < 600; i++) {
    if ((await fetch(`${url}/api/v1/health`).then((r) => r.status).catch(() => 0)) === 200) break;
    await Bun.sleep(100);
  }
  browser = await launchChromium(join(root, "profile"));
}, 180_000);

afterAll(async () => {
  await browser?.close();
  rcloud?.kill("SIGTERM");
  await rcloud?.exited;
  await cleanupState(root);
});

async function shot(page: Page, name: string, selector?: string): Promise<number> {
  if (!selector) await page.evaluate("scrollTo(0, 0)");
  const png = await page.screenshot(join(artifacts, `${name}.png`), selector);
  return inkRatio(decodePng(png));
}

const rowState = (name: string) => `document.querySelector('#vm-list tr[data-name="${name}"]')?.dataset.state`;

test("token, hosts, create with the form, live updates, console, an API error, reboot, stop, start and delete", async () => {
  const page = browser!.page;
  const navigations: string[] = [];
  page.on("Page.frameNavigated", (p) => navigations.push(String((p.frame as { url: string }).url)));

  // Auth is on: the page asks for a token and keeps it in sessionStorage.
  await page.navigate(`${url}/ui/`);
  await page.waitFor("!document.getElementById('token-form').hidden", 15_000, "the token form");
  await shot(page, "01-token");
  const requestsBeforeToken = page.requests.length;
  await page.evaluate(`document.getElementById('token').value = ${JSON.stringify(token)}`);
  await page.evaluate("document.getElementById('token-form').requestSubmit()");
  await page.waitFor("!document.getElementById('app').hidden", 15_000, "the app after the token");
  expect(await page.evaluate("sessionStorage.getItem('rcloud.token')")).toBe(token);
  await page.waitFor("document.getElementById('stream-state').textContent === 'live'", 15_000, "the live event stream");
  await page.waitFor("document.querySelector('#host-list .host[data-host=\"local\"] .bar')", 15_000, "the host panel's bars");
  expect(await page.evaluate<string>("document.getElementById('host-list').textContent")).toMatch(/vCPUs: \d+ of \d+/);
  const navigationsAfterLogin = navigations.length;

  // Create with the form, with a SCSI data disk and an SSH key.
  const name = uniqueName("ui").slice(0, 30);
  const key = makeSshKey();
  await page.waitFor("document.querySelector('select[name=image] option[value=\"rcloud-tiny\"]')", 10_000, "the image list");
  await page.evaluate(`(() => {
    const f = document.getElementById('create-form');
    f.elements.name.value = ${JSON.stringify(name)};
    f.elements.image.value = 'rcloud-tiny';
    f.elements.memory_mb.value = '128';
    f.elements.network.value = 'user';
    f.elements.data_disks.value = '1:scsi';
    f.elements.ssh_public_key.value = ${JSON.stringify(key.publicKey)};
    f.requestSubmit();
  })()`);
  await page.waitFor(`${rowState(name)} === 'running'`, 120_000, `${name} running`);
  expect(await shot(page, "02-list-running", "#vms")).toBeGreaterThan(0.01);

  // Changes made elsewhere (here: the API, as another client) show up from the event stream.
  const api = (method: string, path: string) => fetch(`${url}/api/v1${path}`, { method, headers: { authorization: `Bearer ${token}` } });
  expect((await api("POST", `/vms/${name}/stop?force=true`)).status).toBe(200);
  await page.waitFor(`${rowState(name)} === 'stopped'`, 30_000, `${name} stopped by another client`);
  await shot(page, "03-stopped-elsewhere", "#vms");
  expect((await api("POST", `/vms/${name}/start`)).status).toBe(200);
  await page.waitFor(`${rowState(name)} === 'running'`, 30_000, `${name} running again`);
  await page.waitFor(`[...document.querySelectorAll('#event-log li')].some((li) => li.dataset.action === 'vm-stopped')`, 10_000, "vm-stopped in the event log");

  // The serial console: the boot text, then a command and its output.
  await page.click(`#vm-list tr[data-name="${name}"] button[data-action=console]`);
  const screen = `document.querySelector('.console-pane[data-vm="${name}"] .xterm-rows')?.innerText ?? ''`;
  await page.waitFor(`(${screen}).includes('RCLOUD-DISK-BOOTED')`, 180_000, "the guest's boot text");
  await page.waitFor(`(${screen}).includes('rcloud# ')`, 180_000, "the guest's shell prompt");
  await page.evaluate(`document.querySelector('.console-pane[data-vm="${name}"] .xterm-helper-textarea').focus()`);
  const word = `ui${Math.floor(Math.random() * 1e6)}`;
  await page.type(`echo ${word}-$((6*7))\r`);
  await page.waitFor(`(${screen}).includes('${word}-42')`, 60_000, "the command's output");
  expect(await shot(page, "04-console", `.console-pane[data-vm="${name}"] .terminal-host`)).toBeGreaterThan(0.02);

  // The form's key and data disk reached the guest: SSH in with that key, find the disk by its serial.
  const vm = (await (await api("GET", `/vms/${name}`)).json()) as { ssh_port: number; ssh_user: string };
  const serials = ["for d in /sys/block/sd*; do", ...BLOCK_SERIAL_LINES, '  echo "${s:--} $(( $(cat $d/size) * 512 ))"', "done"].join("\n");
  expect((await waitForSsh({ port: vm.ssh_port, user: vm.ssh_user, key: key.privateKey }, serials)).trim()).toBe(`kdevops0 ${1024 ** 3}`);

  // The console log, downloaded.
  await page.click(`.console-pane[data-vm="${name}"] button[data-action=download-log]`);
  const logUrl = `${url}/api/v1/vms/${encodeURIComponent((await (await api("GET", `/vms/${name}`)).json() as { id: string }).id)}/console/log`;
  await Bun.sleep(1000);
  expect(page.responses.find((r) => r.url === logUrl)?.status).toBe(200);

  // An API error, shown as the API words it: the name is taken.
  await page.evaluate(`(() => {
    const f = document.getElementById('create-form');
    f.elements.name.value = ${JSON.stringify(name)};
    f.elements.image.value = 'rcloud-tiny';
    f.requestSubmit();
  })()`);
  const error = await page.waitFor<string>("document.getElementById('error').hidden ? '' : document.getElementById('error').textContent", 30_000, "the error");
  expect(error).toBe(`a VM named '${name}' already exists; pick another name or delete it first`);
  await shot(page, "05-api-error");

  // Reboot from the page (confirmed): the event log gets vm-rebooted, the guest boots again, the row stays running.
  // The screen cleared first, so boot text on it is the new boot's.
  await page.evaluate(`document.querySelector('.console-pane[data-vm="${name}"] .xterm-helper-textarea').focus()`);
  await page.type("printf '\\033[2J\\033[H'\r");
  await page.waitFor(`!(${screen}).includes('RCLOUD-DISK-BOOTED')`, 30_000, "the cleared console");
  await page.click(`#vm-list tr[data-name="${name}"] button[data-action=reboot]`);
  await page.waitFor(`[...document.querySelectorAll('#event-log li')].some((li) => li.dataset.action === 'vm-rebooted')`, 30_000, "vm-rebooted in the event log");
  await page.waitFor(`(${screen}).includes('RCLOUD-DISK-BOOTED')`, 180_000, "the guest's boot text after the reboot");
  expect(await page.evaluate<string | undefined>(rowState(name))).toBe("running");
  await shot(page, "06-rebooted");

  // Stop (confirmed) and start from the page, then delete (confirmed).
  await page.click(`#vm-list tr[data-name="${name}"] button[data-action=stop]`);
  await page.waitFor(`${rowState(name)} === 'stopped'`, 120_000, `${name} stopped from the page`);
  await shot(page, "07-stopped", "#vms");
  await page.click(`#vm-list tr[data-name="${name}"] button[data-action=start]`);
  await page.waitFor(`${rowState(name)} === 'running'`, 60_000, `${name} started from the page`);
  await shot(page, "08-started", "#vms");
  await page.click(`#vm-list tr[data-name="${name}"] button[data-action=delete]`);
  await page.waitFor(`!document.querySelector('#vm-list tr[data-name="${name}"]')`, 60_000, `${name} gone from the list`);
  await shot(page, "09-deleted");
  expect(page.dialogs).toEqual([`reboot VM ${name}?`, `stop VM ${name}?`, `Delete VM ${name} and its disks?`]);
  expect((await api("GET", `/vms/${name}`)).status).toBe(404);

  // No reload after logging in, no polling of the list, nothing from anywhere but rcloud.
  expect(navigations.length).toBe(navigationsAfterLogin);
  expect(page.requests.slice(requestsBeforeToken).filter((r) => r.method === "GET" && r.url === `${url}/api/v1/vms`).length).toBe(1);
  expect(page.requests.map((r) => r.url).filter((u) => !u.startsWith(`${url}/`) && !u.startsWith("blob:") && !u.startsWith("data:"))).toEqual([]);
}, 600_000);
