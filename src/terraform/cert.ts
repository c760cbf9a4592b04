/**
 * A self-signed ECDSA P-256 certificate for go-plugin's AutoMTLS, DER-encoded by hand with
 * node:crypto (no certificate builder exists there; libraries cost 25-350 ms at start-up).
 * Go's verifier needs: DNS SAN "localhost", valid now, serverAuth in the EKU. We copy
 * go-plugin's own extension set: CA, digitalSignature+keyCertSign, serverAuth+clientAuth.
 */
import { generateKeyPairSync, randomBytes, sign } from "node:crypto";

export interface ServerCert {
  certPem: string;
  keyPem: string;
  /** DER, for the handshake line. */
  der: Buffer;
}

function len(n: number): Buffer {
  if (n < 0x80) return Buffer.of(n);
  const bytes: number[] = [];
  for (let v = n; v > 0; v >>= 8) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

const tlv = (tag: number, ...parts: Buffer[]): Buffer => {
  const body = Buffer.concat(parts);
  return Buffer.concat([Buffer.of(tag), len(body.length), body]);
};
const seq = (...parts: Buffer[]) => tlv(0x30, ...parts);
const set = (...parts: Buffer[]) => tlv(0x31, ...parts);
const explicit = (n: number, ...parts: Buffer[]) => tlv(0xa0 + n, ...parts);
const octets = (b: Buffer) => tlv(0x04, b);
const bits = (b: Buffer, unused = 0) => tlv(0x03, Buffer.of(unused), b);
const utf8 = (s: string) => tlv(0x0c, Buffer.from(s, "utf8"));
const TRUE = Buffer.of(0x01, 0x01, 0xff);

function oid(dotted: string): Buffer {
  const [a = 0, b = 0, ...rest] = dotted.split(".").map(Number);
  const out = [a * 40 + b];
  for (const v of rest) {
    const chunk = [v & 0x7f];
    for (let x = Math.floor(v / 128); x > 0; x = Math.floor(x / 128)) chunk.unshift(0x80 | (x & 0x7f));
    out.push(...chunk);
  }
  return tlv(0x06, Buffer.from(out));
}

function time(d: Date): Buffer {
  // RFC 5280: UTCTime through 2049, GeneralizedTime from 2050.
  const iso = d.toISOString().replace(/[-:T]/g, "").slice(0, 14) + "Z"; // YYYYMMDDHHMMSSZ
  return d.getUTCFullYear() < 2050 ? tlv(0x17, Buffer.from(iso.slice(2))) : tlv(0x18, Buffer.from(iso));
}

const ext = (id: string, critical: boolean, value: Buffer) => seq(oid(id), ...(critical ? [TRUE] : []), octets(value));

export function makeServerCert(now = new Date()): ServerCert {
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const spki = publicKey.export({ type: "spki", format: "der" });
  const serial = randomBytes(16);
  // DER INTEGERs are minimal and signed: no leading 0x00 and no high bit in the first byte
  // (BoringSSL rejects a leading zero, about 1 certificate in 256 otherwise).
  serial[0] = ((serial[0] ?? 0) & 0x7f) | 0x40;
  const name = seq(set(seq(oid("2.5.4.10"), utf8("rcloud"))), set(seq(oid("2.5.4.3"), utf8("localhost"))));
  const sigAlg = seq(oid("1.2.840.10045.4.3.2")); // ecdsa-with-SHA256, no parameters
  const notBefore = new Date(now.getTime() - 30_000); // tolerate small clock skew, as go-plugin does
  const notAfter = new Date(now.getTime() + 10 * 365 * 86_400_000);
  const extensions = seq(
    ext("2.5.29.19", true, seq(TRUE)), // basicConstraints: CA
    ext("2.5.29.15", true, bits(Buffer.of(0x84), 2)), // keyUsage: digitalSignature, keyCertSign
    ext("2.5.29.37", false, seq(oid("1.3.6.1.5.5.7.3.1"), oid("1.3.6.1.5.5.7.3.2"))), // serverAuth, clientAuth
    ext("2.5.29.17", false, seq(tlv(0x82, Buffer.from("localhost")))), // SAN dNSName
  );
  const tbs = seq(
    explicit(0, tlv(0x02, Buffer.of(2))), // v3
    tlv(0x02, serial),
    sigAlg,
    name,
    seq(time(notBefore), time(notAfter)),
    name,
    spki,
    explicit(3, extensions),
  );
  const signature = sign("sha256", tbs, { key: privateKey, dsaEncoding: "der" });
  const der = seq(tbs, sigAlg, bits(signature));
  const b64 = der.toString("base64").replace(/(.{64})/g, "$1\n");
  return {
    der,
    certPem: `-----BEGIN CERTIFICATE-----\n${b64}${b64.endsWith("\n") ? "" : "\n"}-----END CERTIFICATE-----\n`,
    keyPem: privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
  };
}
