/** Optional HTTPS for the API (server.tls.cert_file / key_file). */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LibvirtClient } from "../../src/libvirt/index.ts";
import { removePool, unixUri } from "../helpers/rig.ts";
import { mirrorToTestDriver, startTestServer, type TestServer } from "../helpers/server.ts";

const dir = mkdtempSync(join(tmpdir(), "rcloud-tls-"));
const poolName = `rctest-tls-${process.pid}`;
let server: TestServer | null = null;

afterAll(async () => {
  await server?.stop();
  const lv = await LibvirtClient.connect(unixUri("test"));
  await removePool(lv, poolName);
  await lv.close();
});

test("serves HTTPS with the configured certificate; plain HTTP is not spoken", async () => {
  const cert = join(dir, "cert.pem");
  const key = join(dir, "key.pem");
  const gen = Bun.spawnSync(
    ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", key, "-out", cert],
    { stderr: "pipe" },
  );
  if (gen.exitCode !== 0) throw new Error(`openssl failed (apt-get install openssl): ${gen.stderr.toString()}`);
  writeFileSync(join(dir, "img.raw"), "");
  truncateSync(join(dir, "img.raw"), 1024 ** 3);
  await mirrorToTestDriver(poolName, { imagesDir: dir });
  server = await startTestServer({
    server: { tls: { cert_file: cert, key_file: key } },
    libvirt: { uri: unixUri("test"), storage_pool_name: poolName, storage_pool_path: `/rctest/${poolName}` },
    images: { base_images_dir: dir },
  });
  expect(server.url.startsWith("https://")).toBe(true);
  const ca = readFileSync(cert, "utf8");
  let ok = false;
  for (let i = 0; i < 50 && !ok; i++) {
    const r = await fetch(`${server.url}/api/v1/health`, { tls: { ca } }).catch(() => null);
    ok = r?.status === 200;
    if (!ok) await Bun.sleep(100);
  }
  expect(ok).toBe(true);
  const images = (await (await fetch(`${server.url}/api/v1/images`, { tls: { ca } })).json()) as { images: { id: string }[] };
  expect(images.images[0]?.id).toBe("img");
  const plain = await fetch(server.url.replace("https://", "http://") + "/api/v1/health").then((r) => r.status, () => "refused");
  expect(plain).not.toBe(200);
});
