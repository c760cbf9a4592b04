/** QMP events → driver events (src/drivers/qemu/events.ts), in libvirt's words. */
import { expect, test } from "bun:test";
import { exitDetail, qmpLifecycle } from "../../src/drivers/qemu/events.ts";

const ev = (event: string, data: Record<string, unknown> = {}) => ({ event, data, timestamp: { seconds: 1, microseconds: 0 } });

test("lifecycle QMP events", () => {
  expect(qmpLifecycle(ev("SHUTDOWN", { guest: true, reason: "guest-shutdown" }))).toEqual({ action: "vm-shutdown", detail: "guest-shutdown" });
  expect(qmpLifecycle(ev("SHUTDOWN", { guest: false, reason: "host-qmp-quit" }))).toBeNull();
  expect(qmpLifecycle(ev("STOP"))).toEqual({ action: "vm-paused", detail: "paused" });
  expect(qmpLifecycle(ev("RESUME"))).toEqual({ action: "vm-resumed", detail: "unpaused" });
  expect(qmpLifecycle(ev("GUEST_PANICKED", { action: "pause" }))).toEqual({ action: "vm-crashed", detail: "panicked (pause)" });
  expect(qmpLifecycle(ev("RESET", { guest: true, reason: "guest-reset" }))).toEqual({ action: "vm-rebooted", detail: "guest-reset" });
  expect(qmpLifecycle(ev("BLOCK_JOB_COMPLETED"))).toBeNull();
});

test("why QEMU exited", () => {
  expect(exitDetail("guest-shutdown", false, true)).toBe("shutdown");
  expect(exitDetail("host-qmp-quit", false, true)).toBe("destroyed");
  expect(exitDetail("host-signal", false, false)).toBe("destroyed");
  expect(exitDetail("guest-panic", false, false)).toBe("crashed");
  expect(exitDetail(null, true, false)).toBe("crashed");
  expect(exitDetail(null, false, true)).toBe("destroyed");
  expect(exitDetail(null, false, false)).toBe("failed");
});
