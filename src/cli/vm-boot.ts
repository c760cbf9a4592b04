/**
 * `rcloud vm boot NAME --kernel FILE`: boots a kernel built on this machine. The kernel (and
 * initrd) are uploaded from here (PUT /vms/{id}/kernel, /initrd), the VM is restarted on
 * them (POST /vms/{id}/boot); with --wait, until SSH answers, printing the guest's `uname -r`.
 */
import { existsSync, statSync } from "node:fs";
import type { ApiBootFile, ApiVm, BootVmRequest } from "../api-types/json.ts";
import type { Command, Context } from "./context.ts";
import { CliError, EXIT, usageError } from "./errors.ts";
import { defaultPublicKey, privateKeyFor, sshArgs } from "./ssh.ts";
import { parseDurationMs } from "./units.ts";
import { Progress, waitReady } from "./wait.ts";

/** An upload of a few hundred MiB over a slow link, or a graceful stop and a boot. */
const UPLOAD_TIMEOUT_MS = 30 * 60_000;
const BOOT_TIMEOUT_MS = 15 * 60_000;

function localFile(path: string, flag: string): Blob {
  if (!existsSync(path) || !statSync(path).isFile()) throw usageError(`${flag} ${path}: no such file`);
  return Bun.file(path);
}

/** `uname -r` over SSH, tried again until it answers or `deadline` (sshd may accept before the guest is ready to log in). */
async function unameOverSsh(ctx: Context, vm: ApiVm, deadline: number): Promise<string> {
  const keyFlag = ctx.flag("ssh-key");
  const identity = keyFlag !== undefined ? privateKeyFor(keyFlag) : privateKeyFor(defaultPublicKey(ctx.io.env));
  if (keyFlag !== undefined && identity === null) throw usageError(`no private key for --ssh-key ${keyFlag}`);
  const argv = [ctx.io.env.RCLOUD_SSH_BINARY || "ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", ...sshArgs(vm, identity, ["uname", "-r"])];
  let last = "";
  for (;;) {
    const proc = Bun.spawn(argv, { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
    const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
    if (code === 0 && out.trim() !== "") return out.trim();
    last = err.trim() || `ssh exited with ${code}`;
    if (Date.now() > deadline) throw new CliError(`${vm.name} booted but SSH did not let us in: ${last}`, EXIT.error);
    await Bun.sleep(1000);
  }
}

export const BOOT_COMMANDS: Command[] = [
  {
    path: "vm boot",
    args: "NAME --kernel FILE",
    summary: "Boot a kernel you built: upload it from here and restart the VM on it",
    description:
      "Uploads --kernel (and --initrd) from this machine to the VM's host, stops the VM (gracefully unless --force) and starts it on " +
      "that kernel (direct boot) with --cmdline (default: the VM's current one). Without --kernel, --image boots the image's own kernel " +
      "from the disk again. --wait waits until SSH answers and prints the guest's 'uname -r'.",
    flags: [
      { name: "kernel", value: "FILE", help: "kernel image on this machine, e.g. arch/x86/boot/bzImage", complete: "file" },
      { name: "initrd", value: "FILE", help: "initramfs on this machine", complete: "file" },
      { name: "cmdline", value: "STRING", help: "kernel command line" },
      { name: "image", help: "boot the image's own kernel from the disk again (no upload)" },
      { name: "force", help: "power the VM off at once instead of a graceful shutdown" },
      { name: "wait", help: "wait until SSH answers; print the guest's uname -r" },
      { name: "ssh-key", short: "i", value: "FILE", help: "key for --wait's login (default ~/.ssh/id_ed25519 or id_rsa)", complete: "file" },
      { name: "timeout", value: "DURATION", help: "how long --wait waits (default 10m)" },
    ],
    minArgs: 1,
    maxArgs: 1,
    completeArg: "vm",
    async run(ctx) {
      const ref = ctx.args[0] as string;
      const kernel = ctx.flag("kernel");
      const initrd = ctx.flag("initrd");
      const image = ctx.bool("image");
      if (image && (kernel !== undefined || initrd !== undefined || ctx.flag("cmdline") !== undefined)) throw usageError("--image boots the disk's own kernel: no --kernel, --initrd or --cmdline with it");
      if (!image && kernel === undefined) throw usageError("vm boot needs --kernel FILE (or --image to boot from the disk again)");
      const timeoutMs = parseDurationMs(ctx.flag("timeout") ?? "10m", "--timeout");
      const files: [string, Blob][] = [];
      if (kernel !== undefined) files.push(["kernel", localFile(kernel, "--kernel")]);
      if (initrd !== undefined) files.push(["initrd", localFile(initrd, "--initrd")]);
      for (const [kind, file] of files) {
        const up = await ctx.api.upload<ApiBootFile>(ctx.api.vmPath(ref, `/${kind}`), file, UPLOAD_TIMEOUT_MS);
        ctx.note(`Uploaded the ${kind} (${up.size_bytes} bytes) to ${up.path}`);
      }
      const body: BootVmRequest = image ? { kernel: "image" } : { kernel: "uploaded", initrd: initrd !== undefined ? "uploaded" : "none" };
      const cmdline = ctx.flag("cmdline");
      if (cmdline !== undefined) body.cmdline = cmdline;
      if (ctx.bool("force")) body.force = true;
      let vm = await ctx.api.request<ApiVm>("POST", ctx.api.vmPath(ref, "/boot"), body, BOOT_TIMEOUT_MS);
      ctx.note(`VM ${vm.name} booted ${image ? "its image's kernel" : "the uploaded kernel"}, ${vm.state}`);
      let release: string | null = null;
      if (ctx.bool("wait")) {
        const deadline = Date.now() + timeoutMs;
        // Progress goes to stderr: stdout carries uname -r alone, for scripts.
        const progress = new Progress(ctx.io.stderr, false);
        vm = await waitReady(ctx.api, vm.id, { timeoutMs, endpointHost: new URL(ctx.endpoint).hostname.replace(/^\[|\]$/g, ""), progress });
        release = await unameOverSsh(ctx, vm, deadline);
      }
      await ctx.emit(release === null ? vm : { ...vm, uname_r: release }, () => release ?? `${vm.name} ${vm.state}`);
      return EXIT.ok;
    },
  },
];
