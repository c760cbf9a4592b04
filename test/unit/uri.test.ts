import { describe, expect, test } from "bun:test";
import { parseLibvirtUri, UriError } from "../../src/libvirt/uri.ts";
import { displayUri, hideUriSecrets } from "../../src/util/display-uri.ts";

describe("libvirt URI parsing", () => {
  test("local system URI uses the default unix socket", () => {
    const t = parseLibvirtUri("qemu:///system");
    expect(t).toMatchObject({ driver: "qemu", transport: "unix", host: null, socketPath: "/var/run/libvirt/libvirt-sock", name: "qemu:///system" });
  });

  test("test driver through the daemon, socket parameter not forwarded", () => {
    const t = parseLibvirtUri("test+unix:///default?socket=/tmp/x/libvirt-sock");
    expect(t.socketPath).toBe("/tmp/x/libvirt-sock");
    expect(t.name).toBe("test:///default");
  });

  test("tcp drops host and port from the name and defaults to 16509", () => {
    const t = parseLibvirtUri("qemu+tcp://host.example/system");
    expect(t).toMatchObject({ transport: "tcp", host: "host.example", port: 16509, name: "qemu:///system" });
    expect(parseLibvirtUri("test+tcp://127.0.0.1:16600/default")).toMatchObject({ port: 16600, name: "test:///default" });
  });

  test("a host without a transport means TLS on 16514", () => {
    expect(parseLibvirtUri("qemu://h/system")).toMatchObject({ transport: "tls", port: 16514 });
  });

  test("?name= is sent verbatim and other daemon parameters are kept", () => {
    expect(parseLibvirtUri("qemu+tcp://h/system?name=qemu:///embed").name).toBe("qemu:///embed");
    expect(parseLibvirtUri("qemu:///system?mode=direct&foo=bar").name).toBe("qemu:///system?foo=bar");
  });

  test("session socket comes from XDG_RUNTIME_DIR", () => {
    expect(parseLibvirtUri("qemu:///session", { XDG_RUNTIME_DIR: "/run/user/1000" }).socketPath).toBe("/run/user/1000/libvirt/libvirt-sock");
  });

  test("user, IPv6 hosts and ssh default port", () => {
    expect(parseLibvirtUri("qemu+ssh://root@[::1]/system")).toMatchObject({ user: "root", host: "::1", port: 22 });
  });

  test("garbage is a UriError with the offending URI", () => {
    for (const bad of ["", "qemu", "/var/run/x", "qemu+bogus:///system", "qemu+tcp:///system", "qemu+unix://host/system", "qemu+tcp://h:99999/system"]) {
      expect(() => parseLibvirtUri(bad)).toThrow(UriError);
    }
  });
});

describe("URIs as API clients see them", () => {
  const ssh = "qemu+ssh://deploy@host.example:2222/system?keyfile=/home/ops/.ssh/id_rcloud&known_hosts=/etc/rcloud/known_hosts&no_verify=1";
  test("displayUri drops the user name and the query", () => {
    expect(displayUri(ssh)).toBe("qemu+ssh://host.example:2222/system");
    expect(displayUri("qemu:///system")).toBe("qemu:///system");
  });

  test("hideUriSecrets takes out the URI, its local paths and its user name wherever they appear", () => {
    const text = `could not open ${ssh}: ssh deploy@host.example: Load key "/home/ops/.ssh/id_rcloud": invalid format; see /etc/rcloud/known_hosts`;
    expect(hideUriSecrets(text, ssh)).toBe('could not open qemu+ssh://host.example:2222/system: ssh host.example: Load key "<keyfile>": invalid format; see <known_hosts>');
    const tls = "qemu+tls://h.example/system?pkipath=/srv/pki%20dir";
    expect(hideUriSecrets("cannot read /srv/pki dir/clientcert.pem", tls)).toBe("cannot read <pkipath>/clientcert.pem");
  });
});
