/**
 * bun bench/rpc-js.ts [--callers 8] [--seconds 3] [--warmup 2]
 *
 * Our client's JavaScript cost per call alone, without a kernel or a daemon: the "unix"
 * transport is replaced by an in-memory one that answers the bench:rpc mix with canned
 * replies (one batch per tick, as several replies in one read). Prints calls/s and CPU µs per
 * call, which here is all encode / route / decode / promise work — a steadier figure than
 * bench:rpc's on a shared host, for comparing changes to the call path.
 */
import {
  encodeRemoteAuthListRet,
  encodeRemoteConnectSupportsFeatureRet,
  encodeRemoteDomainGetInfoRet,
  encodeRemoteDomainGetXmlDescRet,
  encodeRemoteDomainLookupByNameRet,
  remoteProcedures as P,
} from "../src/codecs/generated/remote.ts";
import { LibvirtClient, registerTransport, type TransportHandlers } from "../src/libvirt/index.ts";
import { encodePacket, MessageType } from "../src/libvirt/packet.ts";
import type { Encoder } from "../src/xdr/index.ts";
import { arg, mix } from "./rpc-mix.ts";

const callers = arg("callers", 8);
const seconds = arg("seconds", 3);
const warmup = arg("warmup", 2);

const dom = { name: "rcjs-0", uuid: new Uint8Array(16).fill(7), id: -1 };
const xml = `<domain type='test'>\n  <name>rcjs-0</name>\n  <uuid>07070707-0707-0707-0707-070707070707</uuid>\n  <memory unit='KiB'>65536</memory>\n  <currentMemory unit='KiB'>65536</currentMemory>\n  <vcpu placement='static'>1</vcpu>\n  <os>\n    <type arch='x86_64'>hvm</type>\n    <boot dev='hd'/>\n  </os>\n  <clock offset='utc'/>\n  <on_poweroff>destroy</on_poweroff>\n  <on_reboot>restart</on_reboot>\n  <on_crash>destroy</on_crash>\n  <devices>\n  </devices>\n</domain>\n`;
const replies = new Map<number, { encode: Encoder<never>; value: unknown } | null>([
  [P.authList.proc, { encode: encodeRemoteAuthListRet as Encoder<never>, value: { types: [0] } }],
  [P.connectSupportsFeature.proc, { encode: encodeRemoteConnectSupportsFeatureRet as Encoder<never>, value: { supported: 1 } }],
  [P.connectOpen.proc, null],
  [P.connectClose.proc, null],
  [P.domainLookupByName.proc, { encode: encodeRemoteDomainLookupByNameRet as Encoder<never>, value: { dom } }],
  [P.domainGetXmlDesc.proc, { encode: encodeRemoteDomainGetXmlDescRet as Encoder<never>, value: { xml } }],
  [
    P.domainGetInfo.proc,
    { encode: encodeRemoteDomainGetInfoRet as Encoder<never>, value: { state: 5, maxMem: 65536n, memory: 65536n, nrVirtCpu: 1, cpuTime: 0n } },
  ],
]);

/** The reply to each procedure, encoded once; only the serial is patched in per call. */
const templates = new Map<number, Uint8Array>();
for (const [proc, body] of replies) {
  const header = { prog: P.authList.program, vers: P.authList.version, proc, type: MessageType.REPLY, serial: 0, status: 0 };
  templates.set(proc, encodePacket(header, body as { encode: Encoder<unknown>; value: unknown } | null));
}

/**
 * Answers every call in the next macrotask, all of one tick's replies in one chunk. The fake
 * daemon reads only what it needs from the calls (length, procedure, serial), so its own cost
 * stays the same whatever the client's packet code does.
 */
registerTransport("unix", async (_target, handlers: TransportHandlers) => {
  let out: Uint8Array[] = [];
  let outBytes = 0;
  let scheduled = false;
  const u32 = (b: Uint8Array, at: number) => ((b[at]! << 24) | (b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!) >>> 0;
  return {
    description: "in-memory",
    buffered: 0,
    write(bytes: Uint8Array) {
      for (let at = 0; at < bytes.byteLength; at += u32(bytes, at)) {
        const template = templates.get(u32(bytes, at + 12));
        if (!template) throw new Error(`rpc-js: no canned reply for procedure ${u32(bytes, at + 12)}`);
        const reply = template.slice();
        reply.set(bytes.subarray(at + 20, at + 24), 20); // serial
        out.push(reply);
        outBytes += reply.byteLength;
      }
      if (scheduled) return;
      scheduled = true;
      setImmediate(() => {
        scheduled = false;
        const chunk = new Uint8Array(outBytes);
        let off = 0;
        for (const b of out) {
          chunk.set(b, off);
          off += b.byteLength;
        }
        out = [];
        outBytes = 0;
        handlers.onData(chunk);
      });
    },
    drained: () => Promise.resolve(),
    close: () => handlers.onClose(null),
  };
});

const client = await LibvirtClient.connect("test+unix:///default?socket=/nonexistent", { keepaliveIntervalMs: 0, busyPollUs: 0 });
const names = ["rcjs-0"];
await Promise.all(Array.from({ length: callers }, (_, k) => mix(client, names, performance.now() + warmup * 1000, k)));
const cpu0 = process.cpuUsage();
const t0 = performance.now();
const per = await Promise.all(Array.from({ length: callers }, (_, k) => mix(client, names, t0 + seconds * 1000, k)));
const cpu = process.cpuUsage(cpu0);
const calls = per.reduce((a, b) => a + b, 0);
const elapsed = (performance.now() - t0) / 1000;
console.log(
  JSON.stringify({ callers, calls_s: Math.round(calls / elapsed), cpu_us_per_call: Math.round(((cpu.user + cpu.system) / calls) * 100) / 100 }),
);
await client.close();
