/** Data sources `rcloud_vm` (one VM by id or name) and `rcloud_images` (the base images); `rcloud_hosts` is in datasource-hosts.ts. */
import { type CtyObject, isUnknown } from "./cty.ts";
import { type Diagnostic, diagFromError, errorDiag } from "./diagnostics.ts";
import { computedOut, type Ctx, diskAttrs, networkAttrs, shareAttrs, vmToState } from "./resource-vm.ts";
import { type Attr, type BlockSchema, impliedType } from "./schema.ts";

const computedCopy = (attrs: Attr[]): Attr[] =>
  attrs.map((a) => ({ name: a.name, description: a.description, computed: true, ...(a.type ? { type: a.type } : {}) }));

export const vmDataSchema: BlockSchema = {
  version: 0,
  description: "Looks up one VM by `id` or `name`.",
  attributes: [
    { name: "id", type: "string", optional: true, computed: true, description: "VM id (`vm-xxxxxxxx`). Give `id` or `name`." },
    { name: "name", type: "string", optional: true, computed: true, description: "VM name. Give `id` or `name`." },
    { name: "vcpus", type: "number", computed: true, description: "Number of virtual CPUs." },
    { name: "memory_gb", type: "number", computed: true, description: "Memory in GiB." },
    { name: "image", type: "string", computed: true, description: "Id of the base image." },
    { name: "root_disk_gb", type: "number", computed: true, description: "Root disk size in GiB." },
    { name: "extra_disks", nested: { nesting: "LIST", attributes: computedCopy(diskAttrs) }, computed: true, description: "Data disks, in order." },
    { name: "network", nested: { nesting: "SINGLE", attributes: computedCopy(networkAttrs) }, computed: true, description: "Networking." },
    { name: "ssh_user", type: "string", computed: true, description: "Login user." },
    { name: "kernel", type: "string", computed: true, description: "Direct-boot kernel path, if any." },
    { name: "initrd", type: "string", computed: true, description: "Direct-boot initrd path, if any." },
    { name: "cmdline", type: "string", computed: true, description: "Direct-boot kernel command line, if any." },
    { name: "host", type: "string", computed: true, description: "The host that runs the VM." },
    { name: "placement_group", type: "string", computed: true, description: "The VM's placement group, or null." },
    { name: "shares", nested: { nesting: "LIST", attributes: computedCopy(shareAttrs) }, computed: true, description: "Host directories shared with the guest." },
    { name: "running", type: "bool", computed: true, description: "Whether the VM is running (or paused)." },
    { name: "on_panic", type: "string", computed: true, description: "What a guest panic does: dump, restart, stop or preserve." },
    ...computedOut,
  ],
};
export const VM_DATA_TYPE = impliedType(vmDataSchema);

const imageAttrs: Attr[] = [
  { name: "id", type: "string", computed: true, description: "Image id (file name without extension)." },
  { name: "name", type: "string", computed: true, description: "Display name (the alias if there is one)." },
  { name: "alias", type: "string", computed: true, description: "Short alias such as `debian13`, or null." },
  { name: "file_name", type: "string", computed: true, description: "File name in the server's base image directory." },
  { name: "format", type: "string", computed: true, description: "`raw` or `qcow2`." },
  { name: "virtual_size_gb", type: "number", computed: true, description: "Virtual size in GiB (the smallest possible `root_disk_gb`)." },
  { name: "hosts", type: ["list", "string"], computed: true, description: "The hosts that hold the image." },
];

export const imagesDataSchema: BlockSchema = {
  version: 0,
  description: "Lists the base images the rcloud server offers.",
  attributes: [{ name: "images", nested: { nesting: "LIST", attributes: imageAttrs }, computed: true, description: "The images, sorted by id." }],
};
export const IMAGES_DATA_TYPE = impliedType(imagesDataSchema);

export function notConfigured(): { state: null; diagnostics: Diagnostic[] } {
  return { state: null, diagnostics: [errorDiag("Provider not configured", "The rcloud provider configuration is not known yet; data sources need a configured provider.")] };
}

export function validateVmData(c: CtyObject): Diagnostic[] {
  const given = ["id", "name"].filter((k) => c[k] !== null);
  if (given.length === 1 || given.some((k) => isUnknown(c[k]))) return [];
  return [errorDiag("Invalid rcloud_vm lookup", given.length === 0 ? "Set either id or name." : "Set either id or name, not both.")];
}

export async function readVmData(ctx: Ctx, c: CtyObject): Promise<{ state: CtyObject | null; diagnostics: Diagnostic[] }> {
  if (!ctx.client) return notConfigured();
  const ref = typeof c.id === "string" ? c.id : typeof c.name === "string" ? c.name : null;
  if (ref === null) return { state: null, diagnostics: validateVmData(c) };
  try {
    const vm = await ctx.client.getVm(ref);
    if (!vm) {
      const which = typeof c.id === "string" ? "id" : "name";
      return { state: null, diagnostics: [errorDiag("VM not found", `No VM with ${which} "${ref}" on ${ctx.client.endpoint}.`, [which])] };
    }
    if (typeof c.id === "string" && vm.id !== c.id) {
      return { state: null, diagnostics: [errorDiag("VM not found", `No VM with id "${ref}" on ${ctx.client.endpoint} (a VM is named so; use name = "${ref}").`, ["id"])] };
    }
    // The API resolves a reference shaped like an id as an id: a VM with another name is not this one.
    if (typeof c.id !== "string" && vm.name !== c.name) {
      return { state: null, diagnostics: [errorDiag("VM not found", `No VM named "${ref}" on ${ctx.client.endpoint} (${vm.id} is named "${vm.name}"; use id = "${ref}").`, ["name"])] };
    }
    return { state: await vmToState(ctx, vm, null), diagnostics: [] };
  } catch (e) {
    return { state: null, diagnostics: [diagFromError(e, `reading VM ${ref}`)] };
  }
}

export async function readImagesData(ctx: Ctx): Promise<{ state: CtyObject | null; diagnostics: Diagnostic[] }> {
  if (!ctx.client) return notConfigured();
  try {
    const images = (await ctx.client.listImages()).slice().sort((a, b) => a.id.localeCompare(b.id));
    return {
      state: {
        images: images.map((i) => ({ id: i.id, name: i.name, alias: i.alias, file_name: i.file_name, format: i.format, virtual_size_gb: i.virtual_size_gb, hosts: i.hosts })),
      },
      diagnostics: [],
    };
  } catch (e) {
    return { state: null, diagnostics: [diagFromError(e, "listing images")] };
  }
}
