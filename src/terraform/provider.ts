/**
 * tfplugin6 Provider RPC handlers. Handlers never throw: every failure is a diagnostic,
 * because a gRPC error reaches the user only as "Plugin did not respond".
 */
import { RcloudClient } from "./client.ts";
import { type CtyObject, type CtyType, type CtyValue, decodeJson, decodeMsgpack, encodeMsgpack, isUnknown, isWhollyKnown } from "./cty.ts";
import { IMAGES_DATA_TYPE, imagesDataSchema, readImagesData, readVmData, validateVmData, VM_DATA_TYPE, vmDataSchema } from "./datasources.ts";
import { HOSTS_DATA_TYPE, hostsDataSchema, readHostsData } from "./datasource-hosts.ts";
import { type Diagnostic, diagFromError, errorDiag, hasErrors, type PathStep, toProtoPath } from "./diagnostics.ts";
import { applyVm, type Ctx, importVm, planVm, readVm, upgradeVmState, validateVm, VM_TYPE, type VmPrivate, vmSchema } from "./resource-vm.ts";
import { type BlockSchema, impliedType, toProtoSchema } from "./schema.ts";

export const DEFAULT_ENDPOINT = "http://localhost:8765";
export const DEFAULT_TIMEOUT = "10m";

/** Wire shapes (proto-loader objects with keepCase, enums as strings). */
export interface DynamicValueMsg {
  msgpack?: Uint8Array | null;
  json?: Uint8Array | null;
}
export type RpcRequest = Record<string, unknown>;
export type RpcResponse = Record<string, unknown>;
export type RpcHandler = (req: RpcRequest) => Promise<RpcResponse>;

export const providerSchema: BlockSchema = {
  version: 0,
  description: "The rcloud provider manages VMs on an rcloud server through its REST API.",
  attributes: [
    { name: "endpoint", type: "string", optional: true, description: `rcloud API base URL. Default: the \`RCLOUD_ENDPOINT\` environment variable, else \`${DEFAULT_ENDPOINT}\`.` },
    { name: "token", type: "string", optional: true, sensitive: true, description: "API token, sent as `Authorization: Bearer`. Default: the `RCLOUD_TOKEN` environment variable." },
    { name: "timeout", type: "string", optional: true, description: `How long to wait for a VM to start and get an address, as a duration like \`90s\`, \`10m\` or \`1h30m\`. Default: \`${DEFAULT_TIMEOUT}\`.` },
  ],
};
const PROVIDER_TYPE = impliedType(providerSchema);

const resources: Record<string, { schema: BlockSchema; type: CtyType }> = { rcloud_vm: { schema: vmSchema, type: VM_TYPE } };
type DataRead = (ctx: Ctx, config: CtyObject) => Promise<{ state: CtyObject | null; diagnostics: Diagnostic[] }>;
const dataSources: Record<string, { schema: BlockSchema; type: CtyType; read: DataRead }> = {
  rcloud_vm: { schema: vmDataSchema, type: VM_DATA_TYPE, read: readVmData },
  rcloud_images: { schema: imagesDataSchema, type: IMAGES_DATA_TYPE, read: readImagesData },
  rcloud_hosts: { schema: hostsDataSchema, type: HOSTS_DATA_TYPE, read: readHostsData },
};

/** Go-style duration ("1h30m", "90s", "500ms") in milliseconds, or null. */
export function parseDuration(s: string): number | null {
  const units: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  if (!/^(\d+(\.\d+)?(ms|s|m|h))+$/.test(s)) return null;
  let total = 0;
  for (const m of s.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)) total += Number(m[1]) * (units[m[2] as string] ?? 0);
  return total;
}

function decodeDv(dv: unknown, type: CtyType): CtyValue {
  const v = dv as DynamicValueMsg | null | undefined;
  if (v?.msgpack && v.msgpack.length > 0) return decodeMsgpack(v.msgpack, type);
  if (v?.json && v.json.length > 0) return decodeJson(v.json, type); // Terraform sends msgpack; accept both
  return null;
}
const encodeDv = (value: CtyValue, type: CtyType): DynamicValueMsg => ({ msgpack: encodeMsgpack(value, type) });
const asObj = (v: CtyValue): CtyObject | null => (v !== null && typeof v === "object" && !Array.isArray(v) && !isUnknown(v) ? (v as CtyObject) : null);

function readPrivate(b: unknown): VmPrivate {
  if (!(b instanceof Uint8Array) || b.length === 0) return {};
  try {
    return JSON.parse(new TextDecoder().decode(b)) as VmPrivate;
  } catch {
    return {};
  }
}
const writePrivate = (p: VmPrivate): Buffer => (Object.keys(p).length ? Buffer.from(JSON.stringify(p)) : Buffer.alloc(0));

