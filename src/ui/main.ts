/**
 * rcloud's web page (/ui/): hosts, the VM list kept current by the event stream, create,
 * lifecycle actions and serial consoles. Plain DOM, bundled by `bun build` into the
 * executable (src/api/ui-page.ts); everything it loads comes from the rcloud that served it.
 */
import type { ApiEvent } from "../api-types/json.ts";
import { ApiError, setToken, token } from "./api.ts";
import { openConsole } from "./console.ts";
import { followEvents } from "./events.ts";
import { renderHosts } from "./hosts.ts";
import { loadImages, loadVms, refreshVm, type VmView, wireCreateForm } from "./vms.ts";

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

function showError(message: string | null): void {
  const p = $("error");
  p.textContent = message ?? "";
  p.hidden = message === null;
}

const view: VmView = { showError, openConsole: (vm) => openConsole(vm, showError) };

function logEvent(e: ApiEvent): void {
  const li = document.createElement("li");
  const vm = e.vm ? ` ${e.vm.name}` : "";
  li.textContent = `${e.time.slice(11, 19)} ${e.action}${vm}${e.detail ? ` — ${e.detail}` : ""}`;
  li.dataset.action = e.action;
  const log = $("event-log");
  log.prepend(li);
  while (log.children.length > 200) log.lastElementChild?.remove();
}

function askForToken(reason: string | null): void {
  $("app").hidden = true;
  $("token-form").hidden = false;
  showError(reason);
}

async function start(): Promise<void> {
  $("forget-token").hidden = token() === null;
  try {
    // The stream first, so nothing that happens while the list loads is missed.
    const events = new AbortController();
    let refreshHosts: ReturnType<typeof setTimeout> | null = null;
    let listed = false;
    void followEvents(
      {
        onEvent: (e) => {
          if (e.type === "stream") {
            if (e.action === "gap" && listed) void loadVms(view).catch((err) => showError((err as Error).message));
            if (e.action !== "subscribed") logEvent(e);
            return;
          }
          logEvent(e);
          if (e.vm) void refreshVm(view, e.vm).catch((err) => showError((err as Error).message));
          // Allocation changes with creates, deletes, starts and stops.
          if (refreshHosts === null) refreshHosts = setTimeout(() => ((refreshHosts = null), void renderHosts($("host-list"))), 500);
        },
        onState: (connected, reason) => {
          $("stream-state").textContent = connected ? "live" : `offline: ${reason ?? ""}`;
        },
      },
      events.signal,
    );
    await loadVms(view);
    listed = true;
    $("token-form").hidden = true;
    $("app").hidden = false;
    await Promise.all([loadImages($("create-form").querySelector("select[name=image]")!), renderHosts($("host-list"))]);
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return askForToken(token() ? e.message : null);
    showError((e as Error).message);
  }
}

$("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  setToken($<HTMLInputElement>("token").value.trim());
  location.reload();
});
$("forget-token").addEventListener("click", () => {
  setToken(null);
  location.reload();
});
wireCreateForm($("create-form") as HTMLFormElement, view);
void start();
