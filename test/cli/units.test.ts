/** Unit tests of the CLI's pure parts: sizes, durations, tables, argument parsing, tail -f, ssh argv. */
import { describe, expect, test } from "bun:test";
import { appendFileSync, mkdtempSync, renameSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "../../src/cli/args.ts";
import type { ApiHost, ApiVm } from "../../src/api-types/json.ts";
import { normalizeEndpoint } from "../../src/cli/client.ts";
import { parseDataDisk, parseHostName, parseNetwork, parsePlacementGroup } from "../../src/cli/flags.ts";
import { hostDetails, hostTable, imageDetails, imageTable, vmTable } from "../../src/cli/render.ts";
import { CliError, EXIT, exitCodeForStatus } from "../../src/cli/errors.ts";
import { followFile } from "../../src/cli/follow.ts";
import { sshArgs } from "../../src/cli/ssh.ts";
import { formatFields, formatTable } from "../../src/cli/table.ts";
import { formatAge, formatDuration, formatMiB, parseDiskGiB, parseDurationMs, parseMemoryMiB } from "../../src/cli/units.ts";

function usage(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(CliError);
    expect((e as CliError).exitCode).toBe(EXIT.usage);
    return (e as Error).message;
  }
  throw new Error("expected a usage error");
}

describe("sizes", () => {
  test("memory: plain numbers are MiB, units are binary whatever the spelling", () => {
    expect(parseMemoryMiB("2048")).toBe(2048);
    expect(parseMemoryMiB("512M")).toBe(512);
    expect(parseMemoryMiB("512m")).toBe(512);
    expect(parseMemoryMiB("512MiB")).toBe(512);
    expect(parseMemoryMiB("2G")).toBe(2048);
    expect(parseMemoryMiB("2GB")).toBe(2048);
    expect(parseMemoryMiB("2GiB")).toBe(2048);
    expect(parseMemoryMiB("1.5G")).toBe(1536);
    expect(parseMemoryMiB("1T")).toBe(1024 * 1024);
  });

  test("disks: plain numbers are GiB, whole GiB only", () => {
    expect(parseDiskGiB("20")).toBe(20);
    expect(parseDiskGiB("20G")).toBe(20);
    expect(parseDiskGiB("20GiB")).toBe(20);
    expect(parseDiskGiB("2048M")).toBe(2);
    expect(parseDiskGiB("1T")).toBe(1024);
    expect(usage(() => parseDiskGiB("1.5G"))).toContain("whole number of GiB");
    expect(usage(() => parseDiskGiB("100M"))).toContain("whole number of GiB");
  });

  test("garbage is a usage error naming the input", () => {
    for (const bad of ["", "lots", "2Q", "G", "-1G", "2 G B", "0", "0M", "1e3", "0x10", "2GG"]) {
      expect(usage(() => parseMemoryMiB(bad))).toContain(`'${bad}'`);
    }
    expect(usage(() => parseMemoryMiB("1.5M"))).toContain("whole number of MiB");
  });

  test("formatting", () => {
    expect(formatMiB(512)).toBe("512M");
    expect(formatMiB(2048)).toBe("2G");
    expect(formatMiB(1536)).toBe("1.5G");
    expect(formatMiB(1000)).toBe("1000M");
  });
});

describe("durations", () => {
  test("parse", () => {
    expect(parseDurationMs("90")).toBe(90_000);
    expect(parseDurationMs("30s")).toBe(30_000);
    expect(parseDurationMs("10m")).toBe(600_000);
    expect(parseDurationMs("1h30m")).toBe(5_400_000);
    expect(parseDurationMs("500ms")).toBe(500);
    expect(parseDurationMs("1.5s")).toBe(1500);
    for (const bad of ["", "soon", "10x", "m", "10m garbage", "0", "0s", "-5s"]) usage(() => parseDurationMs(bad));
  });

  test("format", () => {
    expect(formatDuration(2000)).toBe("2s");
    expect(formatDuration(1500)).toBe("1.5s");
    expect(formatDuration(600_000)).toBe("10m");
    expect(formatDuration(90_000)).toBe("1m30s");
    expect(formatDuration(5_400_000)).toBe("1h30m");
    const now = Date.parse("2026-01-02T00:00:00Z");
    expect(formatAge("2026-01-01T23:59:55Z", now)).toBe("5s");
    expect(formatAge("2026-01-01T23:57:00Z", now)).toBe("3m");
    expect(formatAge("2026-01-01T20:00:00Z", now)).toBe("4h");
    expect(formatAge("2025-12-30T00:00:00Z", now)).toBe("3d");
    expect(formatAge("not a date", now)).toBe("-");
  });
});