function unknownType(kind: string, name: unknown): Diagnostic {
  return errorDiag(`Unknown ${kind} type`, `The rcloud provider has no ${kind} "${String(name)}".`);
}

export interface ProviderOptions {
  env?: Record<string, string | undefined>;
  log?: Ctx["log"];
  version?: string;
}

/** One provider instance: configuration plus the handler table. */
export function createProvider(opts: ProviderOptions = {}): { handlers: Record<string, RpcHandler>; stop(): void } {
  const env = opts.env ?? process.env;
  const log = opts.log ?? (() => {});
  let abort = new AbortController();
  const ctx: Ctx = { client: null, timeoutMs: 600_000, signal: abort.signal, imageIds: new Map(), log };

  const schemaResponse = () => ({
    provider: toProtoSchema(providerSchema),
    resource_schemas: Object.fromEntries(Object.entries(resources).map(([k, r]) => [k, toProtoSchema(r.schema)])),
    data_source_schemas: Object.fromEntries(Object.entries(dataSources).map(([k, r]) => [k, toProtoSchema(r.schema)])),
    functions: {},
    ephemeral_resource_schemas: {},
    diagnostics: [],
    server_capabilities: { plan_destroy: false, get_provider_schema_optional: true, move_resource_state: false },
  });

  function validateProviderConfig(c: CtyObject): Diagnostic[] {
    const d: Diagnostic[] = [];
    if (typeof c.endpoint === "string") {
      let ok = false;
      try {
        const u = new URL(c.endpoint);
        ok = u.protocol === "http:" || u.protocol === "https:";
      } catch {
        ok = false;
      }
      if (!ok) d.push(errorDiag("Invalid endpoint", `endpoint must be an http:// or https:// URL such as ${DEFAULT_ENDPOINT}, got "${c.endpoint}".`, ["endpoint"]));
    }
    if (typeof c.timeout === "string" && parseDuration(c.timeout) === null) {
      d.push(errorDiag("Invalid timeout", `timeout must be a duration like "90s", "10m" or "1h30m", got "${c.timeout}".`, ["timeout"]));
    }
    return d;
  }

  const handlers: Record<string, RpcHandler> = {
    async GetMetadata() {
      return {
        server_capabilities: { plan_destroy: false, get_provider_schema_optional: true, move_resource_state: false },
        diagnostics: [],
        data_sources: Object.keys(dataSources).map((type_name) => ({ type_name })),
        resources: Object.keys(resources).map((type_name) => ({ type_name })),
        functions: [],
        ephemeral_resources: [],
      };
    },

    async GetProviderSchema() {
      return schemaResponse();
    },

    async ValidateProviderConfig(req) {
      const c = asObj(decodeDv(req.config, PROVIDER_TYPE)) ?? {};
      return { diagnostics: validateProviderConfig(c) };
    },

    async ConfigureProvider(req) {
      const c = asObj(decodeDv(req.config, PROVIDER_TYPE)) ?? {};
      const diagnostics = validateProviderConfig(c);
      if (hasErrors(diagnostics)) return { diagnostics };
      if (!isWhollyKnown(c)) {
        // Known only after apply: plan without API look-ups; reads keep the prior state.
        ctx.client = null;
        return { diagnostics };
      }
      const endpoint = (typeof c.endpoint === "string" ? c.endpoint : undefined) ?? env.RCLOUD_ENDPOINT ?? DEFAULT_ENDPOINT;
      const token = (typeof c.token === "string" ? c.token : undefined) ?? env.RCLOUD_TOKEN ?? null;
      ctx.timeoutMs = parseDuration(typeof c.timeout === "string" ? c.timeout : DEFAULT_TIMEOUT) ?? 600_000;
      ctx.imageIds = new Map();
      ctx.client = new RcloudClient({
        endpoint,
        token,
        requestTimeoutMs: Math.max(ctx.timeoutMs, 60_000),
        signal: ctx.signal,
        userAgent: `terraform-provider-rcloud/${opts.version ?? "dev"} (terraform ${String(req.terraform_version ?? "?")})`,
      });
      log("INFO", `configured: endpoint ${endpoint}, timeout ${ctx.timeoutMs} ms`);
      return { diagnostics };
    },

    async ValidateResourceConfig(req) {
      const r = resources[String(req.type_name)];
      if (!r) return { diagnostics: [unknownType("resource", req.type_name)] };
      return { diagnostics: validateVm(asObj(decodeDv(req.config, r.type)) ?? {}) };
    },

    async ValidateDataResourceConfig(req) {
      const r = dataSources[String(req.type_name)];
      if (!r) return { diagnostics: [unknownType("data source", req.type_name)] };
      const c = asObj(decodeDv(req.config, r.type)) ?? {};
      return { diagnostics: req.type_name === "rcloud_vm" ? validateVmData(c) : [] };
    },

    async UpgradeResourceState(req) {
      const r = resources[String(req.type_name)];
      if (!r) return { diagnostics: [unknownType("resource", req.type_name)] };
      const diagnostics = upgradeVmState(Number(req.version ?? 0));
      if (hasErrors(diagnostics)) return { diagnostics };
      const raw = (req.raw_state ?? {}) as { json?: Uint8Array | null; flatmap?: Record<string, string> };
      if (!raw.json || raw.json.length === 0) {
        if (raw.flatmap && Object.keys(raw.flatmap).length > 0) return { diagnostics: [errorDiag("Unsupported state format", "Legacy flatmap state is not supported by rcloud_vm.")] };
        return { upgraded_state: encodeDv(null, r.type), diagnostics };
      }
      // Identity upgrade: decoding against the current type fills missing attributes with null.
      return { upgraded_state: encodeDv(decodeJson(raw.json, r.type), r.type), diagnostics };
    },

    async ReadResource(req) {
      const current = asObj(decodeDv(req.current_state, VM_TYPE));
      if (req.type_name !== "rcloud_vm") return { diagnostics: [unknownType("resource", req.type_name)] };
      if (!current) return { new_state: encodeDv(null, VM_TYPE), private: req.private, diagnostics: [] };
      const r = await readVm(ctx, current);
      return { new_state: encodeDv(r.newState, VM_TYPE), private: req.private, diagnostics: r.diagnostics };
    },

    async PlanResourceChange(req) {
      if (req.type_name !== "rcloud_vm") return { diagnostics: [unknownType("resource", req.type_name)] };
      const prior = asObj(decodeDv(req.prior_state, VM_TYPE));
      const proposed = decodeDv(req.proposed_new_state, VM_TYPE);
      const config = asObj(decodeDv(req.config, VM_TYPE));
      const r = await planVm(ctx, prior, proposed === null ? null : config, readPrivate(req.prior_private));
      return {
        planned_state: encodeDv(r.planned, VM_TYPE),
        requires_replace: r.requiresReplace.map((p: PathStep[]) => toProtoPath(p)),
        planned_private: req.prior_private,
        diagnostics: r.diagnostics,
        legacy_type_system: false,
      };
    },

    async ApplyResourceChange(req) {
      if (req.type_name !== "rcloud_vm") return { diagnostics: [unknownType("resource", req.type_name)] };
      const prior = asObj(decodeDv(req.prior_state, VM_TYPE));
      const planned = asObj(decodeDv(req.planned_state, VM_TYPE));
      const r = await applyVm(ctx, prior, planned);
      return { new_state: encodeDv(r.newState, VM_TYPE), private: writePrivate(r.priv), diagnostics: r.diagnostics, legacy_type_system: false };
    },

    async ImportResourceState(req) {
      if (req.type_name !== "rcloud_vm") return { diagnostics: [unknownType("resource", req.type_name)] };
      const r = await importVm(ctx, String(req.id ?? ""));
      if (!r.state) return { imported_resources: [], diagnostics: r.diagnostics };
      return {
        imported_resources: [{ type_name: "rcloud_vm", state: encodeDv(r.state, VM_TYPE), private: writePrivate({ imported: true }) }],
        diagnostics: r.diagnostics,
      };
    },

    async MoveResourceState() {
      return { diagnostics: [errorDiag("Move not supported", "rcloud_vm cannot be moved from another resource type; import it instead (terraform import rcloud_vm.NAME <id or name>).")] };
    },

    async ReadDataSource(req) {
      const r = dataSources[String(req.type_name)];
      if (!r) return { diagnostics: [unknownType("data source", req.type_name)] };
      const c = asObj(decodeDv(req.config, r.type)) ?? {};
      const out = await r.read(ctx, c);
      return { state: encodeDv(out.state, r.type), diagnostics: out.diagnostics };
    },

    async StopProvider() {
      // Ctrl-C: cancel in-flight waits and requests; later calls get a fresh signal.
      abort.abort();
      abort = new AbortController();
      ctx.signal = abort.signal;
      if (ctx.client) ctx.client = null;
      return { Error: "" };
    },

    async GetFunctions() {
      return { functions: {}, diagnostics: [] };
    },
  };

  // Wrap every handler: exceptions become diagnostics, never gRPC errors.
  const safe: Record<string, RpcHandler> = {};
  for (const [name, h] of Object.entries(handlers)) {
    safe[name] = async (req) => {
      try {
        return await h(req);
      } catch (e) {
        log("ERROR", `${name}: ${(e as Error)?.stack ?? String(e)}`);
        return { diagnostics: [diagFromError(e, name)] };
      }
    };
  }
  return { handlers: safe, stop: () => abort.abort() };
}
