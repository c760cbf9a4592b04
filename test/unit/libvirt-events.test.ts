/** The mapping of libvirt's lifecycle events to DriverEvent actions (src/drivers/libvirt/events.ts). */
import { describe, expect, test } from "bun:test";
import { lifecycleAction } from "../../src/drivers/libvirt/events.ts";

describe("lifecycleAction", () => {
  test("every virDomainEventType of libvirt 9.0 with each of its details", () => {
    const table: [number, string, string[]][] = [
      [0, "vm-defined", ["added", "updated", "renamed", "from-snapshot"]],
      [1, "vm-undefined", ["removed", "renamed"]],
      [2, "vm-started", ["booted", "migrated", "restored", "from-snapshot", "wakeup"]],
      [3, "vm-paused", ["paused", "migrated", "ioerror", "watchdog", "restored", "from-snapshot", "api-error", "postcopy", "postcopy-failed"]],
      [4, "vm-resumed", ["unpaused", "migrated", "from-snapshot", "postcopy", "postcopy-failed"]],
      [6, "vm-shutdown", ["finished", "guest", "host"]],
      [7, "vm-paused", ["pmsuspended-memory", "pmsuspended-disk"]],
      [8, "vm-crashed", ["panicked", "crashloaded"]],
    ];
    for (const [event, action, details] of table) {
      details.forEach((detail, n) => expect(lifecycleAction(event, n)).toEqual({ action: action as never, detail }));
    }
  });

  test("STOPPED is vm-stopped with libvirt's reason, except a crash", () => {
    const stopped = ["shutdown", "destroyed", "crashed", "migrated", "saved", "failed", "from-snapshot"].map((_, n) => lifecycleAction(5, n));
    expect(stopped).toEqual([
      { action: "vm-stopped", detail: "shutdown" },
      { action: "vm-stopped", detail: "destroyed" },
      { action: "vm-crashed", detail: "crashed" },
      { action: "vm-stopped", detail: "migrated" },
      { action: "vm-stopped", detail: "saved" },
      { action: "vm-stopped", detail: "failed" },
      { action: "vm-stopped", detail: "from-snapshot" },
    ]);
  });

  test("a detail newer than the table is named by number; an unknown event type is not reported", () => {
    expect(lifecycleAction(2, 42)).toEqual({ action: "vm-started", detail: "unknown-42" });
    expect(lifecycleAction(9, 0)).toBeNull();
    expect(lifecycleAction(-1, 0)).toBeNull();
  });
});
