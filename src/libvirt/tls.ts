/**
 * qemu+tls://: x509 as libvirt does it (files: tls-credentials.ts). The server's certificate
 * must chain to our CA file and name the host of the URI; `no_verify=1` skips both and says
 * so through onWarning. After the handshake libvirtd checks *our* certificate and address and
 * then sends one byte, 0x01, inside TLS (virNetServerClientCheckAccess); if it does not like
 * us it closes instead. Only after that byte does the RPC stream begin.
 */
import type { Socket } from "bun";
import { existsSync } from "node:fs";
import { homedir } from "node:os";
import { checkServerIdentity, type PeerCertificate } from "node:tls";
import { ConnectError } from "./errors.ts";
import { loadTlsCredentials, locateTlsCredentials, TlsCredentialError, type TlsCredentials } from "./tls-credentials.ts";
import { BunSocketTransport, registerTransport, type Transport, type TransportHandlers, type TransportOptions } from "./transport.ts";
import { flagParam, UriError, type LibvirtTarget } from "./uri.ts";

/** libvirtd's "you may talk now" byte. */
const CONFIRMATION = 0x01;

/** OpenSSL/BoringSSL verification codes that mean "not signed by a CA we trust". */
const UNKNOWN_CA = new Set([
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "CERT_SIGNATURE_FAILURE",
  "CERT_UNTRUSTED",
]);

/** Why the server's certificate is refused, in words that say what to fix. */
export function describeServerCertificateError(code: string | undefined, message: string, where: string, caFile: string): string {
  if (code && UNKNOWN_CA.has(code)) return `the TLS certificate of ${where} is not signed by the CA in ${caFile} (unknown CA: ${message})`;
  if (code === "CERT_HAS_EXPIRED") return `the TLS certificate of ${where} has expired`;
  if (code === "CERT_NOT_YET_VALID") return `the TLS certificate of ${where} is not valid yet`;
  if (code === "ERR_TLS_CERT_ALTNAME_INVALID") return `the TLS certificate of ${where} is not for that name: ${message}`;
  return `the TLS certificate of ${where} was refused: ${message}${code ? ` (${code})` : ""}`;
}

/** Bun says "Failed to connect"; the errno name says why. */
function socketErrorText(error: Error & { code?: string }): string {
  return error.code && !error.message.includes(error.code) ? `${error.message} (${error.code})` : error.message;
}

/** The host name the certificate must carry, as the URI spells it. */
function serverName(host: string): string {
  return host.toLowerCase();
}

function credentialsFor(target: LibvirtTarget, where: string): TlsCredentials {
  const paths = locateTlsCredentials(target.params.get("pkipath") || undefined, {
    privileged: process.geteuid?.() === 0,
    home: process.env.HOME ?? homedir(),
    exists: existsSync,
  });
  return loadTlsCredentials(paths, where, { sanityCheck: !flagParam(target, "no_sanity") });
}

