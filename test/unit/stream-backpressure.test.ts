/**
 * A libvirt stream's read backpressure (LibvirtStream with readHighWaterMark): the connection is
 * paused when unread bytes reach the mark and resumed when the reader catches up, at the end of
 * the data, and on cancel; without a mark it never pauses (console streams share connections).
 */
import { describe, expect, test } from "bun:test";
import { LibvirtStream } from "../../src/libvirt/stream.ts";

function channel(canPause = true) {
  const log: string[] = [];
  return {
    log,
    send: (status: number) => void log.push(`send ${status}`),
    drained: async () => {},
    release: () => void log.push("release"),
    pauseReading: () => {
      if (canPause) log.push("pause");
      return canPause;
    },
    resumeReading: () => void log.push("resume"),
  };
}

const pauses = (log: string[]) => log.filter((l) => l === "pause" || l === "resume");

describe("stream read backpressure", () => {
  test("pauses at the mark, resumes once the reader takes data, and at the end", async () => {
    const ch = channel();
    const s = new LibvirtStream("download", ch, 10);
    s.onData(new Uint8Array(6));
    expect(pauses(ch.log)).toEqual([]);
    s.onData(new Uint8Array(6)); // 12 unread ≥ 10
    s.onData(new Uint8Array(6)); // already paused: once
    expect(pauses(ch.log)).toEqual(["pause"]);
    const reader = s.readable.getReader();
    expect((await reader.read()).value!.byteLength).toBe(6);
    await Bun.sleep(0);
    expect(pauses(ch.log)).toEqual(["pause"]); // 12 still unread
    await reader.read();
    await reader.read();
    await Bun.sleep(0);
    expect(pauses(ch.log)).toEqual(["pause", "resume"]);
    s.onData(new Uint8Array(20));
    s.onEof(); // no data follows: the daemon's last word must be read
    expect(pauses(ch.log)).toEqual(["pause", "resume", "pause", "resume"]);
    s.onServerOk();
    expect((await reader.read()).value!.byteLength).toBe(20);
    expect((await reader.read()).done).toBe(true);
    await s.done;
  });

  test("a cancel resumes before aborting (the daemon's confirmation must get through)", async () => {
    const ch = channel();
    const s = new LibvirtStream("download", ch, 4);
    s.onData(new Uint8Array(8));
    const cancelled = s.readable.cancel();
    expect(ch.log.slice(0, 3)).toEqual(["pause", "resume", "send 1"]); // 1 = ERROR: abort
    s.onServerOk();
    await cancelled;
  });

  test("not before the opening call's reply: the channel refuses, the next data asks again", () => {
    const ch = channel(false);
    const s = new LibvirtStream("download", ch, 4);
    s.onData(new Uint8Array(8));
    s.onData(new Uint8Array(8));
    expect(ch.log).toEqual([]);
  });

  test("without a mark data is queued as it comes and the connection never paused", () => {
    const ch = channel();
    const s = new LibvirtStream("console", ch);
    for (let i = 0; i < 100; i++) s.onData(new Uint8Array(65536));
    expect(pauses(ch.log)).toEqual([]);
  });
});
