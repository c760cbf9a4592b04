/**
 * Debian's chromium, headless, driven over the DevTools protocol (a websocket to the page
 * target): navigate, evaluate, click, type real key events, answer confirm() dialogs, take
 * screenshots, and see every network request the page makes.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export const CHROMIUM = process.env.RCLOUD_TEST_CHROMIUM ?? "/usr/bin/chromium";

type Handler = (params: Record<string, unknown>) => void;

export class Page {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; method: string }>();
  private readonly handlers = new Map<string, Handler[]>();
  /** Every request the page made, and the status of each answer. */
  readonly requests: { method: string; url: string }[] = [];
  readonly responses: { url: string; status: number }[] = [];
  /** Messages the page logged and exceptions it threw. */
  readonly console: string[] = [];
  /** Answer to confirm() dialogs; they are recorded here. */
  readonly dialogs: string[] = [];

  private constructor(private readonly ws: WebSocket) {
    ws.onmessage = (ev) => {
      const msg = JSON.parse(String(ev.data)) as { id?: number; result?: unknown; error?: { message: string }; method?: string; params?: Record<string, unknown> };
      if (msg.id !== undefined) {
        const p = this.pending.get(msg.id);
        this.pending.delete(msg.id);
        if (msg.error) p?.reject(new Error(`${p.method}: ${msg.error.message}`));
        else p?.resolve(msg.result);
      } else if (msg.method) {
        for (const h of this.handlers.get(msg.method) ?? []) h(msg.params ?? {});
      }
    };
    this.on("Network.requestWillBeSent", (p) => {
      const r = p.request as { url: string; method: string };
      this.requests.push({ method: r.method, url: r.url });
    });
    this.on("Network.responseReceived", (p) => {
      const r = p.response as { url: string; status: number };
      this.responses.push({ url: r.url, status: r.status });
    });
    this.on("Runtime.consoleAPICalled", (p) => this.console.push(`${p.type}: ${JSON.stringify((p.args as { value?: unknown }[]).map((a) => a.value))}`));
    this.on("Runtime.exceptionThrown", (p) => this.console.push(`exception: ${JSON.stringify(p.exceptionDetails)}`));
    this.on("Page.javascriptDialogOpening", (p) => {
      this.dialogs.push(String(p.message));
      void this.send("Page.handleJavaScriptDialog", { accept: true });
    });
  }

  static async connect(wsUrl: string): Promise<Page> {
    const ws = new WebSocket(wsUrl);
    await new Promise<void>((resolve, reject) => {
      ws.onopen = () => resolve();
      ws.onerror = () => reject(new Error(`cannot connect to the DevTools websocket ${wsUrl}`));
    });
    const page = new Page(ws);
    for (const domain of ["Page", "Runtime", "Network"]) await page.send(`${domain}.enable`);
    return page;
  }

  send<T = Record<string, unknown>>(method: string, params: Record<string, unknown> = {}): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, method });
      this.ws.send(JSON.stringify({ id, method, params }));
    });
  }

  on(method: string, handler: Handler): void {
    this.handlers.set(method, [...(this.handlers.get(method) ?? []), handler]);
  }

  async navigate(url: string): Promise<void> {
    const loaded = new Promise<void>((resolve) => this.on("Page.loadEventFired", () => resolve()));
    await this.send("Page.navigate", { url });
    await loaded;
  }

  /** Runs `expression` in the page (promises awaited) and returns its value. */
  async evaluate<T = unknown>(expression: string): Promise<T> {
    const r = await this.send<{ result: { value?: unknown }; exceptionDetails?: { text: string; exception?: { description?: string } } }>("Runtime.evaluate", {
      expression,
      awaitPromise: true,
      returnByValue: true,
    });
    if (r.exceptionDetails) throw new Error(`in the page: ${r.exceptionDetails.exception?.description ?? r.exceptionDetails.text}`);
    return r.result.value as T;
  }

  /** Until `expression` is truthy in the page; returns its value. */
  async waitFor<T = unknown>(expression: string, timeoutMs: number, what: string): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = await this.evaluate<T>(expression).catch(() => null);
      if (v) return v;
      if (Date.now() > deadline) {
        const error = await this.evaluate<string>("document.getElementById('error')?.textContent ?? ''").catch(() => "");
        throw new Error(`the page did not show ${what} within ${timeoutMs} ms${error ? ` (its error line says: ${error})` : ""}; console: ${this.console.slice(-5).join(" | ")}`);
      }
      await Bun.sleep(200);
    }
  }

  /** Clicks the element, as a script would (confirm() dialogs are accepted). */
  async click(selector: string): Promise<void> {
    const found = await this.evaluate<boolean>(`(() => { const el = document.querySelector(${JSON.stringify(selector)}); if (!el) return false; el.click(); return true; })()`);
    if (!found) throw new Error(`no element ${selector} to click`);
  }

  /** Types text as the keyboard would into whatever has the focus; "\r" is the Enter key. */
  async type(text: string): Promise<void> {
    for (const part of text.split(/(\r)/)) {
      if (part === "\r") {
        const enter = { key: "Enter", code: "Enter", windowsVirtualKeyCode: 13, nativeVirtualKeyCode: 13 };
        await this.send("Input.dispatchKeyEvent", { type: "rawKeyDown", ...enter });
        await this.send("Input.dispatchKeyEvent", { type: "char", text: "\r", ...enter });
        await this.send("Input.dispatchKeyEvent", { type: "keyUp", ...enter });
      } else if (part !== "") {
        await this.send("Input.insertText", { text: part });
      }
    }
  }

  /** A PNG of the page (or of the element matching `selector`), written to `path`. */
  async screenshot(path: string, selector?: string): Promise<Uint8Array> {
    let clip: Record<string, number> | undefined;
    if (selector) {
      const r = await this.evaluate<{ x: number; y: number; width: number; height: number } | null>(
        `(() => { const el = document.querySelector(${JSON.stringify(selector)}); if (!el) return null; el.scrollIntoView(); const r = el.getBoundingClientRect(); return { x: r.x + scrollX, y: r.y + scrollY, width: r.width, height: r.height }; })()`,
      );
      if (!r || r.width === 0 || r.height === 0) throw new Error(`no visible element ${selector} to photograph`);
      clip = { ...r, scale: 1 };
    }
    const { data } = await this.send<{ data: string }>("Page.captureScreenshot", { format: "png", ...(clip ? { clip, captureBeyondViewport: true } : {}) });
    const bytes = Buffer.from(data, "base64");
    writeFileSync(path, bytes);
    return new Uint8Array(bytes);
  }

  close(): void {
    this.ws.close();
  }
}

