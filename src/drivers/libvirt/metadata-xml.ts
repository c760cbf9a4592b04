/**
 * Edits of rcloud's metadata element (`<rcloud:vm>`, read with DOMAIN_GET_METADATA) that keep
 * everything else in it as it was: parsed and rebuilt in document order by fast-xml-parser.
 */
import { XMLBuilder, XMLParser } from "fast-xml-parser";

const options = { preserveOrder: true, ignoreAttributes: false, attributeNamePrefix: "@_", parseTagValue: false, parseAttributeValue: false, trimValues: false } as const;
const parser = new XMLParser(options);
const builder = new XMLBuilder({ ...options, suppressEmptyNode: true });

type OrderedNode = Record<string, unknown>;
const localName = (tag: string): string => tag.slice(tag.indexOf(":") + 1);

/** The metadata element with its `updated_at` set to `iso`; null when it has none. */
export function withUpdatedAt(metadataXml: string, iso: string): string | null {
  const tree = parser.parse(metadataXml) as OrderedNode[];
  const root = tree.find((n) => Object.keys(n).some((k) => localName(k) === "vm"));
  if (!root) return null;
  const rootTag = Object.keys(root).find((k) => localName(k) === "vm")!;
  const children = root[rootTag] as OrderedNode[];
  const field = children.find((n) => Object.keys(n).some((k) => localName(k) === "updated_at"));
  if (!field) return null;
  const fieldTag = Object.keys(field).find((k) => localName(k) === "updated_at")!;
  field[fieldTag] = [{ "#text": iso }];
  return builder.build(tree) as string;
}
