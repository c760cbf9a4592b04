/** Parsing of the CLI's structured flag values (`--data-disk`, `--network`, `--share`, host and group names) into API request fields. */
import { DISK_BUSES, HOST_NAME_PATTERN, isDiskBus, isOneOf, NETWORK_MODES, PLACEMENT_GROUP_PATTERN, SHARE_TAG_PATTERN, SHARE_TRANSPORTS, type ShareTransport } from "../api-types/values.ts";
import { usageError } from "./errors.ts";
import { parseDiskGiB } from "./units.ts";

/** `--data-disk 100G[,type=nvme]` */
export function parseDataDisk(spec: string): { size_gb: number; type?: string } {
  const [size = "", ...opts] = spec.split(",");
  const disk: { size_gb: number; type?: string } = { size_gb: parseDiskGiB(size, "--data-disk size") };
  for (const o of opts) {
    const m = /^type=(.*)$/.exec(o);
    if (!m || !isDiskBus(m[1] ?? "")) {
      throw usageError(`invalid --data-disk '${spec}': expected SIZE[,type=${DISK_BUSES.join("|")}]`);
    }
    disk.type = m[1];
  }
  return disk;
}

const SHARE_TAG_RE = new RegExp(SHARE_TAG_PATTERN);

/**
 * `--share HOST_PATH:TAG[:ro|:rw][:9p|:virtiofs]`: the options are taken off the end, so a
 * host path may itself contain ':'. The server checks the path (inside vm_defaults.share_dirs).
 */
export function parseShare(spec: string): { host_path: string; tag: string; readonly?: boolean; transport?: ShareTransport } {
  const parts = spec.split(":");
  const share: { host_path: string; tag: string; readonly?: boolean; transport?: ShareTransport } = { host_path: "", tag: "" };
  while (parts.length > 2) {
    const last = parts[parts.length - 1]!;
    if ((last === "ro" || last === "rw") && share.readonly === undefined) share.readonly = last === "ro";
    else if (isOneOf(SHARE_TRANSPORTS, last) && share.transport === undefined) share.transport = last;
    else break;
    parts.pop();
  }
  const tag = parts.pop() ?? "";
  const path = parts.join(":");
  if (!path.startsWith("/") || !SHARE_TAG_RE.test(tag)) {
    throw usageError(`invalid --share '${spec}': expected HOST_PATH:TAG[:ro][:9p] with an absolute path on the server and a tag of letters, digits, '_' or '-'`);
  }
  share.host_path = path;
  share.tag = tag;
  return share;
}

const NETWORK_RE = new RegExp(`^(${NETWORK_MODES.join("|")})(?:=(.+))?$`);

/** `--network bridge[=NAME]|user|none` */
export function parseNetwork(spec: string): { mode: string; bridge?: string } {
  const m = NETWORK_RE.exec(spec);
  if (!m || (m[2] !== undefined && m[1] !== "bridge")) throw usageError(`invalid --network '${spec}': expected bridge[=NAME], user or none`);
  return m[2] !== undefined ? { mode: "bridge", bridge: m[2] } : { mode: m[1] as string };
}

const HOST_NAME_RE = new RegExp(HOST_NAME_PATTERN);
const PLACEMENT_GROUP_RE = new RegExp(PLACEMENT_GROUP_PATTERN);

/** A host name (`--host`, `--to`, `host show NAME`): checked here so a typo never reaches the server. */
export function parseHostName(value: string, what: string): string {
  if (!HOST_NAME_RE.test(value)) {
    throw usageError(`invalid ${what} '${value}': a host name is 1-63 lower-case letters, digits and '-', not starting or ending with '-' (rcloud host list)`);
  }
  return value;
}

/** `--placement-group G` */
export function parsePlacementGroup(value: string): string {
  if (!PLACEMENT_GROUP_RE.test(value)) {
    throw usageError(`invalid --placement-group '${value}': expected 1-63 lower-case letters, digits, '-' and '_', starting and ending with a letter or digit`);
  }
  return value;
}
