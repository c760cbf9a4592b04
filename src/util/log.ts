/** Structured logging to stderr: one JSON object per line, or plain text. */
export type Level = "debug" | "info" | "warn" | "error";
const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  (level: Level, msg: string, fields?: Record<string, unknown>): void;
}

export function createLogger(opts: { level: Level; format: "json" | "text" }, write: (line: string) => void = (l) => process.stderr.write(l + "\n")): Logger {
  const min = ORDER[opts.level];
  return (level, msg, fields = {}) => {
    if (ORDER[level] < min) return;
    const time = new Date().toISOString();
    if (opts.format === "json") {
      write(JSON.stringify({ time, level, msg, ...fields }, (_k, v) => (typeof v === "bigint" ? v.toString() : v)));
    } else {
      const extra = Object.entries(fields)
        .map(([k, v]) => `${k}=${typeof v === "string" ? JSON.stringify(v) : String(v)}`)
        .join(" ");
      write(`${time} ${level.toUpperCase().padEnd(5)} ${msg}${extra ? " " + extra : ""}`);
    }
  };
}

/**
 * `rcloud serve` only: a promise rejection nobody handles is logged (level error, with its
 * stack) instead of ending the server with every VM operation in flight. It is a bug either
 * way; the log line is what to report.
 */
export function logUnhandledRejections(log: Logger): void {
  process.on("unhandledRejection", (reason: unknown) => {
    const e = reason instanceof Error ? reason : null;
    log("error", "unhandled promise rejection (a bug; the server goes on)", { error: e ? e.message : String(reason), ...(e?.stack ? { stack: e.stack } : {}) });
  });
}
