/**
 * An HTTP proxy between the provider and a real rcloud server that can change what the
 * provider sees, one rule at a time: a made-up error answer, an answer held back, an answer
 * dropped (the request reaches the server, the connection is closed before the answer), or
 * an answer's JSON rewritten.
 */
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";

export interface ProxiedRequest {
  method: string;
  /** Path and query, e.g. `/api/v1/vms/vm-abcdefgh`. */
  path: string;
}

export type FaultAction =
  /** Answer this instead of asking the server. */
  | { answer: { status: number; json: unknown } }
  /** Ask the server, then close the connection without answering. */
  | { drop: true }
  /** Ask the server, then wait before answering. */
  | { delayMs: number }
  /** Ask the server and change its JSON answer. */
  | { rewrite: (json: any) => unknown };

export interface FaultProxy {
  url: string;
  /** The rule asked for each request; undefined (or a rule answering undefined) passes it through. */
  rule: ((req: ProxiedRequest) => FaultAction | undefined) | undefined;
  /** Every request seen, in order, as `METHOD path`. */
  seen: string[];
  stop(): Promise<void>;
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

export async function startFaultProxy(upstream: string): Promise<FaultProxy> {
  const proxy: FaultProxy = { url: "", rule: undefined, seen: [], stop: async () => {} };
  const server: Server = createServer(async (req, res) => {
    const method = req.method ?? "GET";
    const path = req.url ?? "/";
    proxy.seen.push(`${method} ${path}`);
    const body = await readBody(req);
    const action = proxy.rule?.({ method, path });
    if (action && "answer" in action) {
      res.writeHead(action.answer.status, { "content-type": "application/json" });
      res.end(JSON.stringify(action.answer.json));
      return;
    }
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers)) if (typeof v === "string" && k !== "host" && k !== "connection" && k !== "content-length") headers[k] = v;
    const up = await fetch(`${upstream}${path}`, { method, headers, body: body.length > 0 ? body : undefined });
    let text = await up.text();
    if (action && "drop" in action) {
      req.socket.destroy();
      return;
    }
    if (action && "delayMs" in action) await Bun.sleep(action.delayMs);
    if (action && "rewrite" in action && text !== "") text = JSON.stringify(action.rewrite(JSON.parse(text)));
    res.writeHead(up.status, { "content-type": up.headers.get("content-type") ?? "application/json" });
    res.end(text);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  proxy.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  proxy.stop = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return proxy;
}