describe("tables", () => {
  test("columns are aligned, empty cells are '-', no trailing blanks", () => {
    const t = formatTable(["NAME", "STATE", "IP"], [["web-01", "running", "10.0.0.2"], ["a", "stopped", null], ["longer-name", "", "x"]]);
    expect(t).toBe(
      [
        "NAME          STATE     IP",
        "web-01        running   10.0.0.2",
        "a             stopped   -",
        "longer-name   -         x",
      ].join("\n"),
    );
    expect(t.split("\n").every((l) => l === l.trimEnd())).toBe(true);
  });

  test("cells with newlines or tabs cannot break the layout", () => {
    expect(formatTable(["A", "B"], [["x\ny", "z\tw"]])).toBe("A     B\nx y   z w");
  });

  test("fields align values and skip missing ones", () => {
    expect(formatFields([["Name", "a"], ["Kernel", null], ["IP address", "1.2.3.4"]])).toBe("Name:        a\nIP address:  1.2.3.4");
  });

  test("vm list table", () => {
    const now = Date.parse("2026-01-01T01:00:00Z");
    const t = vmTable(
      [vm({ name: "b", ip_address: "192.168.122.5" }), vm({ name: "a-long-name", state: "stopped", memory_mb: 512 }), vm({ name: "c", state: "unknown", host: "beta", host_state: "offline" })],
      now,
    );
    expect(t).toBe(
      [
        "NAME          ID            STATE     HOST             VCPUS   MEMORY   IP              SSH                     IMAGE      AGE",
        "b             vm-aaaaaaaa   running   local            2       2G       192.168.122.5   kdevops@192.168.122.5   debian13   1h",
        "a-long-name   vm-aaaaaaaa   stopped   local            2       512M     -               -                       debian13   1h",
        "c             vm-aaaaaaaa   unknown   beta (offline)   2       2G       -               -                       debian13   1h",
      ].join("\n"),
    );
  });

  test("host list table: an offline host that never answered shows '-' and 'never'", () => {
    const now = Date.parse("2026-01-01T01:00:00Z");
    const t = hostTable(
      [
        host({ name: "alpha", labels: { rack: "a" } }),
        host({ name: "beta", state: "cordoned", allocated: { vcpus: 1, memory_mb: 128 }, vms: 1 }),
        host({ name: "gamma", state: "offline", cpus: null, memory_mb: null, last_contact: null, last_error: "connection refused" }),
      ],
      now,
    );
    expect(t).toBe(
      [
        "NAME    STATE      CPUS   MEMORY   ALLOCATED       VMS   LAST-CONTACT   URI",
        "alpha   online     8      15.5G    3 vCPUs, 1.5G   2     5s ago         qemu+tcp://alpha/system",
        "beta    cordoned   8      15.5G    1 vCPU, 128M    1     5s ago         qemu+tcp://alpha/system",
        "gamma   offline    -      -        3 vCPUs, 1.5G   2     never          qemu+tcp://alpha/system",
      ].join("\n"),
    );
    const d = hostDetails(host({ labels: { rack: "a", room: "2" } }), now);
    expect(d).toContain("Labels:        rack=a, room=2\n");
    expect(d).toContain("Memory:        15.5G, 7.8G available\n");
    expect(d).toContain("Capacity:      128 vCPUs, 15.5G (with overcommit)\n");
    expect(d).toMatch(/^Last contact: {2}2026-01-01T00:59:55.000Z \(5s ago\)$/m);
    expect(d).not.toContain("Last error");
    expect(hostDetails(host({ state: "offline", last_error: "timed out" }), now)).toMatch(/^Last error: +timed out$/m);
  });

  test("image list names the hosts holding each image", () => {
    const img = { id: "debian-13", name: "debian-13", file_name: "debian-13.raw", alias: "debian13", format: "raw", virtual_size_gb: 1, disk_size_mb: 0, hosts: ["alpha", "gamma"] };
    expect(imageTable([img]).split("\n")[1]).toMatch(/ alpha,gamma$/);
    expect(imageDetails({ ...img, hosts: [] })).toMatch(/^Hosts: +none$/m);
  });
});

