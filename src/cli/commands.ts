/** The CLI's commands: vm *, image *, host *, status. Each talks to the REST API only. */
import { createInterface } from "node:readline";
import { list } from "./args.ts";
import type { ApiConsole, ApiImage, ApiStatus, ApiVm, CopyImageRequest } from "../api-types/json.ts";
import { EVENT_TYPES, NETWORK_MODES, ON_PANIC_ACTIONS } from "../api-types/values.ts";
import type { Command, Context } from "./context.ts";
import { CliError, EXIT, usageError } from "./errors.ts";
import { EventFeed, eventLine } from "./events.ts";
import { followFile } from "./follow.ts";
import { defaultPublicKey, privateKeyFor, readPublicKeys, sshArgs } from "./ssh.ts";
import { parseDataDisk, parseHostName, parseNetwork, parsePlacementGroup, parseShare } from "./flags.ts";
import { HOST_COMMANDS } from "./host.ts";
import { consoleDetails, imageDetails, imageTable, statusText, vmDetails, vmTable } from "./render.ts";
import { TOKEN_COMMANDS } from "./token.ts";
import { SNAPSHOT_COMMANDS } from "./snapshot.ts";
import { UPDATE_COMMANDS } from "./vm-update.ts";
import { DEBUG_COMMANDS, parseOnPanic } from "./debug.ts";
import { BOOT_COMMANDS } from "./vm-boot.ts";
import { parseDiskGiB, parseDurationMs, parseMemoryMiB } from "./units.ts";
import { Progress, waitReady } from "./wait.ts";

// ---------------------------------------------------------------------------------------
// helpers

function one(ctx: Context): string {
  return ctx.args[0] as string;
}

async function getVm(ctx: Context, ref: string): Promise<ApiVm> {
  return ctx.api.request<ApiVm>("GET", ctx.api.vmPath(ref));
}

function timeoutFlag(ctx: Context, fallback: string): number {
  return parseDurationMs(ctx.flag("timeout") ?? fallback, "--timeout");
}

function endpointHost(ctx: Context): string {
  return new URL(ctx.endpoint).hostname.replace(/^\[|\]$/g, "");
}

/**
 * The VM's event stream, opened before the operation so none of its events is missed; null
 * when the server has none (an older rcloud): --wait polls then.
 */
async function vmEvents(ctx: Context, name: string): Promise<EventFeed | null> {
  try {
    return await EventFeed.open(ctx.api, { vm: name, follow: true });
  } catch (e) {
    if (e instanceof CliError && (e.exitCode === EXIT.notFound || e.exitCode === EXIT.unavailable)) return null;
    throw e;
  }
}

async function waitAndReport(ctx: Context, vm: ApiVm, timeoutMs: number, events: EventFeed | null): Promise<ApiVm> {
  const write = ctx.output === "table" ? ctx.io.stdout : ctx.io.stderr;
  const progress = new Progress(write, ctx.output === "table" ? ctx.io.stdoutIsTTY : false);
  progress.update(`${vm.name}: waiting for it to run and be reachable`);
  const ready = await waitReady(ctx.api, vm.id, { timeoutMs, endpointHost: endpointHost(ctx), progress, events });
  const where = ready.ip_address ? ` at ${ready.ip_address}${ready.ssh_port !== null ? `:${ready.ssh_port}` : ""}` : "";
  ctx.note(`VM ${ready.name} is ready${where}${ready.ip_address ? `; connect with: rcloud vm ssh ${ready.name}` : ""}`);
  return ready;
}

async function confirm(question: string): Promise<boolean> {
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    const answer = await new Promise<string>((resolve) => {
      rl.question(question, resolve);
      rl.once("close", () => resolve(""));
    });
    return /^y(es)?$/i.test(answer.trim());
  } finally {
    rl.close();
  }
}

// commands

/** `events --type` choices: stream events (gap, cut-off) pass every filter. */
const FILTERABLE_EVENT_TYPES = EVENT_TYPES.filter((t) => t !== "stream");

const vmRef = { minArgs: 1, maxArgs: 1, completeArg: "vm" as const };

