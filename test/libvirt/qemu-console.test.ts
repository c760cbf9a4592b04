/**
 * A real TCG guest under qemu:///system: define, start, read its boot banner through the
 * console stream, type a command and read the answer, destroy, undefine.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { LibvirtClient, remoteProcedures as P } from "../../src/libvirt/index.ts";
import type { RemoteNonnullDomain } from "../../src/codecs/generated/remote.ts";
import { ConsoleReader, tinyGuestXml } from "../helpers/guest.ts";
import { tcpUri, uniqueName, unixUri } from "../helpers/rig.ts";

const cleanup: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanup.reverse()) await c().catch(() => {});
});

async function bootAndTalk(uri: string): Promise<void> {
  const client = await LibvirtClient.connect(uri);
  cleanup.push(() => client.close());
  const name = uniqueName("console");
  const { dom } = await client.call(P.domainDefineXmlFlags, { xml: tinyGuestXml(name), flags: 1 });
  cleanup.push(async () => {
    await client.call(P.domainDestroy, { dom }).catch(() => {});
    await client.call(P.domainUndefineFlags, { dom, flags: 0 }).catch(() => {});
  });

  // Start paused so the console is attached before the first byte of boot output.
  const { dom: running } = await client.call(P.domainCreateWithFlags, { dom, flags: 1 /* START_PAUSED */ });
  const stream = await client.openStream(P.domainOpenConsole, { dom: running, dev_name: null, flags: 1 /* FORCE */ });
  const console = new ConsoleReader(stream.readable);
  const writer = stream.writable.getWriter();
  await client.call(P.domainResume, { dom: running });

  // The whole line: console output arrives in pieces, and "6" may come before ".1.0-…".
  const banner = await console.until(/RCLOUD-GUEST-BOOTED (\S+)\r?\n/, 90_000);
  expect(banner[1]).toMatch(/^\d+\.\d+/); // the kernel release

  const token = `hello-${Math.floor(Math.random() * 1e9)}`;
  // The guest's prompt (PS1 in scripts/lib/guest-image.sh); busybox follows it with a cursor
  // query (ESC [6n), so it is not at the end of a line.
  await console.until(/rcloud# /, 30_000);
  await writer.write(new TextEncoder().encode(`echo ${token.replace("-", "-''")}\r`));
  await console.until(new RegExp(`^${token}\\r?$`, "m"), 30_000);

  // Destroying the domain ends the stream from the daemon's side.
  await client.call(P.domainDestroy, { dom: running });
  await stream.done;
  await console.finished;
  expect(stream.status).toBe("closed");
  await client.call(P.domainUndefineFlags, { dom, flags: 0 });
  const left = await client.call(P.connectListAllDomains, { need_results: 1, flags: 0 });
  expect(left.domains.map((d: RemoteNonnullDomain) => d.name)).not.toContain(name);
}

describe("qemu driver with a TCG guest", () => {
  test("console stream both ways over the unix socket", async () => {
    await bootAndTalk(unixUri("qemu"));
  });

  test("console stream both ways over TCP to a second libvirtd", async () => {
    await bootAndTalk(tcpUri("qemu", "remote"));
  });
});
