/**
 * Many hosts end to end: one rcloud on the rig's three extra libvirtd hosts, each in its own
 * mount and UTS namespace (its pool, image and kernel directories do not exist for rcloud),
 * reached over qemu+tls (hosta), qemu+ssh (hostb) and qemu+tcp (hostc). A base image is copied
 * to the host that lacks it through the API; a TCG guest is created, booted and logged into
 * over SSH on every host; a kernel that exists only on a host is accepted there for direct
 * boot; a host's libvirtd is SIGKILLed and restarted; and hosts with a bad TLS certificate,
 * an unknown SSH host key and a wrong URI each show a clear error while the others serve.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LibvirtClient, remoteProcedures as P } from "../../src/libvirt/index.ts";
import { HOST_NAMES, type HostName, removePool, rig, rigCommand, waitFor } from "../helpers/rig.ts";
import { startTestServer, type TestServer, waitHealthy } from "../helpers/server.ts";
import { makeSshKey, waitForSsh } from "../helpers/ssh.ts";

const pool = `rctest-hosts-${process.pid}`;
const stateDir = mkdtempSync(join(tmpdir(), "rcloud-hosts-state-"));
let server: TestServer;

function hostEntry(name: HostName, uri?: string) {
  const h = rig().hosts[name];
  return { name, uri: uri ?? h.uri, storage_pool_path: h.paths.pool, base_images_dir: h.paths.images, kernel_dir: h.paths.kernels };
}

function fleetConfig(hosts: ReturnType<typeof hostEntry>[]) {
  return {
    driver: "libvirt",
    server: { state_dir: stateDir },
    hosts,
    libvirt: { storage_pool_name: pool, domain_type: "qemu" },
    vm_defaults: { network_mode: "user", user_network_restrict: true, memory_mb: 192, vcpus: 1, root_disk_gb: 1, stop_timeout_s: 10 },
  };
}

async function onHost<T>(name: HostName, fn: (lv: LibvirtClient) => Promise<T>): Promise<T> {
  const lv = await LibvirtClient.connect(rig().hosts[name].uris.tcp);
  try {
    return await fn(lv);
  } finally {
    await lv.close();
  }
}

beforeAll(async () => {
  server = await startTestServer(fleetConfig(HOST_NAMES.map((n) => hostEntry(n))));
  await waitHealthy(server);
  await waitFor("all hosts online", async () => (await server.req("GET", "/api/v1/hosts")).json.hosts.every((h: { state: string }) => h.state === "online"), 60_000, 250);
});

afterAll(async () => {
  const vms = (await server.req("GET", "/api/v1/vms")).json?.vms ?? [];
  await Promise.all(vms.map((vm: { id: string }) => server.req("DELETE", `/api/v1/vms/${vm.id}`)));
  await server.stop();
  for (const h of HOST_NAMES) await onHost(h, (lv) => removePool(lv, pool)).catch(() => {});
  // The image this test copied to hostc: hostc starts without it.
  rmSync(join(rig().hosts.hostc.rigPaths.images, "rcloud-tiny.qcow2"), { force: true });
});

describe("a fleet over TLS, SSH and TCP", () => {
  test("every host answers with its own hostname; images are listed per host", async () => {
    const hosts = (await server.req("GET", "/api/v1/hosts")).json.hosts;
    expect(hosts.map((h: { name: string; hostname: string }) => [h.name, h.hostname])).toEqual(HOST_NAMES.map((n) => [n, rig().hosts[n].hostname]));
    for (const h of hosts) {
      expect(h.uri).not.toContain("pkipath");
      expect(h.uri).not.toContain("keyfile");
      expect(h.uri).not.toContain("root@");
    }
    const img = (await server.req("GET", "/api/v1/images/rcloud-tiny")).json;
    expect(img.hosts).toEqual(["hosta", "hostb"]);
  });

  test("a VM pinned to a host without the image is refused; copying the image there through the API fixes it", async () => {
    const refused = await server.req("POST", "/api/v1/vms", { name: "hosts-nocopy", image: "rcloud-tiny", host: "hostc", start: false });
    expect(refused.status).toBe(422);
    expect(refused.json.error.code).toBe("image_not_found");
    expect(refused.json.error.message).toContain("/api/v1/images/rcloud-tiny/copy");
    const copied = await server.req("POST", "/api/v1/images/rcloud-tiny/copy", { to: "hostc" });
    expect(copied.status).toBe(200);
    expect(copied.json.hosts).toEqual(["hosta", "hostb", "hostc"]);
    expect((await server.req("POST", "/api/v1/images/rcloud-tiny/copy", { to: "hostc" })).status).toBe(409);
    // The bytes on hostc are those of the image on hosta (the copy's source; the shared
    // image cache may have been rebuilt since the rig seeded the hosts).
    const want = createHash("sha256").update(readFileSync(join(rig().hosts.hosta.rigPaths.images, "rcloud-tiny.qcow2"))).digest("hex");
    expect(createHash("sha256").update(readFileSync(join(rig().hosts.hostc.rigPaths.images, "rcloud-tiny.qcow2"))).digest("hex")).toBe(want);
  }, 120_000);

  test("a TCG guest is created, booted and logged into over SSH on every host", async () => {
    const key = makeSshKey();
    const created = await Promise.all(
      HOST_NAMES.map((host) => server.req("POST", "/api/v1/vms", { name: `e2e-${host}`, image: "rcloud-tiny", host, ssh_public_key: key.publicKey })),
    );
    for (const [i, r] of created.entries()) {
      expect(r.status).toBe(201);
      expect(r.json).toMatchObject({ host: HOST_NAMES[i], state: "running", ip_address: "127.0.0.1" });
    }
    // Each guest lives on its own host's libvirtd (looked at behind rcloud's back).
    for (const [i, host] of HOST_NAMES.entries()) {
      const names = await onHost(host, async (lv) => (await lv.call(P.connectListAllDomains, { need_results: 1, flags: 0 })).domains.map((d) => d.name));
      expect(names).toContain(`e2e-${host}`);
      expect(names).not.toContain(`e2e-${HOST_NAMES[(i + 1) % 3]}`);
    }
    const outputs = await Promise.all(created.map((r) => waitForSsh({ port: r.json.ssh_port, user: "kdevops", key: key.privateKey }, "hostname")));
    expect(outputs.map((o) => o.trim())).toEqual(HOST_NAMES.map((h) => `e2e-${h}`));
  }, 300_000);

  test("a kernel that exists only on a host is accepted there for direct boot; one that does not is refused naming the field", async () => {
    const { kernel, initrd } = rig().hosts.hostb.guest;
    const ok = await server.req("POST", "/api/v1/vms", { name: "hosts-kernel", image: "rcloud-tiny", host: "hostb", kernel, initrd, cmdline: "console=ttyS0", start: false });
    expect(ok.status).toBe(201);
    expect(ok.json).toMatchObject({ host: "hostb", kernel, initrd });
    const missing = await server.req("POST", "/api/v1/vms", { name: "hosts-kernel2", image: "rcloud-tiny", host: "hostb", kernel: `${rig().hosts.hostb.paths.kernels}/no-such-kernel`, start: false });
    expect(missing.status).toBe(422);
    expect(missing.json.error.field).toBe("kernel");
    expect(missing.json.error.message).toContain("hostb");
    await server.req("DELETE", "/api/v1/vms/hosts-kernel");
  }, 60_000);

  test("a host's libvirtd SIGKILLed and restarted: rcloud reconnects and reads its VMs back", async () => {
    process.kill(rig().hosts.hostc.libvirtdPid, "SIGKILL");
    await waitFor("hostc offline", async () => (await server.req("GET", "/api/v1/hosts/hostc")).json.state === "offline", 20_000, 250);
    // The other hosts keep serving meanwhile.
    expect((await server.req("GET", "/api/v1/vms/e2e-hosta")).json.state).toBe("running");
    rigCommand("start-instance", "hostc");
    await waitFor("hostc online", async () => (await server.req("GET", "/api/v1/hosts/hostc")).json.state === "online", 30_000, 250);
    const back = (await server.req("GET", "/api/v1/vms/e2e-hostc")).json;
    expect(back).toMatchObject({ host: "hostc", state: "running", host_state: "online" });
  }, 120_000);
});

describe("hosts that cannot be reached", () => {
  test("a bad TLS certificate, an unknown SSH host key and a wrong URI each give a clear error naming the host; the others serve", async () => {
    const r = rig();
    const tlsPort = r.hosts.hostb.tlsPort;
    const sshPort = r.hosts.hostc.sshPort;
    const bad = await startTestServer({
      ...fleetConfig([]),
      server: { state_dir: mkdtempSync(join(tmpdir(), "rcloud-badhosts-")) },
      hosts: [
        hostEntry("hosta"),
        { ...hostEntry("hostb"), name: "badtls", uri: `qemu+tls://127.0.0.1:${tlsPort}/system?pkipath=${r.tls.rogueCaPkipath}` },
        { ...hostEntry("hostc"), name: "badssh", uri: `qemu+ssh://${r.ssh.user}@127.0.0.1:${sshPort}/system?keyfile=${r.ssh.keyfile}&known_hosts=${r.ssh.emptyKnownHosts}` },
        { ...hostEntry("hostc"), name: "wronguri", uri: "qemu+tcp://127.0.0.1:1/system" },
      ],
    });
    try {
      await waitFor("hosta online and the bad hosts with their errors", async () => {
        const hosts = (await bad.req("GET", "/api/v1/hosts")).json.hosts as { name: string; state: string; last_error: string | null }[];
        return hosts.find((h) => h.name === "hosta")?.state === "online" && hosts.every((h) => h.name === "hosta" || h.last_error) ? hosts : null;
      }, 60_000, 250);
      const hosts = (await bad.req("GET", "/api/v1/hosts")).json.hosts as { name: string; state: string; last_error: string }[];
      const byName = Object.fromEntries(hosts.map((h) => [h.name, h]));
      expect(byName.badtls!.state).toBe("offline");
      expect(byName.badtls!.last_error).toMatch(/certificate|CA/i);
      expect(byName.badtls!.last_error).toContain(`127.0.0.1:${tlsPort}`);
      expect(byName.badssh!.state).toBe("offline");
      expect(byName.badssh!.last_error).toContain("Host key verification failed");
      expect(byName.badssh!.last_error).toContain("127.0.0.1");
      expect(byName.wronguri!.state).toBe("offline");
      expect(byName.wronguri!.last_error).toContain("127.0.0.1:1");
      // Health is up (a host serves); creates go to the one that answers.
      expect((await bad.req("GET", "/api/v1/health")).status).toBe(200);
      const vm = await bad.req("POST", "/api/v1/vms", { name: "hosts-bad-ok", image: "rcloud-tiny", start: false });
      expect(vm.status).toBe(201);
      expect(vm.json.host).toBe("hosta");
      await bad.req("DELETE", "/api/v1/vms/hosts-bad-ok");
    } finally {
      await bad.stop();
    }
  }, 120_000);
});