function tlsFactory(target: LibvirtTarget, handlers: TransportHandlers, connectTimeoutMs: number, options: TransportOptions): Promise<Transport> {
  const host = target.host!;
  const where = `${host.includes(":") ? `[${host}]` : host}:${target.port}`;
  let creds: TlsCredentials;
  let verify: boolean;
  try {
    verify = !flagParam(target, "no_verify");
    creds = credentialsFor(target, where);
  } catch (e) {
    if (e instanceof TlsCredentialError || e instanceof UriError) return Promise.reject(new ConnectError(e.message, target.uri, { cause: e }));
    throw e;
  }
  if (!verify) options.onWarning?.(`libvirt connection ${target.uri}: the TLS certificate of ${where} is not verified (no_verify=1)`);
  if (target.params.has("tls_priority")) {
    options.onWarning?.(`libvirt connection ${target.uri}: tls_priority (a GnuTLS priority string) is ignored; rcloud uses BoringSSL's defaults`);
  }

  const transport = new BunSocketTransport(`tls ${where}`, handlers);
  return new Promise<Transport>((resolve, reject) => {
    /** Until the confirmation byte: connecting, handshaking, waiting for the byte. */
    let phase: "connecting" | "confirming" | "open" | "failed" = "connecting";
    const fail = (message: string, socket?: Socket<undefined>, cause?: unknown) => {
      if (phase === "open" || phase === "failed") return;
      phase = "failed";
      clearTimeout(timer);
      socket?.end();
      reject(new ConnectError(message, target.uri, { cause }));
    };
    const timer = setTimeout(() => fail(`timed out after ${connectTimeoutMs} ms connecting to libvirtd at ${where} over TLS (${phase})`), connectTimeoutMs);
    const refusedUs = () =>
      creds.cert
        ? `libvirtd at ${where} refused our client certificate ${creds.certFile} (or our address) after the TLS handshake: ` +
          `it is not signed by a CA the server trusts, or not on its tls_allowed_dn_list`
        : `libvirtd at ${where} closed the connection after the TLS handshake: we sent no client certificate ` +
          `(${creds.certFile} does not exist; use pkipath= or install one)`;

    const socketHandler = {
      handshake(socket: Socket<undefined>, success: boolean, authorizationError: Error | null) {
        if (phase !== "connecting") return;
        const peer = (socket as unknown as { getPeerCertificate(): PeerCertificate | null }).getPeerCertificate();
        let problem: { code: string | undefined; message: string } | null = null;
        if (!success || authorizationError) {
          const e = authorizationError as (Error & { code?: string }) | null;
          problem = { code: e?.code, message: e?.message ?? "the TLS handshake failed" };
        } else if (!peer) {
          problem = { code: undefined, message: "the server sent no certificate" };
        } else {
          const mismatch = checkServerIdentity(serverName(host), peer) as (Error & { code?: string }) | undefined;
          if (mismatch) problem = { code: mismatch.code ?? "ERR_TLS_CERT_ALTNAME_INVALID", message: mismatch.message };
        }
        if (problem && !peer) {
          fail(`the TLS handshake with ${where} failed: ${problem.message} (is that port libvirtd's listen_tls port?)`, socket, authorizationError ?? undefined);
          return;
        }
        if (problem) {
          if (verify) {
            fail(describeServerCertificateError(problem.code, problem.message, where, creds.caFile), socket, authorizationError ?? undefined);
            return;
          }
          options.onWarning?.(`libvirt connection ${target.uri}: accepting a TLS certificate that fails verification (no_verify=1): ${problem.message}`);
        }
        phase = "confirming";
      },
      data(socket: Socket<undefined>, data: Buffer) {
        if (phase === "open") {
          handlers.onData(data);
          return;
        }
        if (phase !== "confirming") return;
        if (data[0] !== CONFIRMATION) {
          fail(`libvirtd at ${where} did not confirm the TLS session (sent byte ${data[0]} instead of 1): ${refusedUs()}`, socket);
          return;
        }
        phase = "open";
        clearTimeout(timer);
        transport.attach(socket);
        resolve(transport);
        if (data.byteLength > 1) handlers.onData(data.subarray(1));
      },
      drain() {
        transport.flush();
      },
      close() {
        if (phase === "open") transport.finish(null);
        else if (phase === "confirming") fail(refusedUs());
        else fail(`libvirtd at ${where} closed the connection during the TLS handshake (is that port libvirtd's listen_tls port?)`);
      },
      end() {
        if (phase === "open") transport.finish(null);
        else if (phase === "confirming") fail(refusedUs());
      },
      error(_socket: Socket<undefined>, error: Error) {
        if (phase === "open") transport.finish(error);
        else fail(`TLS connection to libvirtd at ${where} failed: ${error.message}`, undefined, error);
      },
      connectError(_socket: Socket<undefined>, error: Error) {
        fail(`cannot connect to libvirtd at ${where}: ${socketErrorText(error)}`, undefined, error);
      },
    };
    Bun.connect({
      hostname: host,
      port: target.port!,
      // Verification happens in handshake() so that no_verify can warn instead of refusing.
      tls: { ca: creds.ca, cert: creds.cert ?? undefined, key: creds.key ?? undefined, rejectUnauthorized: false, serverName: serverName(host) },
      socket: socketHandler,
    }).catch((error: Error) => fail(`cannot connect to libvirtd at ${where}: ${socketErrorText(error)}`, undefined, error));
  });
}

registerTransport("tls", tlsFactory);
