/** The VM list (kept current from events), the create form and the per-VM actions. */
import type { ApiImage, ApiVm, CreateVmRequest } from "../api-types/json.ts";
import { isActiveState } from "../api-types/values.ts";
import { ApiError, call } from "./api.ts";

export interface VmView {
  showError(message: string | null): void;
  openConsole(vm: ApiVm): void;
}

const vms = new Map<string, ApiVm>();

function cell(text: string, className?: string): HTMLTableCellElement {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function button(label: string, action: string, onClick: () => void): HTMLButtonElement {
  const b = document.createElement("button");
  b.textContent = label;
  b.dataset.action = action;
  b.addEventListener("click", onClick);
  return b;
}

function render(view: VmView): void {
  const body = document.getElementById("vm-list")!;
  const sorted = [...vms.values()].sort((a, b) => a.name.localeCompare(b.name));
  body.replaceChildren(
    ...sorted.map((vm) => {
      const tr = document.createElement("tr");
      tr.dataset.name = vm.name;
      tr.dataset.state = vm.state;
      const where = vm.ip_address ? `${vm.ip_address}${vm.ssh_port !== null ? `:${vm.ssh_port}` : ""}` : "";
      const actions = document.createElement("td");
      actions.className = "actions";
      const act = (op: "start" | "stop" | "reboot") => () => void operate(view, vm, op);
      if (vm.state === "stopped" || vm.state === "paused" || vm.state === "crashed") actions.append(button("start", "start", act("start")));
      if (isActiveState(vm.state)) actions.append(button("stop", "stop", act("stop")), button("reboot", "reboot", act("reboot")));
      if (isActiveState(vm.state)) actions.append(button("console", "console", () => view.openConsole(vm)));
      actions.append(button("delete", "delete", () => void remove(view, vm)));
      tr.append(cell(vm.name), cell(vm.state, `state state-${vm.state}`), cell(vm.image), cell(String(vm.vcpus)), cell(`${vm.memory_mb} MiB`), cell(where), cell(vm.project ?? ""), actions);
      return tr;
    }),
  );
  document.getElementById("vm-empty")!.hidden = vms.size > 0;
}

async function operate(view: VmView, vm: ApiVm, op: "start" | "stop" | "reboot"): Promise<void> {
  if (op !== "start" && !confirm(`${op} VM ${vm.name}?`)) return;
  try {
    view.showError(null);
    upsert(view, await call<ApiVm>("POST", `/vms/${encodeURIComponent(vm.id)}/${op}`));
  } catch (e) {
    view.showError((e as Error).message);
  }
}

async function remove(view: VmView, vm: ApiVm): Promise<void> {
  if (!confirm(`Delete VM ${vm.name} and its disks?`)) return;
  try {
    view.showError(null);
    await call("DELETE", `/vms/${encodeURIComponent(vm.id)}`);
    vms.delete(vm.id);
    render(view);
  } catch (e) {
    view.showError((e as Error).message);
  }
}

function upsert(view: VmView, vm: ApiVm): void {
  vms.set(vm.id, vm);
  render(view);
}

export async function loadVms(view: VmView): Promise<void> {
  const list = await call<{ vms: ApiVm[] }>("GET", "/vms");
  vms.clear();
  for (const vm of list.vms) vms.set(vm.id, vm);
  render(view);
}

/** An event named this VM: read it again (or drop it when it is gone). */
export async function refreshVm(view: VmView, ref: { id: string | null; name: string }): Promise<void> {
  try {
    upsert(view, await call<ApiVm>("GET", `/vms/${encodeURIComponent(ref.id ?? ref.name)}`));
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 404)) throw e;
    for (const [id, vm] of vms) if (id === ref.id || vm.name === ref.name) vms.delete(id);
    render(view);
  }
}

export async function loadImages(select: HTMLSelectElement): Promise<void> {
  const { images } = await call<{ images: ApiImage[] }>("GET", "/images");
  select.replaceChildren(
    ...images.map((i) => {
      const o = document.createElement("option");
      o.value = i.alias ?? i.id;
      o.textContent = `${i.name} (${i.virtual_size_gb} GiB ${i.format})`;
      return o;
    }),
  );
}

/** "1,2:nvme" → extra_disks. Left to the API to judge sizes and buses. */
function dataDisks(text: string): CreateVmRequest["extra_disks"] {
  const items = text.split(",").map((s) => s.trim()).filter((s) => s !== "");
  return items.map((item) => {
    const [size = "", type] = item.split(":");
    return { size_gb: Number(size), ...(type ? { type: type as "virtio" } : {}) };
  });
}

export function wireCreateForm(form: HTMLFormElement, view: VmView): void {
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = new FormData(form);
    const text = (k: string) => String(f.get(k) ?? "").trim();
    const req: CreateVmRequest = { name: text("name"), image: text("image") };
    for (const k of ["vcpus", "memory_mb", "root_disk_gb"] as const) if (text(k) !== "") req[k] = Number(text(k));
    if (text("data_disks") !== "") req.extra_disks = dataDisks(text("data_disks"));
    if (text("network") !== "") req.network = { mode: text("network") as "user" };
    if (text("ssh_public_key") !== "") req.ssh_public_key = text("ssh_public_key");
    const submit = form.querySelector("button")!;
    submit.disabled = true;
    try {
      view.showError(null);
      upsert(view, await call<ApiVm>("POST", "/vms", req));
      form.reset();
    } catch (e) {
      view.showError((e as Error).message);
    } finally {
      submit.disabled = false;
    }
  });
}