describe("host and placement group flags", () => {
  test("names as the server's patterns allow; anything else is a usage error naming the flag", () => {
    expect(parseHostName("alpha-2", "--host")).toBe("alpha-2");
    expect(parsePlacementGroup("ci_runs-1")).toBe("ci_runs-1");
    for (const bad of ["Alpha", "-a", "a-", "a_b", "a/b", "", "x".repeat(64)]) expect(usage(() => parseHostName(bad, "--host"))).toContain(`invalid --host '${bad}'`);
    for (const bad of ["CI", "_ci", "ci-", "c i", "../x"]) expect(usage(() => parsePlacementGroup(bad))).toContain(`invalid --placement-group '${bad}'`);
  });
});

describe("argument parsing", () => {
  const specs = [
    { name: "image", value: "IMG", help: "" },
    { name: "data-disk", value: "SIZE", repeat: true, help: "" },
    { name: "wait", help: "" },
    { name: "output", short: "o", value: "F", help: "" },
  ];

  test("long, --x=v, short, repeatable, positionals anywhere, --", () => {
    const p = parseArgs(["web", "--image", "deb", "--data-disk=1G", "-o", "json", "--data-disk", "2G", "--wait", "extra", "--", "--not-a-flag"], specs, "rcloud vm create");
    expect(p.positionals).toEqual(["web", "extra"]);
    expect(p.flags.get("image")).toBe("deb");
    expect(p.flags.get("data-disk")).toEqual(["1G", "2G"]);
    expect(p.flags.get("output")).toBe("json");
    expect(p.flags.get("wait")).toBe(true);
    expect(p.rest).toEqual(["--not-a-flag"]);
    expect(parseArgs(["-ojson"], specs, "x").flags.get("output")).toBe("json");
  });

  test("unknown flags, missing values, values for booleans are usage errors naming the flag", () => {
    expect(usage(() => parseArgs(["--colour"], specs, "rcloud vm list"))).toBe("unknown flag '--colour' for 'rcloud vm list'; see 'rcloud vm list --help'");
    expect(usage(() => parseArgs(["--colour=red"], specs, "x"))).toContain("'--colour'");
    expect(usage(() => parseArgs(["-x"], specs, "x"))).toContain("'-x'");
    expect(usage(() => parseArgs(["--image"], specs, "x"))).toContain("--image needs a value");
    expect(usage(() => parseArgs(["--image", "--wait"], specs, "x"))).toContain("--image needs a value");
    expect(usage(() => parseArgs(["--wait=yes"], specs, "x"))).toContain("takes no value");
  });

  test("--data-disk and --network values", () => {
    expect(parseDataDisk("100G")).toEqual({ size_gb: 100 });
    expect(parseDataDisk("100,type=nvme")).toEqual({ size_gb: 100, type: "nvme" });
    usage(() => parseDataDisk("100G,type=floppy"));
    usage(() => parseDataDisk("100G,cache=none"));
    usage(() => parseDataDisk("big"));
    expect(parseNetwork("bridge")).toEqual({ mode: "bridge" });
    expect(parseNetwork("bridge=virbr1")).toEqual({ mode: "bridge", bridge: "virbr1" });
    expect(parseNetwork("user")).toEqual({ mode: "user" });
    expect(parseNetwork("none")).toEqual({ mode: "none" });
    usage(() => parseNetwork("user=x"));
    usage(() => parseNetwork("wifi"));
  });

  test("endpoints", () => {
    expect(normalizeEndpoint("localhost:8765")).toBe("http://localhost:8765");
    expect(normalizeEndpoint("https://cloud.example/")).toBe("https://cloud.example");
    expect(normalizeEndpoint("http://h:1/api/v1/")).toBe("http://h:1");
    usage(() => normalizeEndpoint("ftp://h"));
  });

  test("exit codes by HTTP status", () => {
    expect([404, 409, 400, 422, 503, 500, 401].map(exitCodeForStatus)).toEqual([3, 4, 5, 5, 6, 1, 1]);
  });
});

