/**
 * The x509 files of a qemu+tls:// client, found and checked the way libvirt 9.0 does it
 * (virnettlscontext.c): `pkipath=DIR` → DIR/cacert.pem, DIR/clientcert.pem, DIR/clientkey.pem;
 * otherwise, for a non-root user, each file from ~/.pki/libvirt/ if it is there (the cert and
 * key as a pair); otherwise /etc/pki/CA/cacert.pem, /etc/pki/libvirt/clientcert.pem and
 * /etc/pki/libvirt/private/clientkey.pem. The CA file is required; a client without
 * certificate and key connects without one (the server then decides).
 *
 * Before connecting, our own certificate is checked against the CA (libvirt's "sanity check";
 * `no_sanity=1` skips it): dates, not a CA, allowed for TLS clients, signed by the CA.
 */
import { X509Certificate } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";

export const SYSTEM_CA_FILE = "/etc/pki/CA/cacert.pem";
export const SYSTEM_CLIENT_CERT_FILE = "/etc/pki/libvirt/clientcert.pem";
export const SYSTEM_CLIENT_KEY_FILE = "/etc/pki/libvirt/private/clientkey.pem";

export interface TlsCredentialPaths {
  caFile: string;
  certFile: string;
  keyFile: string;
}

export interface TlsCredentials extends TlsCredentialPaths {
  ca: string;
  /** Client certificate and key (PEM); null when neither file exists. */
  cert: string | null;
  key: string | null;
}

/** A credential problem, said with the file and the host it was for. */
export class TlsCredentialError extends Error {
  override readonly name = "TlsCredentialError";
}

export function locateTlsCredentials(
  pkipath: string | undefined,
  env: { privileged: boolean; home: string | undefined; exists: (path: string) => boolean },
): TlsCredentialPaths {
  if (pkipath) {
    return { caFile: join(pkipath, "cacert.pem"), certFile: join(pkipath, "clientcert.pem"), keyFile: join(pkipath, "clientkey.pem") };
  }
  const paths = { caFile: SYSTEM_CA_FILE, certFile: SYSTEM_CLIENT_CERT_FILE, keyFile: SYSTEM_CLIENT_KEY_FILE };
  if (!env.privileged && env.home) {
    const user = join(env.home, ".pki/libvirt");
    if (env.exists(join(user, "cacert.pem"))) paths.caFile = join(user, "cacert.pem");
    if (env.exists(join(user, "clientcert.pem")) && env.exists(join(user, "clientkey.pem"))) {
      paths.certFile = join(user, "clientcert.pem");
      paths.keyFile = join(user, "clientkey.pem");
    }
  }
  return paths;
}

function readPem(path: string, what: string, forHost: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (e) {
    const why = (e as NodeJS.ErrnoException).code === "ENOENT" ? "no such file" : (e as Error).message;
    throw new TlsCredentialError(`cannot read the ${what} ${path} for ${forHost}: ${why}`);
  }
}

/** Every certificate in a PEM bundle. */
export function parseCertificates(pem: string, file: string, forHost: string): X509Certificate[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) throw new TlsCredentialError(`${file} (for ${forHost}) holds no PEM certificate`);
  return blocks.map((b) => {
    try {
      return new X509Certificate(b);
    } catch (e) {
      throw new TlsCredentialError(`${file} (for ${forHost}) holds a certificate that cannot be read: ${(e as Error).message}`);
    }
  });
}

const TLS_CLIENT_PURPOSE = "1.3.6.1.5.5.7.3.2";

/** libvirt's checks of our own certificate before it is used (virNetTLSContextSanityCheckCredentials). */
export function sanityCheckClientCertificate(certPem: string, certFile: string, caPem: string, caFile: string, forHost: string, now = new Date()): void {
  const cas = parseCertificates(caPem, caFile, forHost);
  const [cert] = parseCertificates(certPem, certFile, forHost);
  for (const [c, what, file] of [[cert!, "client certificate", certFile], ...cas.map((ca) => [ca, "CA certificate", caFile] as const)] as const) {
    if (new Date(c.validTo) < now) throw new TlsCredentialError(`the ${what} ${file} (for ${forHost}) expired on ${c.validTo}`);
    if (new Date(c.validFrom) > now) throw new TlsCredentialError(`the ${what} ${file} (for ${forHost}) is not valid before ${c.validFrom}`);
  }
  if (cert!.ca) throw new TlsCredentialError(`the client certificate ${certFile} (for ${forHost}) is a CA certificate, not a client's`);
  const purposes = cert!.keyUsage; // Node names the extended key usage OIDs so
  if (purposes && purposes.length > 0 && !purposes.includes(TLS_CLIENT_PURPOSE)) {
    throw new TlsCredentialError(`the client certificate ${certFile} (for ${forHost}) does not allow use by a TLS client`);
  }
  if (!cas.some((ca) => cert!.checkIssued(ca) && cert!.verify(ca.publicKey))) {
    throw new TlsCredentialError(
      `the client certificate ${certFile} is not signed by the CA in ${caFile} (for ${forHost}; issuer '${cert!.issuer.replaceAll("\n", ", ")}')`,
    );
  }
}

/** Reads the files (and checks our certificate unless told not to). */
export function loadTlsCredentials(paths: TlsCredentialPaths, forHost: string, opts: { sanityCheck: boolean }): TlsCredentials {
  const ca = readPem(paths.caFile, "CA certificate", forHost);
  const haveCert = existsSync(paths.certFile);
  const haveKey = existsSync(paths.keyFile);
  if (haveCert !== haveKey) {
    const [present, missing] = haveCert ? [paths.certFile, paths.keyFile] : [paths.keyFile, paths.certFile];
    throw new TlsCredentialError(`the client ${haveCert ? "key" : "certificate"} ${missing} for ${forHost} does not exist (its pair ${present} does)`);
  }
  if (!haveCert) return { ...paths, ca, cert: null, key: null };
  const cert = readPem(paths.certFile, "client certificate", forHost);
  const key = readPem(paths.keyFile, "client key", forHost);
  if (opts.sanityCheck) sanityCheckClientCertificate(cert, paths.certFile, ca, paths.caFile, forHost);
  return { ...paths, ca, cert, key };
}