export const COMMANDS: Command[] = [
  {
    path: "vm create",
    args: "NAME --image IMG",
    summary: "Create (and start) a VM",
    description:
      "Sizes take M/G/T suffixes (binary: 2G = 2GiB = 2048 MiB); plain numbers are MiB for --memory and GiB for disks. " +
      "Without --ssh-key, ~/.ssh/id_ed25519.pub (or ~/.ssh/id_rsa.pub) is installed for the SSH user when it exists. " +
      "--wait shows progress until the VM runs and is reachable: its IP address is known (bridge), or its forwarded SSH port answers (user networking).",
    flags: [
      { name: "image", value: "IMG", help: "base image: id, file name or alias (rcloud image list)", complete: "image" },
      { name: "vcpus", value: "N", help: "virtual CPUs" },
      { name: "memory", value: "SIZE", help: "memory, e.g. 2G or 2048M (plain number: MiB)" },
      { name: "disk", value: "SIZE", help: "root disk size, e.g. 20G (plain number: GiB)" },
      { name: "data-disk", value: "SIZE[,type=T]", repeat: true, help: "add a data disk (repeatable); T: virtio, nvme, scsi, ide" },
      { name: "network", value: "MODE", help: "bridge[=NAME], user or none", complete: NETWORK_MODES },
      { name: "restrict", help: "user networking: the guest reaches nothing but its forwarded ports" },
      {
        name: "share",
        value: "HOST_PATH:TAG[:ro][:9p]",
        repeat: true,
        help: "share a server directory (inside vm_defaults.share_dirs) with the guest, mounted at /mnt/TAG (repeatable); ro: read-only; 9p instead of virtiofs",
        complete: "file",
      },
      { name: "ssh-key", value: "FILE", help: "public key to install (default ~/.ssh/id_ed25519.pub or id_rsa.pub)", complete: "file" },
      { name: "no-ssh-key", help: "install no SSH key" },
      { name: "ssh-user", value: "USER", help: "user to create in the guest (server default: kdevops)" },
      { name: "kernel", value: "PATH", help: "direct kernel boot: kernel path on the server (inside vm_defaults.kernel_dir)", complete: "file" },
      { name: "initrd", value: "PATH", help: "direct kernel boot: initrd path on the server", complete: "file" },
      { name: "cmdline", value: "STRING", help: "direct kernel boot: kernel command line" },
      { name: "host", value: "HOST", help: "run it on this host (rcloud host list); default: the server places it", complete: "host" },
      { name: "placement-group", value: "GROUP", help: "VMs of one group go to different hosts while there are hosts left" },
      { name: "gdb", help: "expose QEMU's gdbstub on a host port (shown as GDB port; gdb: target remote HOST:PORT)" },
      { name: "on-panic", value: "ACTION", help: "when the guest panics: dump, restart, stop or preserve (server default: vm_defaults.on_panic)", complete: ON_PANIC_ACTIONS },
      { name: "no-start", help: "define the VM but do not start it" },
      { name: "wait", help: "wait until the VM runs and is reachable" },
      { name: "timeout", value: "DURATION", help: "how long --wait waits (default 10m), e.g. 90s, 10m" },
    ],
    minArgs: 1,
    maxArgs: 1,
    async run(ctx) {
      const image = ctx.flag("image");
      if (!image) throw usageError("vm create needs --image IMG (see 'rcloud image list')");
      if (ctx.bool("wait") && ctx.bool("no-start")) throw usageError("--wait and --no-start do not go together");
      const timeoutMs = timeoutFlag(ctx, "10m");
      const body: Record<string, unknown> = { name: one(ctx), image };
      const vcpus = ctx.flag("vcpus");
      if (vcpus !== undefined) {
        if (!/^\d+$/.test(vcpus) || Number(vcpus) < 1) throw usageError(`invalid --vcpus '${vcpus}': expected a positive whole number`);
        body.vcpus = Number(vcpus);
      }
      const memory = ctx.flag("memory");
      if (memory !== undefined) body.memory_mb = parseMemoryMiB(memory);
      const disk = ctx.flag("disk");
      if (disk !== undefined) body.root_disk_gb = parseDiskGiB(disk, "--disk size");
      const data = list(ctx.parsed, "data-disk");
      if (data.length) body.extra_disks = data.map(parseDataDisk);
      const shares = list(ctx.parsed, "share");
      if (shares.length) body.shares = shares.map(parseShare);
      const network: Record<string, unknown> = {};
      const net = ctx.flag("network");
      if (net !== undefined) Object.assign(network, parseNetwork(net));
      if (ctx.bool("restrict")) network.restrict = true;
      if (Object.keys(network).length) body.network = network;
      const sshUser = ctx.flag("ssh-user");
      if (sshUser !== undefined) body.ssh_user = sshUser;
      const keyFile = ctx.flag("ssh-key");
      if (keyFile !== undefined && ctx.bool("no-ssh-key")) throw usageError("--ssh-key and --no-ssh-key do not go together");
      const keyPath = keyFile ?? (ctx.bool("no-ssh-key") ? null : defaultPublicKey(ctx.io.env));
      if (keyPath) {
        const keys = readPublicKeys(keyPath);
        body.ssh_public_key = keys[0];
        if (keys.length > 1) body.ssh_public_keys = keys.slice(1);
      }
      for (const f of ["kernel", "initrd", "cmdline"]) {
        const v = ctx.flag(f);
        if (v !== undefined) body[f] = v;
      }
      const host = ctx.flag("host");
      if (host !== undefined) body.host = parseHostName(host, "--host");
      const group = ctx.flag("placement-group");
      if (group !== undefined) body.placement_group = parsePlacementGroup(group);
      if (ctx.bool("no-start")) body.start = false;
      if (ctx.bool("gdb")) body.debug = { gdb: true };
      const onPanic = ctx.flag("on-panic");
      if (onPanic !== undefined) body.on_panic = parseOnPanic(onPanic);

      const events = ctx.bool("wait") ? await vmEvents(ctx, one(ctx)) : null;
      try {
        let vm = await ctx.api.request<ApiVm>("POST", "/vms", body);
        if (ctx.output === "table") ctx.print(`Created VM ${vm.name} (${vm.id}) on host ${vm.host}, ${vm.state}`);
        if (ctx.bool("wait")) vm = await waitAndReport(ctx, vm, timeoutMs, events);
        if (ctx.output !== "table") await ctx.emit(vm, () => "");
      } finally {
        events?.close();
      }
      return EXIT.ok;
    },
  },
  {
    path: "vm list",
    args: "",
    summary: "List VMs",
    description: "A VM on a host that does not answer is shown from the host's last listing with state unknown, and its host as 'NAME (offline)'.",
    flags: [{ name: "host", value: "HOST", help: "only the VMs of this host", complete: "host" }],
    minArgs: 0,
    maxArgs: 0,
    names: true,
    async run(ctx) {
      const host = ctx.flag("host");
      const query = host === undefined ? "" : `?${new URLSearchParams({ host: parseHostName(host, "--host") })}`;
      const res = await ctx.api.request<{ vms: ApiVm[] }>("GET", `/vms${query}`);
      const vms = [...res.vms].sort((a, b) => a.name.localeCompare(b.name));
      await ctx.emit(res, () => (vms.length ? vmTable(vms) : "No VMs."), () => vms.map((v) => v.name));
      return EXIT.ok;
    },
  },
  {
    path: "vm show",
    args: "NAME",
    summary: "Show one VM (by name or id)",
    flags: [],
    ...vmRef,
    async run(ctx) {
      const vm = await getVm(ctx, one(ctx));
      await ctx.emit(vm, () => vmDetails(vm));
      return EXIT.ok;
    },
  },
  {
    path: "vm start",
    args: "NAME",
    summary: "Start a stopped VM (or resume a paused one)",
    flags: [
      { name: "wait", help: "wait until the VM runs and is reachable" },
      { name: "timeout", value: "DURATION", help: "how long --wait waits (default 10m)" },
    ],
    ...vmRef,
    async run(ctx) {
      const timeoutMs = timeoutFlag(ctx, "10m");
      const events = ctx.bool("wait") ? await vmEvents(ctx, one(ctx)) : null;
      try {
        let vm = await ctx.api.request<ApiVm>("POST", ctx.api.vmPath(one(ctx), "/start"));
        if (ctx.output === "table") ctx.print(`Started VM ${vm.name}, ${vm.state}`);
        if (ctx.bool("wait")) vm = await waitAndReport(ctx, vm, timeoutMs, events);
        if (ctx.output !== "table") await ctx.emit(vm, () => "");
      } finally {
        events?.close();
      }
      return EXIT.ok;
    },
  },
  {
    path: "vm stop",
    args: "NAME",
    summary: "Stop a VM: ACPI shutdown, forced off after the timeout",
    description:
      "The API answers once the VM is off. --wait also follows the VM's events until rcloud reports it stopped " +
      "(vm-stopped, with how: shutdown when the guest powered off, destroyed when it was forced) and shows them as they come.",
    flags: [
      { name: "force", help: "power off at once (no ACPI shutdown)" },
      { name: "timeout", value: "SECONDS", help: "how long the guest gets to shut down before it is forced off (server default: vm_defaults.stop_timeout_s); 30, 30s, 2m" },
      { name: "wait", help: "follow the VM's events until it is reported stopped" },
    ],
    ...vmRef,
    async run(ctx) {
      const q = new URLSearchParams();
      if (ctx.bool("force")) q.set("force", "true");
      const t = ctx.flag("timeout");
      let timeoutMs = 0;
      if (t !== undefined) {
        timeoutMs = parseDurationMs(t, "--timeout");
        q.set("timeout", String(Math.ceil(timeoutMs / 1000)));
      }
      const qs = q.size ? `?${q}` : "";
      const events = ctx.bool("wait") ? await vmEvents(ctx, one(ctx)) : null;
      try {
        const vm = await ctx.api.request<ApiVm>("POST", ctx.api.vmPath(one(ctx), `/stop${qs}`), undefined, 120_000 + timeoutMs);
        const how = events ? await stoppedEvent(ctx, events, vm.name, 60_000) : null;
        await ctx.emit(vm, () => `Stopped VM ${vm.name}, ${vm.state}${how ? ` (${how})` : ""}`);
      } finally {
        events?.close();
      }
      return EXIT.ok;
    },
  },
  {
    path: "vm reboot",
    args: "NAME",
    summary: "Reboot a running VM",
    flags: [],
    ...vmRef,
    async run(ctx) {
      const vm = await ctx.api.request<ApiVm>("POST", ctx.api.vmPath(one(ctx), "/reboot"));
      await ctx.emit(vm, () => `Rebooted VM ${vm.name}, ${vm.state}`);
      return EXIT.ok;
    },
  },
  {
    path: "vm delete",
    args: "NAME",
    summary: "Destroy a VM and its disks",
    description: "Asks for confirmation when stdin is a terminal, unless --yes is given; deletes without asking when stdin is not a terminal (scripts).",
    flags: [{ name: "yes", short: "y", help: "do not ask for confirmation" }],
    ...vmRef,
    async run(ctx) {
      const ref = one(ctx);
      if (!ctx.bool("yes") && ctx.io.stdinIsTTY) {
        if (!(await confirm(`Delete VM ${ref} and its disks? [y/N] `))) throw new CliError(`aborted; VM ${ref} was not deleted`, EXIT.error);
      }
      const res = await ctx.api.request<{ id: string; name: string; status: string }>("DELETE", ctx.api.vmPath(ref));
      await ctx.emit(res, () => `Deleted VM ${res.name} (${res.id})`);
      return EXIT.ok;
    },
  },
  {
    path: "vm console",
    args: "NAME",
    summary: "Attach to the serial console (--attach), or show how to reach it and follow its log",
    description:
      "With --attach (the default on a terminal): an interactive serial console through the API's websocket; Ctrl-] detaches. " +
      "Otherwise prints the console information of the API (type, log file, attach command, SSH endpoint) and, when the " +
      "serial log file is readable on this machine, prints its last lines and follows it (like tail -f) until Ctrl-C.",
    flags: [
      { name: "attach", help: "interactive console (default when stdin and stdout are a terminal)" },
      { name: "no-attach", help: "do not attach; show the information and follow the log" },
      { name: "no-follow", help: "print the console information only" },
      { name: "lines", short: "n", value: "N", help: "lines of the existing log to show first (default 50)" },
    ],
    ...vmRef,
    async run(ctx) {
      const ref = one(ctx);
      const interactive = process.stdin.isTTY === true && process.stdout.isTTY === true && ctx.output === "table";
      if (ctx.bool("attach") || (interactive && !ctx.bool("no-attach") && !ctx.bool("no-follow"))) {
        const { attachConsole } = await import("./attach.ts");
        return attachConsole({
          endpoint: ctx.api.endpoint,
          token: ctx.api.bearer,
          path: ctx.api.vmPath(ref, "/console/attach"),
          stdin: process.stdin,
          stdout: process.stdout,
          stderr: (s) => ctx.io.stderr(s),
        });
      }
      const info = await ctx.api.request<ApiConsole>("GET", ctx.api.vmPath(ref, "/console"));
      const lines = ctx.flag("lines") ?? "50";
      if (!/^\d+$/.test(lines)) throw usageError(`invalid --lines '${lines}': expected a whole number`);
      if (ctx.output !== "table") {
        await ctx.emit(info, () => "");
        return EXIT.ok;
      }
      const readable = info.log_file !== null && (await Bun.file(info.log_file).exists());
      const follow = readable && !ctx.bool("no-follow");
      const text = consoleDetails(info, ref, readable);
      if (!follow) {
        ctx.print(text);
        return EXIT.ok;
      }
      ctx.io.stderr(`${text}\n--- following ${info.log_file}; Ctrl-C to stop ---\n`);
      const ac = new AbortController();
      const onSig = () => ac.abort();
      process.on("SIGINT", onSig);
      process.on("SIGTERM", onSig);
      try {
        await followFile(info.log_file as string, (b) => process.stdout.write(b), { lines: Number(lines), signal: ac.signal });
      } finally {
        process.off("SIGINT", onSig);
        process.off("SIGTERM", onSig);
      }
      return EXIT.ok;
    },
  },
  {
    path: "vm ssh",
    args: "NAME [-- SSH-ARGS/COMMAND...]",
    summary: "SSH into a VM with the system ssh client",
    description:
      "Runs ssh with the VM's address, port (the forwarded port for user networking) and user, -i with the private half of " +
      "--ssh-key (default ~/.ssh/id_ed25519 or ~/.ssh/id_rsa, when present) and -o StrictHostKeyChecking=accept-new. " +
      "Words after NAME (after --, for words starting with -) go to ssh after the destination. Exits with ssh's exit code. " +
      "RCLOUD_SSH_BINARY overrides the ssh program.",
    flags: [{ name: "ssh-key", short: "i", value: "FILE", help: "key to use (the private key, or its .pub)", complete: "file" }],
    minArgs: 1,
    maxArgs: Infinity,
    completeArg: "vm",
    passthrough: true,
    async run(ctx) {
      const [ref = "", ...words] = ctx.args;
      const vm = await getVm(ctx, ref);
      const keyFlag = ctx.flag("ssh-key");
      const identity = keyFlag !== undefined ? privateKeyFor(keyFlag) : privateKeyFor(defaultPublicKey(ctx.io.env));
      if (keyFlag !== undefined && identity === null) throw usageError(`no private key for --ssh-key ${keyFlag}`);
      const argv = [ctx.io.env.RCLOUD_SSH_BINARY || "ssh", ...sshArgs(vm, identity, [...words, ...ctx.parsed.rest])];
      let proc: ReturnType<typeof Bun.spawn>;
      try {
        proc = Bun.spawn(argv, { stdio: ["inherit", "inherit", "inherit"] });
      } catch (e) {
        throw new CliError(`cannot run ${argv[0]}: ${(e as Error).message}`, EXIT.error);
      }
      // Ctrl-C belongs to the ssh session.
      const ignore = () => {};
      process.on("SIGINT", ignore);
      try {
        const code = await proc.exited;
        const sig = proc.signalCode;
        if (sig === null || sig === undefined) return code;
        return 128 + (typeof sig === "number" ? sig : (signalNumber(sig) ?? 0));
      } finally {
        process.off("SIGINT", ignore);
      }
    },
  },
  {
    path: "events",
    args: "",
    summary: "Show what happened to VMs and hosts (--follow: as it happens)",
    description:
      "Without --follow: the events the server still holds (events.buffer), oldest first. With --follow: events from now on " +
      "(or after --since ID), until Ctrl-C; a stream the server cut off is resumed after the last event shown. " +
      "-o json prints one JSON object per line, as the API sends them.",
    flags: [
      { name: "follow", short: "f", help: "keep printing events as they happen" },
      { name: "vm", value: "NAME", help: "only this VM's events (name or id)", complete: "vm" },
      { name: "type", value: "TYPE", help: `only these types: ${FILTERABLE_EVENT_TYPES.join(", ")} (comma-separated)`, complete: FILTERABLE_EVENT_TYPES },
      { name: "since", value: "ID", help: "start after this event id" },
    ],
    minArgs: 0,
    maxArgs: 0,
    async run(ctx) {
      const since = ctx.flag("since");
      if (since !== undefined && !/^\d{1,16}$/.test(since)) throw usageError(`invalid --since '${since}': expected an event id`);
      const follow = ctx.bool("follow");
      const feed = await EventFeed.open(ctx.api, {
        vm: ctx.flag("vm"),
        type: ctx.flag("type"),
        since: since !== undefined ? Number(since) : follow ? null : 0,
        follow,
      });
      const stop = () => feed.close();
      process.on("SIGINT", stop);
      process.on("SIGTERM", stop);
      try {
        for (;;) {
          const e = await feed.next();
          if (e === null) {
            // Cut off, or the server went away: resume where we were, unless we were only reading what is held.
            if (!follow || !feed.done) return EXIT.ok;
            await Bun.sleep(500);
            await feed.resume();
            continue;
          }
          if (ctx.output === "json") ctx.print(JSON.stringify(e));
          else if (ctx.output === "yaml") ctx.print(`---\n${(await import("yaml")).stringify(e)}`);
          else if (e.type === "stream") {
            if (e.action !== "subscribed") ctx.io.stderr(`rcloud: ${e.action}: ${e.detail}\n`);
          } else ctx.print(eventLine(e));
        }
      } catch (e) {
        if ((e as Error).name === "AbortError") return EXIT.ok; // Ctrl-C
        throw e;
      } finally {
        process.off("SIGINT", stop);
        process.off("SIGTERM", stop);
      }
    },
  },
  {
    path: "image list",
    args: "",
    summary: "List base images",
    flags: [],
    minArgs: 0,
    maxArgs: 0,
    names: true,
    async run(ctx) {
      const res = await ctx.api.request<{ images: ApiImage[] }>("GET", "/images");
      await ctx.emit(res, () => (res.images.length ? imageTable(res.images) : "No images."), () => res.images.map((i) => i.alias ?? i.id));
      return EXIT.ok;
    },
  },
  {
    path: "image show",
    args: "IMG",
    summary: "Show one base image (by id, file name or alias)",
    flags: [],
    minArgs: 1,
    maxArgs: 1,
    completeArg: "image",
    async run(ctx) {
      const img = await ctx.api.request<ApiImage>("GET", `/images/${encodeURIComponent(one(ctx))}`);
      await ctx.emit(img, () => imageDetails(img));
      return EXIT.ok;
    },
  },
  {
    path: "image copy",
    args: "IMG --to HOST",
    summary: "Copy a base image to another host",
    description:
      "The server streams the image from a host that has it (--from, default any online one) into the base image pool of --to, so VMs can be placed there. Needs an admin token when the server checks tokens.",
    flags: [
      { name: "to", value: "HOST", help: "the host to copy to (required)", complete: "host" },
      { name: "from", value: "HOST", help: "the host to copy from (default: any online host that has it)", complete: "host" },
      { name: "timeout", value: "DURATION", help: "how long the copy may take (default 1h)" },
    ],
    minArgs: 1,
    maxArgs: 1,
    completeArg: "image",
    async run(ctx) {
      const to = ctx.flag("to");
      if (to === undefined) throw usageError("image copy needs --to HOST (see 'rcloud host list')");
      const body: CopyImageRequest = { to: parseHostName(to, "--to") };
      const from = ctx.flag("from");
      if (from !== undefined) body.from = parseHostName(from, "--from");
      const timeoutMs = timeoutFlag(ctx, "1h");
      const img = await ctx.api.request<ApiImage>("POST", `/images/${encodeURIComponent(one(ctx))}/copy`, body, timeoutMs);
      await ctx.emit(img, () => `Copied image ${img.alias ?? img.id} to ${body.to}; it is on ${img.hosts.join(", ")}`);
      return EXIT.ok;
    },
  },
  {
    path: "status",
    args: "",
    summary: "Server, hypervisor and capacity overview",
    flags: [],
    minArgs: 0,
    maxArgs: 0,
    async run(ctx) {
      const s = await ctx.api.request<ApiStatus>("GET", "/status");
      await ctx.emit(s, () => statusText(ctx.endpoint, s));
      return EXIT.ok;
    },
  },
  ...UPDATE_COMMANDS,
  ...SNAPSHOT_COMMANDS,
  ...BOOT_COMMANDS,
  ...DEBUG_COMMANDS,
  ...HOST_COMMANDS,
  ...TOKEN_COMMANDS,
];

/** Follows a VM's events until vm-stopped (shown as they come on stderr); its detail. */
async function stoppedEvent(ctx: Context, events: EventFeed, name: string, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const left = deadline - Date.now();
    if (left <= 0) throw new CliError(`VM ${name} stopped, but no vm-stopped event came within ${Math.round(timeoutMs / 1000)} s`, EXIT.timeout);
    const e = await events.next(left);
    if (e === null) {
      if (events.done) await events.resume();
      continue;
    }
    if (e.type === "stream") continue;
    ctx.io.stderr(`${eventLine(e)}\n`);
    if (e.action === "vm-stopped") return e.detail;
  }
}

function signalNumber(sig: string): number | undefined {
  return ({ SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGSEGV: 11, SIGPIPE: 13, SIGTERM: 15 } as Record<string, number>)[sig];
}
