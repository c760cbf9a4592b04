/**
 * The remote transports against the rig's fleet hosts (hosta, hostb, hostc: each its own
 * libvirtd in its own mount and UTS namespace, with an sshd inside it and a TLS listener
 * with certificates of the rig's CA). Every host over qemu+tls, qemu+ssh and qemu+tcp;
 * volume streams over TLS and SSH; keepalive and reconnection after a daemon restart or a
 * freeze on all three; and the failures an operator meets (unknown CA, a client certificate
 * from another CA, a name the certificate does not carry, no client certificate, an unknown
 * SSH host key, a wrong key, a wrong port or transport), each naming the host.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { hostname as machineHostname, tmpdir } from "node:os";
import { join } from "node:path";
import { ConnectError, ConnectionClosedError, LibvirtClient, LibvirtPool, remoteProcedures as P } from "../../src/libvirt/index.ts";
import { HOST_NAMES, rig, rigCommand, waitFor, type HostTransport } from "../helpers/rig.ts";
import { volumeRoundTrip } from "../helpers/volumes.ts";

const TRANSPORTS: HostTransport[] = ["tls", "ssh", "tcp"];
const cleanup: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanup.reverse()) await c().catch(() => {});
});

/** Connects with warnings collected; closes at the end of the file. */
async function connect(uri: string, opts: Parameters<typeof LibvirtClient.connect>[1] = {}): Promise<{ client: LibvirtClient; warnings: string[] }> {
  const warnings: string[] = [];
  const client = await LibvirtClient.connect(uri, { onWarning: (m) => warnings.push(m), ...opts });
  cleanup.push(() => client.close());
  return { client, warnings };
}

/** The ConnectError a connection attempt ends with (fails the test if it connects). */
async function connectError(uri: string, opts: Parameters<typeof LibvirtClient.connect>[1] = {}): Promise<ConnectError> {
  const outcome = await LibvirtClient.connect(uri, { connectTimeoutMs: 10_000, reconnect: false, ...opts }).then(
    async (c) => {
      await c.close();
      return new Error(`${uri} connected, but should not have`);
    },
    (e: unknown) => e,
  );
  expect(outcome).toBeInstanceOf(ConnectError);
  return outcome as ConnectError;
}

/** A copy of a URI with its query parameters changed (null removes one). */
function withParams(uri: string, changes: Record<string, string | null>): string {
  const [base, query = ""] = uri.split("?", 2) as [string, string?];
  const params = new URLSearchParams(query);
  for (const [k, v] of Object.entries(changes)) {
    if (v === null) params.delete(k);
    else params.set(k, v);
  }
  const q = [...params].map(([k, v]) => `${k}=${v}`).join("&");
  return q ? `${base}?${q}` : base;
}

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), "rctest-transports-"));
  cleanup.push(async () => rmSync(d, { recursive: true, force: true }));
  return d;
}

describe("transports: every host over every transport", () => {
  test("each host answers over tls, ssh and tcp with its own hostname, and no warning is raised on loopback", async () => {
    const seen = new Set<string>();
    for (const name of HOST_NAMES) {
      const host = rig().hosts[name];
      for (const t of TRANSPORTS) {
        const { client, warnings } = await connect(host.uris[t]);
        const { hostname } = await client.call(P.connectGetHostname, undefined);
        expect({ name, t, hostname }).toEqual({ name, t, hostname: host.hostname });
        expect(warnings).toEqual([]);
        seen.add(hostname);
      }
      expect(host.uri).toBe(host.uris[host.transport]);
    }
    expect(seen.size).toBe(3);
    expect(seen.has(machineHostname())).toBe(false);
  }, 90_000);

  test("the hosts' /srv/rcloud directories exist only inside their namespaces; hosta and hostb hold the tiny disk, hostc nothing; kernels everywhere", async () => {
    expect(existsSync("/srv/rcloud")).toBe(false);
    for (const name of HOST_NAMES) {
      const host = rig().hosts[name];
      const { client } = await connect(host.uris.tcp);
      const listed: Record<string, string[]> = {};
      for (const dir of ["images", "kernels"] as const) {
        const { pool } = await client.call(P.storagePoolCreateXml, {
          xml: `<pool type='dir'><name>rctest-${name}-${dir}-${process.pid}</name><target><path>${host.paths[dir]}</path></target></pool>`,
          flags: 0,
        });
        try {
          const { vols } = await client.call(P.storagePoolListAllVolumes, { pool, need_results: 1, flags: 0 });
          listed[dir] = vols.map((v) => v.name).sort();
        } finally {
          await client.call(P.storagePoolDestroy, { pool });
        }
      }
      expect(listed.images).toEqual(name === "hostc" ? [] : ["rcloud-tiny.qcow2"]);
      expect(listed.images).toEqual([...host.images].sort());
      expect(listed.kernels).toEqual([host.guest.initrd, host.guest.kernel].map((p) => p.split("/").pop()!).sort());
      // The same files, seen from outside through the rig's own directories.
      expect(readFileSync(join(host.rigPaths.kernels, "vmlinuz")).equals(readFileSync(rig().guest.kernel))).toBe(true);
    }
  }, 60_000);
});

