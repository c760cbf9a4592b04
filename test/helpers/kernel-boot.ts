/**
 * "Boot a kernel I just built", the same on every driver: the test disk's own kernel and
 * initramfs (which boot the tiny disk to SSH when direct-booted) uploaded through the API,
 * the VM restarted on them with a command line carrying a marker, a real SSH login that
 * reads `uname -r` and /proc/cmdline, and back to the image's kernel.
 */
import { expect } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { waitForSsh } from "./ssh.ts";

export const DISK_KERNEL = process.env.RCLOUD_TEST_DISK_KERNEL ?? "/var/cache/rcloud-test/disk/vmlinuz";
export const DISK_INITRD = process.env.RCLOUD_TEST_DISK_INITRD ?? "/var/cache/rcloud-test/disk/initrd.img";

export function requireDiskKernel(): void {
  for (const f of [DISK_KERNEL, DISK_INITRD]) if (!existsSync(f)) throw new Error(`${f} missing: run scripts/lib/disk-image.sh (scripts/test does)`);
}

/** The guest's `uname -r` as the test disk's kernel reports it (its modules directory name). */
export function diskKernelRelease(): string {
  // A bzImage carries its version string at the offset its header names (0x20e, + 0x200).
  const k = readFileSync(DISK_KERNEL);
  const at = k.readUInt16LE(0x20e) + 0x200;
  return k.subarray(at, at + 200).toString("latin1").split(" ")[0]!;
}

export interface Upload {
  status: number;
  json: any;
}

/** PUT a file (or bytes) as the raw body of /vms/{ref}/{kind}. */
export async function upload(base: string, ref: string, kind: "kernel" | "initrd", body: Blob | Uint8Array, headers: Record<string, string> = {}): Promise<Upload> {
  const res = await fetch(`${base}/api/v1/vms/${ref}/${kind}`, { method: "PUT", headers: { "content-type": "application/octet-stream", ...headers }, body });
  const text = await res.text();
  let json: unknown = null;
  try {
    json = JSON.parse(text);
  } catch {
    json = null;
  }
  return { status: res.status, json };
}

type Req = (method: string, path: string, body?: unknown) => Promise<{ status: number; json: any; text: string }>;

/** Uploads the disk's kernel and initrd, boots them with a marker on the command line, logs in; returns what the guest said. */
export async function bootUploaded(base: string, req: Req, vm: { id: string; name: string }, ssh: { port: () => Promise<number>; user: string; key: string }, marker: string) {
  const k = await upload(base, vm.id, "kernel", Bun.file(DISK_KERNEL));
  expect(k.status).toBe(200);
  expect(k.json).toMatchObject({ vm: vm.id, kind: "kernel", size_bytes: Bun.file(DISK_KERNEL).size });
  const i = await upload(base, vm.name, "initrd", Bun.file(DISK_INITRD));
  expect(i.status).toBe(200);
  expect(i.json.size_bytes).toBe(Bun.file(DISK_INITRD).size);
  const booted = await req("POST", `/api/v1/vms/${vm.name}/boot`, { cmdline: `console=ttyS0,115200 rcloud.marker=${marker}`, force: true });
  expect(booted.status).toBe(200);
  expect(booted.json.state).toBe("running");
  expect(booted.json.kernel).toBe(k.json.path);
  expect(booted.json.initrd).toBe(i.json.path);
  expect(booted.json.cmdline).toBe(`console=ttyS0,115200 rcloud.marker=${marker}`);
  const out = await waitForSsh({ port: await ssh.port(), user: ssh.user, key: ssh.key }, "uname -r; cat /proc/cmdline", 300_000);
  return { kernel: k.json, initrd: i.json, vm: booted.json, release: out.split("\n")[0]!.trim(), cmdline: out.split("\n")[1] ?? "" };
}
