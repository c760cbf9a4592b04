/**
 * Which events a subscriber gets: ?type=, ?vm=, ?project= (each a comma-separated list), and
 * the project a project token is confined to. Stream events (subscribed, gap, cut-off) are
 * about the stream itself and always pass.
 */
import type { ApiEvent } from "../api-types/json.ts";
import { EVENT_TYPES, type EventType } from "../api-types/values.ts";

export interface EventFilter {
  /** null: every type. */
  types: ReadonlySet<EventType> | null;
  /** VM names or ids; null: every VM (and events about no VM). */
  vms: ReadonlySet<string> | null;
  /** Projects; null: every project (and events of no project). */
  projects: ReadonlySet<string> | null;
}

export const ALL_EVENTS: EventFilter = { types: null, vms: null, projects: null };

export function matches(f: EventFilter, e: ApiEvent): boolean {
  if (e.type === "stream") return true;
  if (f.types !== null && !f.types.has(e.type)) return false;
  if (f.vms !== null && (e.vm === null || !(f.vms.has(e.vm.name) || (e.vm.id !== null && f.vms.has(e.vm.id))))) return false;
  if (f.projects !== null && (e.project === null || !f.projects.has(e.project))) return false;
  return true;
}

/** Thrown for a filter value that is not one of the known ones. */
export class FilterError extends Error {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(message);
  }
}

function list(value: string | null | undefined, max: number, field: string): string[] | null {
  if (value === null || value === undefined || value === "") return null;
  const items = value.split(",").map((s) => s.trim()).filter((s) => s !== "");
  if (items.length > max) throw new FilterError(field, `${field}: at most ${max} values`);
  for (const v of items) {
    if (v.length > 64 || !/^[A-Za-z0-9._-]+$/.test(v)) throw new FilterError(field, `${field}: ${JSON.stringify(v.slice(0, 64))} is not a valid name`);
  }
  return items.length > 0 ? items : null;
}

/**
 * The filter of a request's query. `confinedTo`: the caller's project when it may see only
 * that project's events (a project token); a ?project= naming another project is refused.
 */
export function parseFilter(query: { type?: string | null; vm?: string | null; project?: string | null }, confinedTo: string | null): EventFilter {
  const types = list(query.type, EVENT_TYPES.length, "type");
  for (const t of types ?? []) {
    if (!(EVENT_TYPES as readonly string[]).includes(t)) throw new FilterError("type", `type: ${JSON.stringify(t)} is not an event type (${EVENT_TYPES.join(", ")})`);
  }
  const vms = list(query.vm, 100, "vm");
  let projects = list(query.project, 100, "project");
  if (confinedTo !== null) {
    const other = projects?.find((p) => p !== confinedTo);
    if (other !== undefined) throw new FilterError("project", `project: your token is for project '${confinedTo}' and sees only its events, not '${other}'`);
    projects = [confinedTo];
  }
  return {
    types: types ? new Set(types as EventType[]) : null,
    vms: vms ? new Set(vms) : null,
    projects: projects ? new Set(projects) : null,
  };
}