describe("transports: streams", () => {
  for (const [transport, name] of [
    ["tls", "hosta"],
    ["ssh", "hostb"],
  ] as const) {
    test(`volume upload and download over ${transport} (into the host's own /srv/rcloud/pool)`, async () => {
      const host = rig().hosts[name];
      const { client } = await connect(host.uris[transport]);
      await volumeRoundTrip(client, { localDir: host.rigPaths.pool, daemonDir: host.paths.pool }, cleanup);
    }, 90_000);
  }
});

describe("transports: keepalive and reconnection", () => {
  test("a frozen host (SIGSTOP) is detected by keepalive on tls, ssh and tcp; all come back after SIGCONT", async () => {
    const host = rig().hosts.hosta;
    const opts = { keepaliveIntervalMs: 1_000, keepaliveCount: 3, reconnect: { initialDelayMs: 50, maxDelayMs: 500 } };
    const clients = await Promise.all(TRANSPORTS.map(async (t) => (await connect(host.uris[t], opts)).client));
    const lost = clients.map((c) => new Promise<Error>((resolve) => c.on("disconnect", resolve)));
    process.kill(host.libvirtdPid, "SIGSTOP");
    try {
      const stoppedAt = Date.now();
      const errors = await Promise.all(lost);
      for (const e of errors) {
        expect(e).toBeInstanceOf(ConnectionClosedError);
        expect((e as ConnectionClosedError).reason).toBe("keepalive");
      }
      expect(Date.now() - stoppedAt).toBeLessThan(15_000);
    } finally {
      process.kill(host.libvirtdPid, "SIGCONT");
    }
    for (const [i, c] of clients.entries()) {
      await waitFor(`${TRANSPORTS[i]} client to reconnect`, () => c.state === "open", 30_000);
      expect((await c.call(P.connectGetHostname, undefined)).hostname).toBe(host.hostname);
    }
  }, 90_000);

  test("restarting a host's libvirtd: LibvirtPool over tls and over ssh reconnect by themselves (sshd stays)", async () => {
    const before = rig().hosts;
    const poolOpts = { minSessions: 2, reconnect: { initialDelayMs: 50, maxDelayMs: 500 } };
    const tlsPool = await LibvirtPool.connect(before.hosta.uris.tls, poolOpts);
    cleanup.push(() => tlsPool.close());
    const sshPool = await LibvirtPool.connect(before.hostb.uris.ssh, poolOpts);
    cleanup.push(() => sshPool.close());

    const after = { hosta: rigCommand("restart-instance", "hosta").hosts.hosta, hostb: rigCommand("restart-instance", "hostb").hosts.hostb };
    expect(after.hosta.libvirtdPid).not.toBe(before.hosta.libvirtdPid);
    expect(after.hostb.libvirtdPid).not.toBe(before.hostb.libvirtdPid);
    expect(after.hostb.sshdPid).toBe(before.hostb.sshdPid);

    for (const [pool, host] of [
      [tlsPool, after.hosta],
      [sshPool, after.hostb],
    ] as const) {
      await waitFor(`sessions to ${host.hostname} to come back`, () => pool.sessions.every((s) => s.state === "open") && pool.reconnects >= 2, 30_000);
      expect((await pool.call(P.connectGetHostname, undefined)).hostname).toBe(host.hostname);
    }
  }, 120_000);
});

