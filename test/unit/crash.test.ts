/** What both drivers report for a crashed VM, dump names, and libvirt's crash states. */
import { describe, expect, test } from "bun:test";
import { crashReasonOf, DomainState } from "../../src/drivers/libvirt/domain-state.ts";
import { onCrashFor } from "../../src/drivers/libvirt/domain-xml.ts";
import { CRASHED_UNKNOWN, crashState, dumpName, GUEST_PANICKED, isDumpName } from "../../src/drivers/shared/crash.ts";

describe("crashState", () => {
  test("a recorded crash shows while the VM is held or off, and is gone once it runs", () => {
    expect(crashState("crashed", GUEST_PANICKED)).toEqual({ state: "crashed", crashReason: GUEST_PANICKED });
    expect(crashState("stopped", GUEST_PANICKED)).toEqual({ state: "crashed", crashReason: GUEST_PANICKED });
    expect(crashState("running", GUEST_PANICKED)).toEqual({ state: "running", crashReason: null });
    expect(crashState("crashed", null)).toEqual({ state: "crashed", crashReason: CRASHED_UNKNOWN });
    expect(crashState("stopped", null)).toEqual({ state: "stopped", crashReason: null });
  });
});

describe("dump names", () => {
  test("UTC time to the second; only such names pass", () => {
    const name = dumpName(new Date("2026-12-02T16:05:01.789Z"));
    expect(name).toBe("dump-20261202T160501Z.elf");
    expect(isDumpName(name)).toBe(true);
    for (const bad of ["../dump-20261202T160501Z.elf", "dump-20261202T160501Z.elf.part", "dump-2026120T160501Z.elf", "vm.json", "dump-20261202T160501Z.elf/x", ""]) expect(isDumpName(bad)).toBe(false);
  });
});

describe("libvirt", () => {
  test("crash reasons from state and reason; <on_crash> per on_panic", () => {
    expect(crashReasonOf(DomainState.CRASHED, 1)).toBe(GUEST_PANICKED);
    expect(crashReasonOf(DomainState.SHUTOFF, 3)).toBeNull(); // powered off "crashed": a panic or a dead QEMU, the service tells which (crashes.ts)
    expect(crashReasonOf(DomainState.SHUTOFF, 2)).toBeNull(); // destroyed
    expect(crashReasonOf(DomainState.RUNNING, 1)).toBeNull();
    expect(crashReasonOf(DomainState.CRASHED, 2)).toContain("crashed");
    expect([onCrashFor("dump"), onCrashFor("restart"), onCrashFor("stop"), onCrashFor("preserve")]).toEqual(["preserve", "restart", "destroy", "preserve"]);
  });
});
