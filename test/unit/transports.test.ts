/**
 * The pure parts of the remote transports: the ssh command line and the remote shell snippet
 * (compared with libvirt 9.0's format, and run through a real `sh` the way sshd would, with
 * stand-ins for virt-ssh-helper and nc that print their arguments), where the TLS files are
 * looked for, the client-side switches, and the warning helpers.
 */
import { describe, expect, test } from "bun:test";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { escapeShell, escapeShellTwice, remoteHelperCommand, SESSION_UP_MARKER, sshCommand } from "../../src/libvirt/ssh-command.ts";
import { describeServerCertificateError } from "../../src/libvirt/tls.ts";
import { locateTlsCredentials, SYSTEM_CA_FILE, SYSTEM_CLIENT_CERT_FILE, SYSTEM_CLIENT_KEY_FILE } from "../../src/libvirt/tls-credentials.ts";
import { flagParam, parseLibvirtUri, UriError } from "../../src/libvirt/uri.ts";
import { isLoopbackHost, oncePerMessage, warnIfUnprotectedTcp } from "../../src/libvirt/warnings.ts";

/** What rcloud adds to libvirt's options: the connect timeout and the "session is up" mark on stderr. */
const OURS = ["-o", "ConnectTimeout=10", "-o", "PermitLocalCommand=yes", "-o", `LocalCommand=echo ${SESSION_UP_MARKER} >&2`, "-o", "ControlMaster=no", "-o", "ControlPath=none"];
const ssh = (uri: string, readonly = false) => sshCommand(parseLibvirtUri(uri), { connectTimeoutMs: 10_000, readonly });

