/** Exit codes of the rcloud CLI (a contract for scripts; see docs/cli.md) and the error that carries one. */

export const EXIT = {
  ok: 0,
  error: 1,
  usage: 2,
  notFound: 3,
  conflict: 4,
  validation: 5,
  unavailable: 6,
  timeout: 7,
} as const;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

export const EXIT_CODE_HELP = `Exit codes:
  0  success
  1  generic error
  2  usage error (unknown command or flag, bad value)
  3  not found (API 404)
  4  conflict or invalid state (API 409, e.g. name taken, VM not running)
  5  validation error (API 400/422, e.g. unknown image, capacity exceeded) or storage
     full (API 507)
  6  server unreachable or hypervisor unavailable (API 503)
  7  timeout (--wait)`;

export class CliError extends Error {
  override readonly name = "CliError";
  constructor(
    message: string,
    readonly exitCode: ExitCode = EXIT.error,
  ) {
    super(message);
  }
}

export const usageError = (message: string): CliError => new CliError(message, EXIT.usage);

/** Statuses of a request too large to be read (body, URL, headers): an argument far too long. */
export const TOO_LARGE = new Set([413, 414, 431]);

/** The exit code for an HTTP error status of the API. */
export function exitCodeForStatus(status: number): ExitCode {
  if (status === 404) return EXIT.notFound;
  if (status === 409) return EXIT.conflict;
  // 507 (storage full) was a 422 capacity_exceeded before: scripts keep their exit code.
  if (status === 400 || status === 422 || status === 507) return EXIT.validation;
  if (status === 503) return EXIT.unavailable;
  if (TOO_LARGE.has(status)) return EXIT.usage;
  return EXIT.error;
}
