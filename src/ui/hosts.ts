/** The host panel: capacity and allocation of each host as bars (GET /api/v1/hosts). */
import type { ApiHost } from "../api-types/json.ts";
import { ApiError, call } from "./api.ts";

function bar(label: string, used: number, capacity: number | null, unit: string): HTMLElement {
  const row = document.createElement("div");
  const text = document.createElement("div");
  text.className = "bar-label";
  text.textContent = capacity === null ? `${label}: ${used} ${unit} allocated (capacity unknown)` : `${label}: ${used} of ${capacity} ${unit}`;
  const outer = document.createElement("div");
  outer.className = "bar";
  const inner = document.createElement("span");
  inner.style.width = capacity ? `${Math.min(100, (used / capacity) * 100)}%` : "0";
  outer.append(inner);
  row.append(text, outer);
  return row;
}

export async function renderHosts(into: HTMLElement): Promise<void> {
  let hosts: ApiHost[];
  try {
    hosts = (await call<{ hosts: ApiHost[] }>("GET", "/hosts")).hosts;
  } catch (e) {
    // Servers without the hosts API (or that refuse it to this token) still show the rest.
    into.textContent = e instanceof ApiError && e.status !== 404 ? `hosts unavailable: ${e.message}` : "hosts unavailable";
    into.className = "muted";
    return;
  }
  into.className = "";
  into.replaceChildren(
    ...hosts.map((h) => {
      const div = document.createElement("div");
      div.className = "host";
      div.dataset.host = h.name;
      const title = document.createElement("div");
      title.textContent = `${h.name} (${h.state}, ${h.driver}${h.hostname ? `, ${h.hostname}` : ""}) — ${h.vms} VMs`;
      div.append(title, bar("vCPUs", h.allocated.vcpus, h.capacity.vcpus, ""), bar("memory", h.allocated.memory_mb, h.capacity.memory_mb, "MiB"));
      return div;
    }),
  );
}