describe("ssh command line", () => {
  test("a plain qemu+ssh URI: libvirt's options, BatchMode, no -p unless the URI has a port", () => {
    const c = ssh("qemu+ssh://host.example/system");
    expect(c.argv.slice(0, -1)).toEqual(["ssh", "-T", "-e", "none", "-o", "BatchMode=yes", ...OURS, "--", "host.example"]);
    expect(c.destination).toBe("host.example");
    expect(c.hostKeyUnchecked).toBe(false);
  });

  test("user, port, keyfile, known_hosts and no_verify", () => {
    const c = ssh("qemu+ssh://root@10.0.0.5:2222/system?keyfile=/k/id%20key&known_hosts=/k/known%20hosts&no_verify=1");
    expect(c.argv.slice(0, -1)).toEqual([
      "ssh",
      "-p",
      "2222",
      "-l",
      "root",
      "-i",
      "/k/id key",
      "-T",
      "-e",
      "none",
      "-o",
      "BatchMode=yes",
      "-o",
      "StrictHostKeyChecking=no",
      "-o",
      'UserKnownHostsFile="/k/known hosts"',
      ...OURS,
      "--",
      "10.0.0.5",
    ]);
    expect(c.destination).toBe("root@10.0.0.5:2222");
    expect(c.hostKeyUnchecked).toBe(true);
  });

  test("ssh's %-tokens in file names are escaped; known_hosts_verify maps to StrictHostKeyChecking", () => {
    expect(ssh("qemu+ssh://h/system?keyfile=/k/50%25").argv).toContain("/k/50%%");
    expect(ssh("qemu+ssh://h/system?known_hosts_verify=auto").argv).toContain("StrictHostKeyChecking=accept-new");
    expect(ssh("qemu+ssh://h/system?known_hosts_verify=ignore").hostKeyUnchecked).toBe(true);
    expect(() => ssh("qemu+ssh://h/system?known_hosts_verify=maybe")).toThrow(UriError);
    expect(() => ssh('qemu+ssh://h/system?known_hosts=/a"b')).toThrow(UriError);
  });

  test("the command= parameter names the local ssh binary; IPv6 hosts print in brackets", () => {
    const c = ssh("qemu+ssh://[fe80::1]:22/system?command=/opt/ssh");
    expect(c.argv[0]).toBe("/opt/ssh");
    expect(c.argv.at(-2)).toBe("fe80::1");
    expect(c.destination).toBe("[fe80::1]:22");
  });

  test("the remote command is libvirt 9.0's proxy=auto snippet (virt-ssh-helper, else nc -U)", () => {
    expect(ssh("qemu+ssh://h/system").remoteCommand).toBe(
      "sh -c 'which virt-ssh-helper 1>/dev/null 2>&1; if test $? = 0; then     virt-ssh-helper 'qemu:///system'; else    " +
        "if 'nc' -q 2>&1 | grep \"requires an argument\" >/dev/null 2>&1; then ARG=-q0;else ARG=;fi;'nc' $ARG -U /var/run/libvirt/libvirt-sock; fi'",
    );
    expect(ssh("qemu+ssh://h/system", true).remoteCommand).toContain("virt-ssh-helper -r 'qemu:///system'");
    expect(ssh("qemu+ssh://h/system", true).remoteCommand).toContain("-U /var/run/libvirt/libvirt-sock-ro");
  });

  test("socket= means the nc proxy; netcat= names nc; proxy=native is virt-ssh-helper alone", () => {
    expect(ssh("qemu+ssh://h/system?socket=/run/x.sock").remoteCommand).toBe(
      "sh -c 'if 'nc' -q 2>&1 | grep \"requires an argument\" >/dev/null 2>&1; then ARG=-q0;else ARG=;fi;'nc' $ARG -U /run/x.sock'",
    );
    expect(ssh("qemu+ssh://h/system?netcat=/usr/bin/ncat").remoteCommand).toStartWith("sh -c 'if '/usr/bin/ncat' -q");
    expect(ssh("qemu+ssh://h/system?netcat=/usr/bin/ncat&proxy=auto").remoteCommand).toStartWith("sh -c 'if '/usr/bin/ncat' -q");
    expect(ssh("qemu+ssh://h/system?proxy=native").remoteCommand).toBe("sh -c 'virt-ssh-helper 'qemu:///system''");
    expect(() => ssh("qemu+ssh://h/system?proxy=native&netcat=nc")).toThrow(UriError);
    expect(() => ssh("qemu+ssh://h/system?proxy=carrier-pigeon")).toThrow(UriError);
  });


  test("shell escaping follows virBufferEscapeShell: plain words stay bare, others single-quoted", () => {
    expect(escapeShell("qemu:///system")).toBe("qemu:///system");
    expect(escapeShell("")).toBe("''");
    expect(escapeShell("a b")).toBe("'a b'");
    expect(escapeShell("it's")).toBe("'it'\\''s'");
    expect(escapeShellTwice("a b")).toBe("''\\''a b'\\'''");
  });

  test("through a real shell, as sshd runs it: the helper and nc get exactly the words we meant", () => {
    const dir = mkdtempSync(join(tmpdir(), "rctest-sshcmd-"));
    try {
      const printer = "#!/bin/sh\nfor a in \"$@\"; do printf '<%s>' \"$a\"; done\n";
      writeFileSync(join(dir, "virt-ssh-helper"), printer);
      writeFileSync(join(dir, "fake nc"), printer);
      chmodSync(join(dir, "virt-ssh-helper"), 0o755);
      chmodSync(join(dir, "fake nc"), 0o755);
      // The remote login shell parses the command once, then `sh -c` parses its argument again.
      const run = (command: string, path: string) =>
        Bun.spawnSync(["sh", "-c", command], { env: { PATH: path } }).stdout.toString();
      const odd = "qemu:///system?x=it's $HOME `id` a b";
      const withHelper = remoteHelperCommand({ proxy: "auto", netcat: null, socketPath: "/s", driverUri: odd, readonly: false });
      expect(run(withHelper, `${dir}:/usr/bin:/bin`)).toBe(`<${odd}>`);
      // Daemon parameters stay in the driver URI, client ones do not.
      expect(run(ssh("qemu+ssh://h/system?keyfile=/k&foo=bar").remoteCommand, `${dir}:/usr/bin:/bin`)).toBe("<qemu:///system?foo=bar>");
      expect(run(ssh("qemu+ssh://h/system", true).remoteCommand, `${dir}:/usr/bin:/bin`)).toBe("<-r><qemu:///system>");
      const viaNc = remoteHelperCommand({ proxy: "netcat", netcat: join(dir, "fake nc"), socketPath: "/run/my sock's", driverUri: odd, readonly: false });
      expect(run(viaNc, "/usr/bin:/bin")).toBe("<-U></run/my sock's>");
      // Without virt-ssh-helper on the far side (a PATH with only sh, which and grep), proxy=auto falls back to nc.
      const bare = join(dir, "bare");
      mkdirSync(bare);
      for (const tool of ["sh", "which", "grep"]) symlinkSync(Bun.which(tool)!, join(bare, tool));
      const fallback = remoteHelperCommand({ proxy: "auto", netcat: join(dir, "fake nc"), socketPath: "/var/run/libvirt/libvirt-sock", driverUri: "qemu:///system", readonly: false });
      expect(run(fallback, bare)).toBe("<-U></var/run/libvirt/libvirt-sock>");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a host that looks like an option is refused", () => {
    expect(() => ssh("qemu+ssh://-oProxyCommand=x/system")).toThrow(UriError);
  });
});

describe("TLS credentials", () => {
  const none = () => false;
  test("pkipath= names all three files, whether they exist or not", () => {
    expect(locateTlsCredentials("/p", { privileged: false, home: "/home/u", exists: none })).toEqual({
      caFile: "/p/cacert.pem",
      certFile: "/p/clientcert.pem",
      keyFile: "/p/clientkey.pem",
    });
  });

  test("root uses /etc/pki; a user uses ~/.pki/libvirt for what exists there (cert and key as a pair)", () => {
    const system = { caFile: SYSTEM_CA_FILE, certFile: SYSTEM_CLIENT_CERT_FILE, keyFile: SYSTEM_CLIENT_KEY_FILE };
    expect(system).toEqual({ caFile: "/etc/pki/CA/cacert.pem", certFile: "/etc/pki/libvirt/clientcert.pem", keyFile: "/etc/pki/libvirt/private/clientkey.pem" });
    const all = () => true;
    expect(locateTlsCredentials(undefined, { privileged: true, home: "/root", exists: all })).toEqual(system);
    expect(locateTlsCredentials(undefined, { privileged: false, home: "/home/u", exists: all })).toEqual({
      caFile: "/home/u/.pki/libvirt/cacert.pem",
      certFile: "/home/u/.pki/libvirt/clientcert.pem",
      keyFile: "/home/u/.pki/libvirt/clientkey.pem",
    });
    const onlyCa = (p: string) => p.endsWith("cacert.pem");
    expect(locateTlsCredentials(undefined, { privileged: false, home: "/home/u", exists: onlyCa })).toEqual({ ...system, caFile: "/home/u/.pki/libvirt/cacert.pem" });
    const onlyCert = (p: string) => p.endsWith("clientcert.pem");
    expect(locateTlsCredentials(undefined, { privileged: false, home: "/home/u", exists: onlyCert })).toEqual(system);
  });

  test("certificate errors say what to fix", () => {
    expect(describeServerCertificateError("UNABLE_TO_VERIFY_LEAF_SIGNATURE", "unable to verify the first certificate", "h:16514", "/ca.pem")).toBe(
      "the TLS certificate of h:16514 is not signed by the CA in /ca.pem (unknown CA: unable to verify the first certificate)",
    );
    expect(describeServerCertificateError("CERT_HAS_EXPIRED", "x", "h:1", "/ca")).toBe("the TLS certificate of h:1 has expired");
    expect(describeServerCertificateError("ERR_TLS_CERT_ALTNAME_INVALID", "Host: h. is not in the cert's altnames", "h:1", "/ca")).toContain("is not for that name");
  });
});

describe("URI switches and warnings", () => {
  test("flagParam reads integers like libvirt: non-zero is on, absent is off, words are an error", () => {
    const t = (q: string) => parseLibvirtUri(`qemu+tls://h/system?${q}`);
    expect(flagParam(t("no_verify=1"), "no_verify")).toBe(true);
    expect(flagParam(t("no_verify=2"), "no_verify")).toBe(true);
    expect(flagParam(t("no_verify=0"), "no_verify")).toBe(false);
    expect(flagParam(t("x=1"), "no_verify")).toBe(false);
    expect(() => flagParam(t("no_verify=yes"), "no_verify")).toThrow(UriError);
  });

  test("portGiven tells an explicit port from the default", () => {
    expect(parseLibvirtUri("qemu+ssh://h/system")).toMatchObject({ port: 22, portGiven: false });
    expect(parseLibvirtUri("qemu+ssh://h:22/system")).toMatchObject({ port: 22, portGiven: true });
  });

  test("loopback hosts", () => {
    for (const h of ["localhost", "LOCALHOST", "a.localhost", "127.0.0.1", "127.1.2.3", "::1", "0:0:0:0:0:0:0:1", "::ffff:127.0.0.1"]) expect({ h, loop: isLoopbackHost(h) }).toEqual({ h, loop: true });
    for (const h of ["10.0.0.1", "host.example", "::2", "fe80::1", "128.0.0.1", "localhost.example.com"]) expect({ h, loop: isLoopbackHost(h) }).toEqual({ h, loop: false });
  });

  test("the TCP warning is raised for other hosts only, and a pool's sink hears each message once", () => {
    const heard: string[] = [];
    const sink = oncePerMessage((m) => heard.push(m))!;
    warnIfUnprotectedTcp(parseLibvirtUri("qemu+tcp://127.0.0.1/system"), sink);
    expect(heard).toEqual([]);
    const remote = parseLibvirtUri("qemu+tcp://kvm1.example:16509/system");
    warnIfUnprotectedTcp(remote, sink);
    warnIfUnprotectedTcp(remote, sink);
    expect(heard).toHaveLength(1);
    expect(heard[0]).toContain("kvm1.example:16509");
    expect(heard[0]).toContain("unauthenticated and unencrypted");
    expect(oncePerMessage(undefined)).toBeUndefined();
  });
});
