/**
 * The Bun floor of bench:rpc: the least a client running in Bun can spend per call. The same
 * call mix, one caller, on its own Bun socket: the packets are encoded once before the round,
 * and the data handler writes the next call as soon as a whole reply is in — no decoding, no
 * promise, no serial bookkeeping (the daemon echoes whatever serial it gets). What it cannot
 * beat the C client by, no client written for Bun's event loop can; the gap between it and
 * our client is what our client's own work (encode, decode, routing, promises) costs. It
 * frames replies itself (length and status word only) rather than with PacketParser, whose
 * header decoding is part of that work.
 */
import type { Socket } from "bun";
import { encodeCall } from "../src/libvirt/packet.ts";
import { remoteProcedures as P, type RemoteNonnullDomain } from "../src/libvirt/index.ts";

export interface FloorRound {
  calls: number;
  seconds: number;
  cpuUs: number;
}

/** Big-endian u32 at `at`. */
function u32(b: Uint8Array, at: number): number {
  return ((b[at]! << 24) | (b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!) >>> 0;
}

/** Offset of the status word in a packet (length, program, version, procedure, type, serial). */
const STATUS_AT = 24;

export class BunFloorClient {
  /** Called with each whole reply packet. */
  private onReply: (packet: Uint8Array) => void = () => {};
  /** Called when a call fails (the round or the open ends with it). */
  private onFailure: (error: Error) => void = () => {};
  /** Bytes of a reply that came in pieces. */
  private partial: Uint8Array | null = null;

  private constructor(
    private readonly socket: Socket<undefined>,
    private readonly plan: Uint8Array[],
  ) {}

  /** Connects, opens the test driver and encodes the mix for `names` / `doms`. */
  static async connect(socketPath: string, names: string[], doms: RemoteNonnullDomain[]): Promise<BunFloorClient> {
    const plan: Uint8Array[] = [];
    names.forEach((name, i) => {
      const dom = doms[i]!;
      plan.push(encodeCall(P.domainLookupByName, 1, { name }), encodeCall(P.domainGetXmlDesc, 2, { dom, flags: 0 }), encodeCall(P.domainGetInfo, 3, { dom }));
    });
    let floor: BunFloorClient | null = null;
    const socket = await Bun.connect({
      unix: socketPath,
      socket: {
        binaryType: "uint8array",
        data(_s, chunk: Uint8Array) {
          floor!.receive(chunk);
        },
      },
    });
    floor = new BunFloorClient(socket, plan);
    await floor.once(encodeCall(P.connectOpen, 0, { name: "test:///default", flags: 0 }));
    return floor;
  }

  private receive(chunk: Uint8Array): void {
    let buf = chunk;
    if (this.partial) {
      buf = new Uint8Array(this.partial.length + chunk.length);
      buf.set(this.partial);
      buf.set(chunk, this.partial.length);
      this.partial = null;
    }
    let at = 0;
    while (buf.length - at >= 4) {
      const len = u32(buf, at);
      if (buf.length - at < len) break;
      const packet = buf.subarray(at, at + len);
      at += len;
      if (u32(packet, STATUS_AT) !== 0) {
        this.onFailure(new Error(`floor client: procedure ${u32(packet, 12)} failed (status ${u32(packet, STATUS_AT)})`));
        return;
      }
      this.onReply(packet);
    }
    if (at < buf.length) this.partial = buf.slice(at);
  }

  private once(packet: Uint8Array): Promise<void> {
    return new Promise((resolve, reject) => {
      this.onReply = () => resolve();
      this.onFailure = reject;
      this.socket.write(packet);
    });
  }

  /** Calls one after another for `seconds`; the clock is read every 16 replies. */
  round(seconds: number): Promise<FloorRound> {
    return new Promise((resolve, reject) => {
      this.onFailure = reject;
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      const stopAt = t0 + seconds * 1000;
      let next = 0;
      let calls = 0;
      this.onReply = () => {
        calls++;
        if ((calls & 15) === 0 && performance.now() >= stopAt) {
          const cpu = process.cpuUsage(cpu0);
          resolve({ calls, seconds: (performance.now() - t0) / 1000, cpuUs: cpu.user + cpu.system });
          return;
        }
        next = next + 1 === this.plan.length ? 0 : next + 1;
        this.socket.write(this.plan[next]!);
      };
      this.socket.write(this.plan[0]!);
    });
  }

  close(): void {
    this.socket.end();
  }
}
