/**
 * `rcloud token create|list|revoke`: edit the server's tokens file directly (no server needed).
 * The file is --tokens-file, else $RCLOUD_TOKENS_FILE, else /etc/rcloud/tokens.json.
 */
import { createToken, DEFAULT_TOKENS_FILE, readTokensFile, revokeToken, type Role } from "../auth/tokens.ts";
import type { Command, Context } from "./context.ts";
import { CliError, EXIT, usageError } from "./errors.ts";
import { formatTable } from "./table.ts";

const FILE_FLAG = { name: "tokens-file", value: "FILE", help: `tokens file (env RCLOUD_TOKENS_FILE; default ${DEFAULT_TOKENS_FILE})`, complete: "file" as const };

function tokensFile(ctx: Context): string {
  return ctx.flag("tokens-file") ?? (ctx.io.env.RCLOUD_TOKENS_FILE || DEFAULT_TOKENS_FILE);
}

function fileError(e: unknown, file: string): CliError {
  const err = e as NodeJS.ErrnoException;
  if (err.code === "EACCES" || err.code === "EPERM") return new CliError(`cannot write ${file}: permission denied (run as the user that owns it, or pass --tokens-file)`);
  return new CliError(`${file}: ${err.message}`);
}

export const TOKEN_COMMANDS: Command[] = [
  {
    path: "token create",
    args: "--name NAME --role admin|user [--project P]",
    summary: "Create an API token (prints the secret once)",
    description:
      "Adds a token to the tokens file and prints it once as rc_<id>_<secret>; only a sha-256 hash of the secret is stored. A user token sees and manages only its project's VMs; an admin token sees all. The server picks the change up within a second.",
    flags: [
      { name: "name", value: "NAME", help: "what the token is for (shown by token list)" },
      { name: "role", value: "ROLE", help: "admin or user", complete: ["admin", "user"] },
      { name: "project", value: "P", help: "the project a user token is confined to (required for user tokens)" },
      FILE_FLAG,
    ],
    minArgs: 0,
    maxArgs: 0,
    async run(ctx) {
      const name = ctx.flag("name");
      const role = ctx.flag("role");
      if (!name) throw usageError("'rcloud token create' needs --name NAME");
      if (role !== "admin" && role !== "user") throw usageError("'rcloud token create' needs --role admin or --role user");
      const project = ctx.flag("project") ?? null;
      if (role === "user" && project === null) throw usageError("a user token needs --project P");
      const file = tokensFile(ctx);
      let out: ReturnType<typeof createToken>;
      try {
        out = createToken(file, { name, role: role as Role, project });
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code) throw fileError(e, file);
        throw new CliError((e as Error).message, EXIT.validation);
      }
      const { entry, token } = out;
      await ctx.emit({ id: entry.id, name: entry.name, role: entry.role, project: entry.project, created_at: entry.created_at, token }, () =>
        [`Created token ${entry.id} (${entry.role}${entry.project ? `, project ${entry.project}` : ""}) in ${file}.`, "It is shown only now; store it safely:", "", token].join("\n"),
      );
      return EXIT.ok;
    },
  },
  {
    path: "token list",
    args: "",
    summary: "List API tokens (ids, names, roles, projects; never secrets)",
    flags: [FILE_FLAG],
    minArgs: 0,
    maxArgs: 0,
    names: true,
    async run(ctx) {
      const file = tokensFile(ctx);
      let tokens;
      try {
        tokens = readTokensFile(file).tokens;
      } catch (e) {
        throw fileError(e, file);
      }
      const rows = tokens.map((t) => ({ id: t.id, name: t.name, role: t.role, project: t.project, created_at: t.created_at }));
      await ctx.emit(
        { tokens: rows },
        () => formatTable(["ID", "NAME", "ROLE", "PROJECT", "CREATED"], rows.map((r) => [r.id, r.name, r.role, r.project, r.created_at])),
        () => rows.map((r) => r.id),
      );
      return EXIT.ok;
    },
  },
  {
    path: "token revoke",
    args: "ID",
    summary: "Revoke an API token (the server stops accepting it within a second)",
    flags: [FILE_FLAG],
    minArgs: 1,
    maxArgs: 1,
    async run(ctx) {
      const id = ctx.args[0] as string;
      const file = tokensFile(ctx);
      let removed: boolean;
      try {
        removed = revokeToken(file, id);
      } catch (e) {
        throw fileError(e, file);
      }
      if (!removed) throw new CliError(`no token with id '${id}' in ${file}; see 'rcloud token list'`, EXIT.notFound);
      ctx.note(`Revoked token ${id}.`);
      return EXIT.ok;
    },
  },
];
