/**
 * Serial consoles in xterm.js, one tab per VM. A console ticket (POST /vms/{id}/console)
 * opens the websocket, since a browser cannot send the token on it; guest output arrives in
 * binary frames, keystrokes go out as binary frames, and a text frame is an API error. The
 * end of the console log is shown first, so the boot text is there even when the console is
 * opened after it.
 */
import { Terminal } from "@xterm/xterm";
import type { ApiConsoleTicket, ApiVm } from "../api-types/json.ts";
import { ApiError, authHeaders, call, download, errorOf } from "./api.ts";

interface Tab {
  vm: ApiVm;
  pane: HTMLElement;
  button: HTMLButtonElement;
  term: Terminal;
  ws: WebSocket | null;
  status: HTMLElement;
}

const BACKLOG_BYTES = 64 * 1024;
const tabs = new Map<string, Tab>();
const encoder = new TextEncoder();

/** How many bytes at the start of `live` the log already ended with (the moment both saw). */
function overlap(log: Uint8Array, live: Uint8Array): number {
  for (let n = Math.min(log.length, live.length); n > 0; n--) {
    let same = true;
    for (let i = 0; i < n && same; i++) same = log[log.length - n + i] === live[i];
    if (same) return n;
  }
  return 0;
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

async function consoleLog(vm: ApiVm): Promise<Uint8Array | null> {
  const res = await fetch(`/api/v1/vms/${encodeURIComponent(vm.id)}/console/log?tail=${BACKLOG_BYTES}`, { headers: authHeaders() });
  if (res.status === 501) return null; // the driver keeps no log it can hand out
  if (!res.ok) throw await errorOf(res);
  return new Uint8Array(await res.arrayBuffer());
}

async function attach(tab: Tab, showError: (m: string | null) => void): Promise<void> {
  const { vm, term } = tab;
  tab.ws?.close();
  tab.status.textContent = "connecting…";
  const ticket = await call<ApiConsoleTicket>("POST", `/vms/${encodeURIComponent(vm.id)}/console`);
  const ws = new WebSocket(ticket.url);
  ws.binaryType = "arraybuffer";
  tab.ws = ws;
  // Live output is held until the log's end is written, then joined to it without repeats.
  let held: Uint8Array[] | null = [];
  let errorText = "";
  ws.onmessage = (ev) => {
    if (typeof ev.data === "string") {
      errorText += ev.data;
      return;
    }
    const bytes = new Uint8Array(ev.data as ArrayBuffer);
    if (held) held.push(bytes);
    else term.write(bytes);
  };
  ws.onclose = (ev) => {
    if (tab.ws !== ws) return;
    let why = ev.reason || "closed";
    try {
      why = (JSON.parse(errorText) as { error: { message: string } }).error.message;
    } catch {
      // not an API error
    }
    tab.status.textContent = `disconnected: ${why}`;
    if (ev.code >= 4000) showError(why);
  };
  await new Promise<void>((resolve, reject) => {
    ws.onopen = () => resolve();
    ws.onerror = () => reject(new Error(`the console of ${vm.name} could not be opened`));
  });
  tab.status.textContent = "connected";
  try {
    const log = await consoleLog(vm);
    const live = concat(held);
    if (log) term.write(log);
    term.write(live.subarray(log ? overlap(log, live) : 0));
  } finally {
    held = null;
  }
}

function select(id: string): void {
  for (const [tid, t] of tabs) {
    t.pane.hidden = tid !== id;
    t.button.classList.toggle("active", tid === id);
  }
}

export function openConsole(vm: ApiVm, showError: (m: string | null) => void): void {
  const existing = tabs.get(vm.id);
  if (existing) {
    select(vm.id);
    existing.term.focus();
    return;
  }
  const panes = document.getElementById("console-panes")!;
  panes.querySelector("p.muted")?.remove();
  const pane = document.createElement("div");
  pane.className = "console-pane";
  pane.dataset.vm = vm.name;
  const toolbar = document.createElement("div");
  toolbar.className = "toolbar";
  const title = document.createElement("strong");
  title.textContent = vm.name;
  const status = document.createElement("span");
  status.className = "muted console-status";
  const reconnect = document.createElement("button");
  reconnect.textContent = "reconnect";
  const save = document.createElement("button");
  save.textContent = "download log";
  save.dataset.action = "download-log";
  const close = document.createElement("button");
  close.textContent = "close";
  toolbar.append(title, status, reconnect, save, close);
  const host = document.createElement("div");
  host.className = "terminal-host";
  pane.append(toolbar, host);
  panes.append(pane);

  const term = new Terminal({ cols: 100, rows: 30, scrollback: 5000, convertEol: false, fontSize: 13 });
  term.open(host);
  const button = document.createElement("button");
  button.textContent = vm.name;
  button.dataset.vm = vm.name;
  button.addEventListener("click", () => select(vm.id));
  document.getElementById("console-tabs")!.append(button);
  const tab: Tab = { vm, pane, button, term, ws: null, status };
  tabs.set(vm.id, tab);
  term.onData((d) => {
    if (tab.ws?.readyState === WebSocket.OPEN) tab.ws.send(encoder.encode(d));
  });
  const connect = () =>
    attach(tab, showError).catch((e) => {
      tab.status.textContent = "not connected";
      showError(e instanceof ApiError || e instanceof Error ? e.message : String(e));
    });
  reconnect.addEventListener("click", () => void connect());
  save.addEventListener("click", () => void download(`/vms/${encodeURIComponent(vm.id)}/console/log`, `${vm.name}-console.log`).catch((e) => showError((e as Error).message)));
  close.addEventListener("click", () => {
    tab.ws?.close();
    tab.ws = null;
    term.dispose();
    pane.remove();
    button.remove();
    tabs.delete(vm.id);
  });
  select(vm.id);
  void connect();
  term.focus();
}