describe("vm ssh argv", () => {
  test("bridge: user@ip, key, accept-new; extra words after the destination", () => {
    expect(sshArgs(vm({ ip_address: "10.0.0.9" }), "/k/id", ["-v", "uname"])).toEqual(["-o", "StrictHostKeyChecking=accept-new", "-i", "/k/id", "kdevops@10.0.0.9", "-v", "uname"]);
  });
  test("user networking: the forwarded port; no key when there is none", () => {
    expect(sshArgs(vm({ ip_address: "127.0.0.1", ssh_port: 2222 }), null, [])).toEqual(["-o", "StrictHostKeyChecking=accept-new", "-p", "2222", "kdevops@127.0.0.1"]);
  });
  test("not running or no IP: conflict (4)", () => {
    for (const v of [vm({ state: "stopped" }), vm({ ip_address: null })]) {
      try {
        sshArgs(v, null, []);
        throw new Error("expected an error");
      } catch (e) {
        expect((e as CliError).exitCode).toBe(EXIT.conflict);
      }
    }
  });
});

describe("follow (tail -f)", () => {
  test("last lines first, then appends; survives truncation and replacement; stops on abort", async () => {
    const dir = mkdtempSync(join(tmpdir(), "rcloud-follow-"));
    const file = join(dir, "console.log");
    writeFileSync(file, "one\ntwo\nthree\n");
    let out = "";
    const ac = new AbortController();
    const done = followFile(file, (b) => (out += new TextDecoder().decode(b)), { lines: 2, signal: ac.signal, pollMs: 10 });
    const until = async (s: string) => {
      for (let i = 0; i < 200 && !out.includes(s); i++) await Bun.sleep(10);
      expect(out).toContain(s);
    };
    await until("three\n");
    expect(out).toBe("two\nthree\n");
    appendFileSync(file, "four\n");
    await until("four\n");
    truncateSync(file, 0);
    await Bun.sleep(50);
    appendFileSync(file, "after truncate\n");
    await until("after truncate\n");
    writeFileSync(join(dir, "new.log"), "rotated\n");
    renameSync(join(dir, "new.log"), file);
    await until("rotated\n");
    ac.abort();
    await done;
    expect(out).toBe("two\nthree\nfour\nafter truncate\nrotated\n");
  });
});

function vm(over: Partial<ApiVm>): ApiVm {
  return {
    id: "vm-aaaaaaaa",
    name: "web",
    uuid: "u",
    state: "running",
    vcpus: 2,
    max_vcpus: 2,
    memory_mb: 2048,
    max_memory_mb: 2048,
    disks: [],
    restart_required: false,
    pending: null,
    network: { mode: over.ssh_port ? "user" : "bridge", bridge: "default", ip_address: null, mac_address: null, ssh_port: over.ssh_port ?? null },
    image: "debian13",
    host: "local",
    host_state: "online",
    placement_group: null,
    crash_reason: null,
    ip_address: null,
    ssh_port: null,
    ssh_user: "kdevops",
    kernel: null,
    initrd: null,
    cmdline: null,
    created_at: "2026-01-01T00:00:00Z",
    updated_at: "2026-01-01T00:00:00Z",
    ...over,
  };
}

function host(over: Partial<ApiHost>): ApiHost {
  return {
    name: "alpha",
    uri: "qemu+tcp://alpha/system",
    driver: "libvirt",
    state: "online",
    labels: {},
    hostname: "alpha.lab",
    cpus: 8,
    memory_mb: 15872,
    available_memory_mb: 7936,
    allocated: { vcpus: 3, memory_mb: 1536 },
    capacity: { vcpus: 128, memory_mb: 15872 },
    vms: 2,
    versions: { hypervisor: "9.2.0", libvirt: "9.0.0" },
    last_contact: "2026-01-01T00:59:55.000Z",
    last_error: null,
    ...over,
  };
}