/** A headless chromium with a fresh profile; `page` is its first tab. */
export async function launchChromium(profileDir: string, size = { width: 1280, height: 1000 }): Promise<{ page: Page; close: () => Promise<void> }> {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install chromium (scripts/lib/install-deps.sh)`);
  mkdirSync(profileDir, { recursive: true });
  const proc = Bun.spawn(
    [
      CHROMIUM,
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--no-first-run",
      "--no-default-browser-check",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      `--user-data-dir=${profileDir}`,
      "--remote-debugging-port=0",
      `--window-size=${size.width},${size.height}`,
      "about:blank",
    ],
    { stdout: "ignore", stderr: "pipe" },
  );
  // Chromium writes the port it chose (and the browser's websocket path) into the profile.
  const portFile = join(profileDir, "DevToolsActivePort");
  let port = 0;
  for (let i = 0; i < 300 && !port; i++) {
    if (existsSync(portFile)) port = Number(readFileSync(portFile, "utf8").split("\n")[0]);
    if (!port) await Bun.sleep(100);
    if (proc.exitCode !== null) throw new Error(`chromium exited (${proc.exitCode}): ${await new Response(proc.stderr).text()}`);
  }
  if (!port) throw new Error("chromium did not open its DevTools port within 30 s");
  const targets = (await (await fetch(`http://127.0.0.1:${port}/json/list`)).json()) as { type: string; webSocketDebuggerUrl: string }[];
  const target = targets.find((t) => t.type === "page");
  if (!target) throw new Error("chromium has no page target");
  const page = await Page.connect(target.webSocketDebuggerUrl);
  await page.send("Emulation.setDeviceMetricsOverride", { width: size.width, height: size.height, deviceScaleFactor: 1, mobile: false });
  return {
    page,
    close: async () => {
      page.close();
      proc.kill();
      await proc.exited;
    },
  };
}
