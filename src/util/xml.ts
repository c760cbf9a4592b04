/**
 * A tiny XML builder for the documents rcloud sends to libvirt (volumes, pools). Every text
 * node and attribute value is escaped here, so user input can never become markup.
 */

export interface XmlNode {
  readonly tag: string;
  readonly attrs: Readonly<Record<string, string | number | undefined>>;
  readonly children: readonly (XmlNode | string | number)[];
}

export function el(tag: string, attrs: XmlNode["attrs"] = {}, ...children: (XmlNode | string | number | null | undefined | false)[]): XmlNode {
  if (!/^[A-Za-z_][A-Za-z0-9_.:-]*$/.test(tag)) throw new Error(`invalid XML tag name: ${tag}`);
  return { tag, attrs, children: children.filter((c): c is XmlNode | string | number => c !== null && c !== undefined && c !== false) };
}

export function escapeXml(s: string): string {
  return s.replace(/[<>&'"]/g, (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", "'": "&apos;", '"': "&quot;" })[c]!);
}

export function renderXml(node: XmlNode): string {
  let attrs = "";
  for (const [k, v] of Object.entries(node.attrs)) {
    if (v === undefined) continue;
    if (!/^[A-Za-z_][A-Za-z0-9_.:-]*$/.test(k)) throw new Error(`invalid XML attribute name: ${k}`);
    attrs += ` ${k}='${escapeXml(String(v))}'`;
  }
  if (node.children.length === 0) return `<${node.tag}${attrs}/>`;
  const inner = node.children.map((c) => (typeof c === "object" ? renderXml(c) : escapeXml(String(c)))).join("");
  return `<${node.tag}${attrs}>${inner}</${node.tag}>`;
}
