/**
 * Several sessions to one libvirtd used as one. libvirtd works on at most
 * max_client_requests (5) calls per connection, so a slow call (a domain start takes
 * seconds) holds up everything behind it on the same session; spreading calls over a few
 * sessions keeps lookups fast while starts run. Each call goes to the session with the
 * fewest calls outstanding, counted here synchronously so a burst spreads evenly.
 */
import { LibvirtClient, type LibvirtClientOptions } from "./client.ts";
import type { CallOptions } from "./connection.ts";
import type { LibvirtStream } from "./stream.ts";
import type { ProcedureDescriptor } from "../xdr/index.ts";

export class LibvirtPool {
  private readonly load: number[];

  private constructor(readonly sessions: LibvirtClient[]) {
    this.load = sessions.map(() => 0);
  }

  static async connect(uri: string, size: number, opts: LibvirtClientOptions = {}): Promise<LibvirtPool> {
    const sessions: LibvirtClient[] = [];
    try {
      for (let i = 0; i < Math.max(1, size); i++) sessions.push(await LibvirtClient.connect(uri, opts));
    } catch (e) {
      await Promise.all(sessions.map((s) => s.close()));
      throw e;
    }
    return new LibvirtPool(sessions);
  }

  /** The first session: events and anything that wants one stable connection. */
  get primary(): LibvirtClient {
    return this.sessions[0]!;
  }

  private pick(): number {
    let best = 0;
    for (let i = 1; i < this.sessions.length; i++) {
      const open = this.sessions[i]!.state === "open";
      if (open && this.load[i]! < this.load[best]!) best = i;
    }
    return best;
  }

  async call<A, R>(desc: ProcedureDescriptor<A, R>, args: A, opts?: CallOptions): Promise<R> {
    const i = this.pick();
    this.load[i]!++;
    try {
      return await this.sessions[i]!.call(desc, args, opts);
    } finally {
      this.load[i]!--;
    }
  }

  openStream<A>(desc: ProcedureDescriptor<A, void>, args: A, opts?: CallOptions): Promise<LibvirtStream> {
    return this.sessions[this.pick()]!.openStream(desc, args, opts);
  }

  info(opts?: CallOptions): ReturnType<LibvirtClient["info"]> {
    return this.primary.info(opts);
  }

  async close(): Promise<void> {
    await Promise.all(this.sessions.map((s) => s.close()));
  }
}
