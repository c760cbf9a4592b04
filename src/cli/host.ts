/** `rcloud host list|show|cordon|uncordon`: the fleet's hypervisor hosts (GET/POST /hosts; admin tokens). */
import type { ApiHost } from "../api-types/json.ts";
import type { Command, Context } from "./context.ts";
import { EXIT } from "./errors.ts";
import { parseHostName } from "./flags.ts";
import { hostDetails, hostTable } from "./render.ts";

const hostRef = { args: "NAME", minArgs: 1, maxArgs: 1, completeArg: "host" as const, flags: [] };

function hostPath(ctx: Context, suffix = ""): string {
  const name = parseHostName(ctx.args[0] as string, "host name");
  return `/hosts/${encodeURIComponent(name)}${suffix}`;
}

function cordonCommand(cordon: boolean): Command {
  const verb = cordon ? "cordon" : "uncordon";
  return {
    path: `host ${verb}`,
    summary: cordon ? "Cordon a host: it takes no new VMs (its VMs keep running; kept across server restarts)" : "Uncordon a host: it takes new VMs again",
    ...hostRef,
    async run(ctx) {
      const h = await ctx.api.request<ApiHost>("POST", hostPath(ctx, `/${verb}`));
      await ctx.emit(h, () => `${cordon ? "Cordoned" : "Uncordoned"} host ${h.name}, ${h.state}${cordon ? "; it takes no new VMs" : ""}`);
      return EXIT.ok;
    },
  };
}

export const HOST_COMMANDS: Command[] = [
  {
    path: "host list",
    args: "",
    summary: "List the hypervisor hosts: state, capacity, what rcloud's VMs use",
    description:
      "ALLOCATED is what rcloud's VMs on the host are given (VMs not stopped and creates in flight); placement allows up to the capacity that 'rcloud host show' prints. Needs an admin token when the server checks tokens.",
    flags: [],
    minArgs: 0,
    maxArgs: 0,
    names: true,
    async run(ctx) {
      const res = await ctx.api.request<{ hosts: ApiHost[] }>("GET", "/hosts");
      await ctx.emit(res, () => (res.hosts.length ? hostTable(res.hosts) : "No hosts."), () => res.hosts.map((h) => h.name));
      return EXIT.ok;
    },
  },
  {
    path: "host show",
    summary: "Show one host",
    ...hostRef,
    async run(ctx) {
      const h = await ctx.api.request<ApiHost>("GET", hostPath(ctx));
      await ctx.emit(h, () => hostDetails(h));
      return EXIT.ok;
    },
  },
  cordonCommand(true),
  cordonCommand(false),
];
