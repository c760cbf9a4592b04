/** Aligned plain-text tables and key/value blocks for human output. */

/** Columns separated by three spaces, padded to the widest cell; no trailing blanks. */
export function formatTable(headers: string[], rows: (string | number | null | undefined)[][]): string {
  const cells = [headers, ...rows.map((r) => headers.map((_, i) => cell(r[i])))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? "").length)));
  return cells
    .map((r) =>
      r
        .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
        .join("   ")
        .trimEnd(),
    )
    .join("\n");
}

function cell(v: string | number | null | undefined): string {
  if (v === null || v === undefined || v === "") return "-";
  return String(v).replace(/[\r\n\t]/g, " ");
}

/** "Key:   value" lines with the values aligned; null/undefined values are skipped. */
export function formatFields(fields: [string, string | number | null | undefined][]): string {
  const shown = fields.filter(([, v]) => v !== null && v !== undefined);
  const width = Math.max(0, ...shown.map(([k]) => k.length + 1));
  return shown.map(([k, v]) => `${`${k}:`.padEnd(width)}  ${v}`).join("\n");
}
