/** Domain XML for the rig's tiny guest: direct kernel boot, serial console, no network at all. */
import { copyFileSync, existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { rig } from "./rig.ts";

const DISK_IMAGE = process.env.RCLOUD_TEST_DISK_IMAGE ?? "/var/cache/rcloud-test/disk/rcloud-tiny.qcow2";

/** A base-image directory in the rig holding the bootable test disk (image "rcloud-tiny"). */
export function tinyDiskImageDir(dirName: string): string {
  if (!existsSync(DISK_IMAGE)) throw new Error(`${DISK_IMAGE} missing: run scripts/lib/disk-image.sh (scripts/test does)`);
  const dir = join(rig().rigDir, dirName);
  mkdirSync(dir, { recursive: true });
  copyFileSync(DISK_IMAGE, join(dir, "rcloud-tiny.qcow2"));
  return dir;
}

export function tinyGuestXml(name: string, opts: { memoryMiB?: number; emulator?: string } = {}): string {
  const { kernel, initrd } = rig().guest;
  // Test-controlled values only (name from uniqueName); product code renders XML from templates.
  return `<domain type='qemu'>
  <name>${name}</name>
  <memory unit='MiB'>${opts.memoryMiB ?? 192}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>${kernel}</kernel>
    <initrd>${initrd}</initrd>
    <cmdline>console=ttyS0 panic=-1 quiet</cmdline>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>${opts.emulator ? `\n    <emulator>${opts.emulator}</emulator>` : ""}
    <serial type='pty'><target port='0'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <memballoon model='none'/>
  </devices>
</domain>`;
}

/** Reads a console stream into a growing string; resolves `until` when a pattern shows up. */
export class ConsoleReader {
  text = "";
  private readonly decoder = new TextDecoder();
  private waiters: { re: RegExp; resolve: (m: RegExpMatchArray) => void }[] = [];
  readonly finished: Promise<void>;

  constructor(readable: ReadableStream<Uint8Array>) {
    this.finished = (async () => {
      for await (const chunk of readable) {
        this.text += this.decoder.decode(chunk, { stream: true });
        this.waiters = this.waiters.filter((w) => {
          const m = this.text.match(w.re);
          if (m) w.resolve(m);
          return !m;
        });
      }
    })();
  }

  until(re: RegExp, timeoutMs = 60_000): Promise<RegExpMatchArray> {
    const m = this.text.match(re);
    if (m) return Promise.resolve(m);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`console did not show ${re} within ${timeoutMs} ms; got:\n${this.text.slice(-2000)}`)), timeoutMs);
      this.waiters.push({
        re,
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m);
        },
      });
    });
  }
}

/**
 * Shell lines (inside `for d in /sys/block/*`) that set `$s` to the block device's serial from
 * where each bus puts it (busybox has no udev for /dev/disk/by-id): virtio-blk's own
 * attribute, the NVMe controller's, and for SCSI and SATA disks VPD page 0x80 (unit serial
 * number, after its 4-byte header; libata answers it from the ATA IDENTIFY serial).
 */
export const BLOCK_SERIAL_LINES = [
  "  s=''",
  "  [ -r $d/serial ] && s=$(cat $d/serial)",
  "  [ -z \"$s\" ] && [ -r $d/device/serial ] && s=$(cat $d/device/serial)",
  "  [ -z \"$s\" ] && [ -r $d/device/vpd_pg80 ] && s=$(tail -c +5 $d/device/vpd_pg80 | tr -d '\\0')",
];
