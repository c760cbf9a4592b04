/**
 * Named crash points for the reliability tests (docs/reliability.md): each marks a step of a
 * create or delete where rcloud may die. They are armed only by the environment variable
 * RCLOUD_FAULT_POINTS, read once when this module loads, e.g.
 * `RCLOUD_FAULT_POINTS=create.after-define:kill` (several separated by commas). Unset, every
 * point is one Set lookup on an empty set and does nothing.
 *
 * `kill` sends SIGKILL to rcloud itself at that point: no finally blocks, no rollbacks, just
 * like a power cut or the OOM killer. `delay=MS` holds the operation there for MS
 * milliseconds (its locks held), so a test can line other requests up behind it.
 */

/** Every point, in the order a create or delete passes them. */
export const FAULT_POINTS = [
  // create (both drivers)
  "create.after-root-volume",
  "create.after-data-volume",
  "create.after-seed-upload",
  "create.before-define",
  "create.after-define",
  "create.before-start",
  "create.after-start",
  // delete (both drivers)
  "delete.after-destroy",
  "delete.after-undefine",
  // a host's listing answered, not yet in rcloud's cache of the host (delay only: a slow listing)
  "list.before-cache",
] as const;
export type FaultPoint = (typeof FAULT_POINTS)[number];

const KNOWN = new Set<string>(FAULT_POINTS);

/** What happens at an armed point: SIGKILL, or a pause of `ms` milliseconds. */
export type FaultAction = { kind: "kill" } | { kind: "delay"; ms: number };

/** Parses RCLOUD_FAULT_POINTS; an unknown name or action is an error (a typo must not arm nothing). */
export function parseFaultPoints(spec: string | undefined): Map<FaultPoint, FaultAction> {
  const armed = new Map<FaultPoint, FaultAction>();
  for (const item of (spec ?? "").split(",").map((s) => s.trim()).filter(Boolean)) {
    const [name, action = "kill"] = item.split(":");
    if (!name || !KNOWN.has(name)) throw new Error(`RCLOUD_FAULT_POINTS: unknown fault point ${JSON.stringify(name)} (known: ${FAULT_POINTS.join(", ")})`);
    const delay = /^delay=(\d{1,6})$/.exec(action);
    if (action !== "kill" && !delay) throw new Error(`RCLOUD_FAULT_POINTS: unknown action ${JSON.stringify(action)} for ${name} (known: kill, delay=MS)`);
    armed.set(name as FaultPoint, delay ? { kind: "delay", ms: Number(delay[1]) } : { kind: "kill" });
  }
  return armed;
}

const armed = parseFaultPoints(process.env["RCLOUD_FAULT_POINTS"]);

/** Dies here (SIGKILL) or waits (delay) if this point is armed; otherwise nothing. */
export async function faultPoint(name: FaultPoint): Promise<void> {
  if (armed.size === 0) return;
  const action = armed.get(name);
  if (!action) return;
  if (action.kind === "delay") {
    await Bun.sleep(action.ms);
    return;
  }
  process.stderr.write(`rcloud: fault point ${name} reached: SIGKILL\n`);
  process.kill(process.pid, "SIGKILL");
}
