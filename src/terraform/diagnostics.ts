/** Terraform diagnostics (tfplugin6 Diagnostic messages) and attribute paths. */
import { ApiError } from "./client.ts";

export type PathStep = string | number;

export interface ProtoAttributePath {
  steps: ({ attribute_name: string } | { element_key_int: number } | { element_key_string: string })[];
}

export interface Diagnostic {
  severity: "ERROR" | "WARNING";
  summary: string;
  detail: string;
  attribute: ProtoAttributePath | null;
}

export function toProtoPath(path: readonly PathStep[]): ProtoAttributePath {
  return { steps: path.map((s) => (typeof s === "number" ? { element_key_int: s } : { attribute_name: s })) };
}

export function errorDiag(summary: string, detail: string, path?: readonly PathStep[]): Diagnostic {
  return { severity: "ERROR", summary, detail, attribute: path?.length ? toProtoPath(path) : null };
}

export function warningDiag(summary: string, detail: string, path?: readonly PathStep[]): Diagnostic {
  return { severity: "WARNING", summary, detail, attribute: path?.length ? toProtoPath(path) : null };
}

export const hasErrors = (d: readonly Diagnostic[]): boolean => d.some((x) => x.severity === "ERROR");

const SUMMARIES: Record<string, string> = {
  validation_error: "Invalid VM settings",
  image_not_found: "Image not found",
  capacity_exceeded: "Not enough capacity on the rcloud host",
  insufficient_storage: "The storage pool on the rcloud host is full",
  name_taken: "VM name already in use",
  not_found: "Not found",
  invalid_state: "VM is in the wrong state for this operation",
  conflict: "Conflicting operation in progress",
  hypervisor_unavailable: "rcloud cannot reach its hypervisor",
  host_unavailable: "The VM's rcloud host is offline",
  share_not_allowed: "Shared directory not allowed",
  unauthorized: "rcloud rejected the credentials",
  forbidden: "rcloud denied the operation",
  unsupported: "Not supported by this rcloud server",
  internal_error: "rcloud internal error",
  unreachable: "Cannot reach the rcloud API",
  cancelled: "Cancelled",
  bad_response: "Unexpected answer from the rcloud API",
};

/** Turns an API field (`memory_mb`, `extra_disks.0.size_gb`, `network.bridge`) into a schema path. */
export function fieldToPath(field: string | null, known: readonly string[]): PathStep[] | undefined {
  if (!field) return undefined;
  const parts: PathStep[] = field
    .replace(/\[(\d+)\]/g, ".$1")
    .split(".")
    .filter(Boolean)
    .map((p) => (/^\d+$/.test(p) ? Number(p) : p));
  const head = parts[0];
  // API-only spellings of the same setting.
  const alias: Record<string, string> = { memory_mb: "memory_gb", max_memory_mb: "max_memory_gb", base_image: "image", ssh_public_keys: "ssh_public_key" };
  if (typeof head === "string" && alias[head]) return [alias[head] as string];
  // PATCH's extra_disks.add[i] / extra_disks.remove[i] are not positions in the resource's list.
  if (head === "extra_disks" && (parts[1] === "add" || parts[1] === "remove")) return ["extra_disks"];
  return typeof head === "string" && known.includes(head) ? parts : undefined;
}

/** Any error from a handler as a diagnostic; API errors keep code, message and field. */
export function diagFromError(e: unknown, context: string, knownAttrs: readonly string[] = []): Diagnostic {
  if (e instanceof ApiError) {
    const summary = SUMMARIES[e.code] ?? `rcloud API error (${e.code})`;
    return errorDiag(summary, context ? `${context}: ${e.message}` : e.message, fieldToPath(e.field, knownAttrs));
  }
  const err = e as Error;
  return errorDiag("rcloud provider error", `${context ? `${context}: ` : ""}${err?.message ?? String(e)}`);
}
