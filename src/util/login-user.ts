/**
 * The guest login user rcloud has cloud-init create: the config default, the API's ssh_user
 * and the seed builder all apply this one rule.
 */

// useradd's default NAME_REGEX, minus the trailing "$" machine-account form.
export const LOGIN_USER_RE = /^[a-z_][a-z0-9_-]{0,31}$/;

/** Why `user` cannot be the login user, or null when it can. */
export function loginUserProblem(user: unknown): string | null {
  if (typeof user !== "string" || !LOGIN_USER_RE.test(user)) {
    return `must be a Unix user name (a lower-case letter or _, then lower-case letters, digits, _ or -; up to 32), got ${JSON.stringify(user)}`;
  }
  // The seed sets disable_root, which would lock the very account being created.
  if (user === "root") return "must not be root: cloud-init creates this user with passwordless sudo and disables root login";
  return null;
}