describe("transports: timeouts", () => {
  test("a peer that accepts and never speaks: TLS gives up after connectTimeoutMs, ssh after its ConnectTimeout", async () => {
    const silent = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    cleanup.push(async () => silent.stop(true));
    const host = rig().hosts.hosta;

    let started = Date.now();
    const tls = await connectError(`qemu+tls://127.0.0.1:${silent.port}/system?pkipath=${rig().tls.pkipath}`, { connectTimeoutMs: 1_000 });
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(tls.message).toContain(`timed out after 1000 ms connecting to libvirtd at 127.0.0.1:${silent.port} over TLS`);

    started = Date.now();
    const ssh = await connectError(withParams(host.uris.ssh, {}).replace(`:${host.sshPort}/`, `:${silent.port}/`), { connectTimeoutMs: 2_000 });
    expect(Date.now() - started).toBeLessThan(15_000);
    expect(ssh.message).toContain(`root@127.0.0.1:${silent.port}`);
    expect(ssh.message).toMatch(/timed out/i);
  }, 60_000);
});

describe("transports: errors name the host and say what is wrong", () => {
  test("TLS: a server certificate from a CA we do not know", async () => {
    const host = rig().hosts.hosta;
    const e = await connectError(withParams(host.uris.tls, { pkipath: rig().tls.rogueCaPkipath }));
    expect(e.message).toContain(`127.0.0.1:${host.tlsPort}`);
    expect(e.message).toContain(`is not signed by the CA in ${rig().tls.rogueCaPkipath}/cacert.pem`);
  });

  test("TLS: our client certificate signed by another CA is caught before connecting, and refused by libvirtd with no_sanity=1", async () => {
    const host = rig().hosts.hosta;
    const certFile = `${rig().tls.rogueClientPkipath}/clientcert.pem`;
    const local = await connectError(withParams(host.uris.tls, { pkipath: rig().tls.rogueClientPkipath }));
    expect(local.message).toContain(`the client certificate ${certFile} is not signed by the CA in ${rig().tls.rogueClientPkipath}/cacert.pem`);
    expect(local.message).toContain(`127.0.0.1:${host.tlsPort}`);

    const remote = await connectError(withParams(host.uris.tls, { pkipath: rig().tls.rogueClientPkipath, no_sanity: "1" }));
    expect(remote.message).toContain(`libvirtd at 127.0.0.1:${host.tlsPort} refused our client certificate ${certFile}`);
  });

  test("TLS: no client certificate names the missing file", async () => {
    const host = rig().hosts.hostb;
    const e = await connectError(withParams(host.uris.tls, { pkipath: rig().tls.noClientPkipath }));
    expect(e.message).toContain(`libvirtd at 127.0.0.1:${host.tlsPort} closed the connection after the TLS handshake`);
    expect(e.message).toContain(`${rig().tls.noClientPkipath}/clientcert.pem does not exist`);
  });

  test("TLS: a name the certificate does not carry is refused; no_verify=1 connects and says so", async () => {
    const host = rig().hosts.hostc;
    // 127.1 reaches the same listener as 127.0.0.1, but the certificate names 127.0.0.1 and rcloud-hostc only.
    const other = host.uris.tls.replace("//127.0.0.1:", "//127.1:");
    const e = await connectError(other);
    expect(e.message).toContain(`the TLS certificate of 127.1:${host.tlsPort} is not for that name`);
    expect(e.message).toContain("rcloud-hostc");

    const { client, warnings } = await connect(withParams(other, { no_verify: "1" }));
    expect((await client.call(P.connectGetHostname, undefined)).hostname).toBe(host.hostname);
    expect(warnings.some((w) => w.includes(`TLS certificate of 127.1:${host.tlsPort} is not verified (no_verify=1)`))).toBe(true);
  });

  test("TLS: a CA file that does not exist", async () => {
    const host = rig().hosts.hosta;
    const dir = tempDir();
    const e = await connectError(withParams(host.uris.tls, { pkipath: dir }));
    expect(e.message).toBe(`cannot read the CA certificate ${dir}/cacert.pem for 127.0.0.1:${host.tlsPort}: no such file`);
  });

  test("SSH: an unknown host key (empty known_hosts) fails with ssh's words and the host; no_verify=1 connects and warns", async () => {
    const host = rig().hosts.hostb;
    const e = await connectError(withParams(host.uris.ssh, { known_hosts: rig().ssh.emptyKnownHosts }));
    expect(e.message).toContain("Host key verification failed.");
    expect(e.message).toContain(`root@127.0.0.1:${host.sshPort}`);
    expect(readFileSync(rig().ssh.emptyKnownHosts, "utf8")).toBe("");

    // ssh records the key it accepted, so give it a file of its own.
    const knownHosts = join(tempDir(), "known_hosts");
    copyFileSync(rig().ssh.emptyKnownHosts, knownHosts);
    const { client, warnings } = await connect(withParams(host.uris.ssh, { known_hosts: knownHosts, no_verify: "1" }));
    expect((await client.call(P.connectGetHostname, undefined)).hostname).toBe(host.hostname);
    expect(warnings).toEqual([`libvirt connection ${withParams(host.uris.ssh, { known_hosts: knownHosts, no_verify: "1" })}: the SSH host key of root@127.0.0.1:${host.sshPort} is not checked (no_verify=1)`]);
  }, 60_000);

  test("SSH: a key the host does not accept", async () => {
    const host = rig().hosts.hostc;
    const key = join(tempDir(), "id_ed25519");
    const gen = Bun.spawnSync(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key]);
    expect(gen.exitCode).toBe(0);
    const e = await connectError(withParams(host.uris.ssh, { keyfile: key }));
    expect(e.message).toContain(`root@127.0.0.1:${host.sshPort}`);
    expect(e.message).toContain("Permission denied (publickey)");
  }, 60_000);

  test("wrong URIs: TLS to the plain TCP port, SSH and TCP to a closed port, SSH to a socket that does not exist", async () => {
    const host = rig().hosts.hosta;
    const tlsToTcp = await connectError(`qemu+tls://127.0.0.1:${host.tcpPort}/system?pkipath=${rig().tls.pkipath}`, { connectTimeoutMs: 5_000 });
    expect(tlsToTcp.message).toContain(`127.0.0.1:${host.tcpPort}`);
    expect(tlsToTcp.message).toMatch(/TLS/);

    const closed = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    const closedPort = closed.port;
    closed.stop(true);
    const ssh = await connectError(host.uris.ssh.replace(`:${host.sshPort}/`, `:${closedPort}/`));
    expect(ssh.message).toContain(`root@127.0.0.1:${closedPort}`);
    expect(ssh.message).toContain("Connection refused");
    const tcp = await connectError(`qemu+tcp://127.0.0.1:${closedPort}/system`);
    expect(tcp.message).toContain(`cannot connect to libvirtd at 127.0.0.1:${closedPort}`);

    const noSocket = await connectError(withParams(host.uris.ssh, { socket: "/run/libvirt/rctest-no-such-sock" }));
    expect(noSocket.message).toContain(`root@127.0.0.1:${host.sshPort}`);
    expect(noSocket.message).toContain("rctest-no-such-sock");
  }, 60_000);

  test("qemu+tcp to another host warns (unauthenticated, unencrypted) through onWarning; loopback does not", async () => {
    const warnings: string[] = [];
    // TEST-NET-1: never routed, so nothing is reached; the warning comes before the attempt.
    await connectError("qemu+tcp://192.0.2.1:16509/system", { connectTimeoutMs: 300, onWarning: (m) => warnings.push(m) });
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain("192.0.2.1:16509");
    expect(warnings[0]).toContain("unauthenticated and unencrypted");

    const { client, warnings: none } = await connect(rig().hosts.hostc.uris.tcp);
    expect((await client.call(P.connectGetHostname, undefined)).hostname).toBe("rcloud-hostc");
    expect(none).toEqual([]);
  });
});
