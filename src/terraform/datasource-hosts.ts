/** Data source `rcloud_hosts`: the fleet's hypervisor hosts as GET /api/v1/hosts reports them. */
import type { ApiHost } from "../api-types/json.ts";
import { HOST_STATES } from "../api-types/values.ts";
import type { CtyObject } from "./cty.ts";
import { notConfigured } from "./datasources.ts";
import { type Diagnostic, diagFromError } from "./diagnostics.ts";
import type { Ctx } from "./resource-vm.ts";
import { type Attr, type BlockSchema, impliedType } from "./schema.ts";

const vcpusAndMemory = (what: string): Attr[] => [
  { name: "vcpus", type: "number", computed: true, description: `vCPUs ${what}.` },
  { name: "memory_mb", type: "number", computed: true, description: `Memory in MiB ${what}.` },
];

const hostAttrs: Attr[] = [
  { name: "name", type: "string", computed: true, description: "Host name; what `rcloud_vm.host` takes." },
  { name: "uri", type: "string", computed: true, description: "The libvirt URI, without user info or client-side parameters." },
  { name: "driver", type: "string", computed: true, description: "`libvirt` or `qemu`." },
  { name: "state", type: "string", computed: true, description: `${HOST_STATES.map((s) => `\`${s}\``).join(", ")}: a cordoned host takes no new VMs.` },
  { name: "labels", type: ["map", "string"], computed: true, description: "The host's labels from the server's `hosts:` configuration." },
  { name: "hostname", type: "string", computed: true, description: "The host's own hostname, from its last answer (null before the first)." },
  { name: "cpus", type: "number", computed: true, description: "Physical CPUs (null while the host never answered)." },
  { name: "memory_mb", type: "number", computed: true, description: "Total memory in MiB." },
  { name: "available_memory_mb", type: "number", computed: true, description: "Free memory in MiB at the last contact." },
  { name: "allocated", nested: { nesting: "SINGLE", attributes: vcpusAndMemory("given to rcloud's VMs on the host (VMs not stopped, creates in flight)") }, computed: true, description: "What rcloud's VMs use." },
  { name: "capacity", nested: { nesting: "SINGLE", attributes: vcpusAndMemory("placement allows (with overcommit)") }, computed: true, description: "What placement allows." },
  { name: "vms", type: "number", computed: true, description: "Number of rcloud VMs on the host." },
  { name: "last_contact", type: "string", computed: true, description: "Time of the host's last answer (RFC 3339), or null." },
  { name: "last_error", type: "string", computed: true, description: "Why the host last failed to answer, or null." },
];

export const hostsDataSchema: BlockSchema = {
  version: 0,
  description: "Lists the hypervisor hosts of the rcloud server's fleet (needs an admin token when the server checks tokens).",
  attributes: [{ name: "hosts", nested: { nesting: "LIST", attributes: hostAttrs }, computed: true, description: "The hosts, in the server's configuration order." }],
};
export const HOSTS_DATA_TYPE = impliedType(hostsDataSchema);

function hostToState(h: ApiHost): CtyObject {
  return {
    name: h.name,
    uri: h.uri,
    driver: h.driver,
    state: h.state,
    labels: { ...h.labels },
    hostname: h.hostname,
    cpus: h.cpus,
    memory_mb: h.memory_mb,
    available_memory_mb: h.available_memory_mb,
    allocated: { vcpus: h.allocated.vcpus, memory_mb: h.allocated.memory_mb },
    capacity: { vcpus: h.capacity.vcpus, memory_mb: h.capacity.memory_mb },
    vms: h.vms,
    last_contact: h.last_contact,
    last_error: h.last_error,
  };
}

export async function readHostsData(ctx: Ctx): Promise<{ state: CtyObject | null; diagnostics: Diagnostic[] }> {
  if (!ctx.client) return notConfigured();
  try {
    return { state: { hosts: (await ctx.client.listHosts()).map(hostToState) }, diagnostics: [] };
  } catch (e) {
    return { state: null, diagnostics: [diagFromError(e, "listing hosts")] };
  }
}
