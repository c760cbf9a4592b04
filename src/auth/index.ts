/** API tokens, roles, project scoping and quotas. */
export { assertAccess, canAccess, checkQuota, projectForCreate, type Quota, type QuotaConfig, quotaFor, type Usage } from "./scope.ts";
export { type Caller, createToken, hashSecret, PROJECT_RE, readTokensFile, revokeToken, type Role, type TokenEntry, TokenStore, writeTokensFile } from "./tokens.ts";

/** Whether auth is on: `auto` turns it on unless the server binds to a loopback address only. */
export function authEnabled(setting: "auto" | boolean, bindHost: string): boolean {
  if (setting !== "auto") return setting;
  const h = bindHost.replace(/^\[|\]$/g, "").toLowerCase();
  return !(h === "localhost" || h === "::1" || /^127\.\d+\.\d+\.\d+$/.test(h) || h === "::ffff:127.0.0.1");
}

/** The token in an `Authorization: Bearer <token>` header, or null. */
export function bearerToken(header: string | null): string | null {
  if (header === null) return null;
  const m = /^Bearer[ \t]+([^\s]+)[ \t]*$/i.exec(header);
  return m ? (m[1] as string) : null;
}
