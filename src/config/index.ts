/**
 * rcloud configuration. Layers, lowest to highest: built-in defaults < kdevops extra_vars.yaml
 * (when kdevops.config_path or KDEVOPS_ROOT is set) < config file (`--config FILE`) < environment.
 * See config/rcloud.yaml for every key and its default.
 */
export type { DiskDriver, DiskFormat, Driver, LogFormat, LogLevel, NetworkMode, QuotaSpec, RcloudConfig } from "./schema.ts";
export { ConfigError } from "./errors.ts";
export { defaultConfig, loadConfig } from "./load.ts";
export type { LoadOptions } from "./load.ts";
export { EXTRA_VARS_MAPPING, ROLE_DEFAULTS, resolveExtraVars } from "./extra-vars.ts";
export { ENV_VARS } from "./env.ts";
export type { EnvVarName, EnvVarSpec } from "./env.ts";
