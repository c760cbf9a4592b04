/** Terraform diagnostics (tfplugin6 Diagnostic messages) and attribute paths. */

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
