/**
 * `rcloud vm console NAME --attach`: the VM's serial console through the API's websocket
 * (GET /api/v1/vms/{id}/console/attach). Raw terminal on a TTY; Ctrl-] detaches.
 */
import { CliError, EXIT, type ExitCode } from "./errors.ts";

const DETACH = 0x1d; // Ctrl-]

/** Exit code for a close code of 4000 + HTTP status sent by the server. */
function exitFor(code: number): ExitCode {
  const status = code - 4000;
  if (status === 404) return EXIT.notFound;
  if (status === 409) return EXIT.conflict;
  if (status === 401 || status === 403) return EXIT.error;
  if (status === 503) return EXIT.unavailable;
  return EXIT.error;
}

export async function attachConsole(opts: {
  endpoint: string;
  token: string | null;
  path: string;
  stdin: NodeJS.ReadStream;
  stdout: { write(b: Uint8Array): unknown };
  stderr: (s: string) => void;
}): Promise<ExitCode> {
  const url = `${opts.endpoint.replace(/^http/, "ws")}/api/v1${opts.path}`;
  const headers: Record<string, string> = {};
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  // Bun's WebSocket takes headers; the token never appears in messages.
  const ws = new WebSocket(url, { headers } as unknown as string[]);
  ws.binaryType = "arraybuffer";
  let errorText = "";
  const tty = opts.stdin.isTTY === true;

  const opened = await new Promise<boolean>((resolve) => {
    ws.onopen = () => resolve(true);
    ws.onerror = () => resolve(false);
  });
  if (!opened) throw new CliError(`cannot open the console at ${url}; is the server at ${opts.endpoint} running?`, EXIT.unavailable);
  if (tty) {
    opts.stderr("Connected to the serial console. Detach with Ctrl-]\r\n");
    opts.stdin.setRawMode?.(true);
  }
  const done = new Promise<ExitCode>((resolve) => {
    ws.onmessage = (ev) => {
      if (typeof ev.data === "string") errorText += ev.data; // only errors come as text
      else opts.stdout.write(new Uint8Array(ev.data as ArrayBuffer));
    };
    ws.onclose = (ev) => {
      if (ev.code >= 4000) {
        let msg = errorText;
        try {
          msg = (JSON.parse(errorText) as { error: { message: string } }).error.message;
        } catch {
          // not JSON: show it as it is
        }
        opts.stderr(`rcloud: ${msg || ev.reason}\n`);
        resolve(exitFor(ev.code));
      } else resolve(EXIT.ok);
    };
  });
  const onData = (chunk: Buffer) => {
    const i = chunk.indexOf(DETACH);
    if (i >= 0) {
      if (i > 0) ws.send(new Uint8Array(chunk.subarray(0, i)));
      ws.close(1000, "detached");
      return;
    }
    ws.send(new Uint8Array(chunk));
  };
  opts.stdin.on("data", onData);
  opts.stdin.resume();
  try {
    return await done;
  } finally {
    opts.stdin.off("data", onData);
    opts.stdin.pause();
    if (tty) opts.stdin.setRawMode?.(false);
  }
}
