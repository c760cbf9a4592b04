/** The hand-built AutoMTLS certificate: valid DER every time, with what Go's verifier needs. */
import { expect, test } from "bun:test";
import { createPrivateKey, createPublicKey, X509Certificate } from "node:crypto";
import { connect, createServer } from "node:tls";
import { makeServerCert } from "../../src/terraform/cert.ts";

test("500 certificates all parse, verify and carry SAN localhost", () => {
  for (let i = 0; i < 500; i++) {
    const c = makeServerCert();
    const x = new X509Certificate(c.der);
    expect(x.verify(x.publicKey)).toBe(true);
    expect(x.subjectAltName).toBe("DNS:localhost");
    expect(x.ca).toBe(true);
    expect(/^[0-7]/.test(x.serialNumber) && !/^00/.test(x.serialNumber)).toBe(true); // positive, minimal
    expect(new X509Certificate(c.certPem).fingerprint256).toBe(x.fingerprint256);
    expect(createPublicKey(createPrivateKey(c.keyPem)).export({ format: "der", type: "spki" })).toEqual(x.publicKey.export({ format: "der", type: "spki" }));
  }
});

test("is valid now and a TLS client that trusts only it connects to localhost", async () => {
  const c = makeServerCert();
  const x = new X509Certificate(c.der);
  expect(new Date(x.validFrom).getTime()).toBeLessThanOrEqual(Date.now());
  expect(new Date(x.validTo).getTime()).toBeGreaterThan(Date.now() + 365 * 86_400_000);
  const server = createServer({ key: c.keyPem, cert: c.certPem }, (s) => s.end("ok"));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as { port: number }).port;
  const got = await new Promise<string>((resolve, reject) => {
    const s = connect({ host: "127.0.0.1", port, servername: "localhost", ca: c.certPem }, () => s.on("data", (d) => resolve(d.toString())));
    s.on("error", reject);
  });
  server.close();
  expect(got).toBe("ok");
});
