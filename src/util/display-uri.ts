/**
 * libvirt URIs as API clients may see them. A host's URI can carry what only this machine
 * should know: the user name, and client-side parameters naming local files (`keyfile=`,
 * `known_hosts=`, `pkipath=`, `socket=`, `netcat=`, `command=`, `authfile=`).
 */

/** Client-side parameters whose values name things on this machine. */
const LOCAL_PARAMS = ["keyfile", "known_hosts", "pkipath", "socket", "netcat", "command", "authfile"];

/** The URI as the API shows it: no user info, no query parameters. */
export function displayUri(uri: string): string {
  return uri.replace(/^([^:]+:\/\/)[^@/]*@/, "$1").replace(/\?.*$/, "");
}

function decoded(s: string): string {
  try {
    return decodeURIComponent(s.replace(/\+/g, " "));
  } catch {
    return s;
  }
}

/**
 * `text` (an error message, a command line) with `uri` as displayUri shows it, and the values
 * of its local parameters and its user name taken out wherever they appear on their own
 * (a socket path in "cannot connect to unix socket …", "user@host" of ssh).
 */
export function hideUriSecrets(text: string, uri: string): string {
  let out = text.split(uri).join(displayUri(uri));
  const query = /\?([^#]*)/.exec(uri)?.[1] ?? "";
  for (const part of query.split("&")) {
    const eq = part.indexOf("=");
    if (eq < 0) continue;
    const key = decoded(part.slice(0, eq));
    const value = decoded(part.slice(eq + 1));
    if (LOCAL_PARAMS.includes(key) && value.length >= 2) out = out.split(value).join(`<${key}>`);
  }
  const user = /^[^:]+:\/\/([^@/?]*)@/.exec(uri)?.[1];
  if (user) out = out.split(`${decoded(user)}@`).join("");
  return out;
}
