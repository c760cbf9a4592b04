/**
 * Environment variables that override configuration (the highest layer). The first six are the
 * Rust rcloud's (docs/kdevops.md §5.4) and keep their meaning. An empty variable counts as unset.
 */
import { ConfigError } from "./errors.ts";
import { LEAVES } from "./schema.ts";

export interface EnvVarSpec {
  /** Dotted configuration key the variable sets. */
  readonly key: string;
  readonly description: string;
}

export const ENV_VARS = {
  KDEVOPS_ROOT: { key: "kdevops.config_path", description: "kdevops checkout whose extra_vars.yaml is read (enables the extra_vars layer)" },
  RCLOUD_LIBVIRT_URI: { key: "libvirt.uri", description: "libvirt connection URI, e.g. qemu:///system" },
  RCLOUD_STORAGE_POOL_PATH: { key: "libvirt.storage_pool_path", description: "directory of rcloud's storage pool (absolute)" },
  RCLOUD_STORAGE_POOL_NAME: { key: "libvirt.storage_pool_name", description: "name of rcloud's libvirt storage pool" },
  RCLOUD_BASE_IMAGES_DIR: { key: "images.base_images_dir", description: "directory of base images (absolute)" },
  RCLOUD_NETWORK_BRIDGE: { key: "vm_defaults.network_bridge", description: "libvirt network new VMs attach to in bridge mode" },
  RCLOUD_SERVER_BIND: { key: "server.bind_address", description: "address the API listens on, host:port ([::1]:8765 for IPv6)" },
  RCLOUD_WORKERS: { key: "server.workers", description: "worker count (accepted for compatibility with the Rust rcloud)" },
  RCLOUD_DRIVER: { key: "driver", description: "VM driver: libvirt or qemu" },
  RCLOUD_DOMAIN_TYPE: { key: "libvirt.domain_type", description: "libvirt domain type: auto, kvm or qemu (TCG)" },
  RCLOUD_USER_NET_RESTRICT: { key: "vm_defaults.user_network_restrict", description: "restrict user-mode networking to the host (1/true/yes or 0/false/no)" },
  RCLOUD_NETWORK_MODE: { key: "vm_defaults.network_mode", description: "default network mode: bridge or user" },
  RCLOUD_STATE_DIR: { key: "qemu.state_dir", description: "state directory of the qemu driver (absolute)" },
  RCLOUD_QEMU_BINARY: { key: "qemu.binary", description: "QEMU system emulator for the qemu driver" },
  RCLOUD_QEMU_RUN_AS: { key: "qemu.run_as", description: "user the qemu driver runs QEMU as when rcloud is root: auto, a user name" },
  RCLOUD_QEMU_ACCEL: { key: "qemu.accel", description: "qemu driver accelerator: auto, kvm or tcg" },
  RCLOUD_LOG_LEVEL: { key: "logging.level", description: "log level: debug, info, warn or error" },
  RCLOUD_LOG_FORMAT: { key: "logging.format", description: "log format: json or text" },
  RCLOUD_KERNEL_DIR: { key: "vm_defaults.kernel_dir", description: "directory direct-kernel-boot files must live under (absolute); enables the feature" },
  RCLOUD_TOKENS_FILE: { key: "auth.tokens_file", description: "API tokens file (JSON of hashed tokens; rcloud token create/list/revoke edit it)" },
  RCLOUD_TEMPLATE: { key: "vm_defaults.template", description: "custom domain XML template (absolute path)" },
} as const satisfies Record<string, EnvVarSpec>;

export type EnvVarName = keyof typeof ENV_VARS;

export interface EnvSetting {
  key: string;
  value: unknown;
  name: string;
}

/** Settings from the environment, converted to the leaf's type (range checks come later). */
export function envSettings(env: Record<string, string | undefined>): EnvSetting[] {
  const out: EnvSetting[] = [];
  for (const [name, spec] of Object.entries(ENV_VARS) as [string, EnvVarSpec][]) {
    const raw = env[name];
    if (raw === undefined || raw === "") continue;
    const leaf = LEAVES.get(spec.key);
    let value: unknown = raw;
    if (leaf?.kind === "int") {
      if (!/^\s*[0-9]+\s*$/.test(raw)) throw new ConfigError(spec.key, `must be an integer, got ${JSON.stringify(raw)}`, `environment variable ${name}`);
      value = Number(raw.trim());
    } else if (leaf?.kind === "bool") {
      const v = raw.trim().toLowerCase();
      if (["1", "true", "yes"].includes(v)) value = true;
      else if (["0", "false", "no"].includes(v)) value = false;
      else throw new ConfigError(spec.key, `must be 1, true, yes, 0, false or no, got ${JSON.stringify(raw)}`, `environment variable ${name}`);
    }
    out.push({ key: spec.key, value, name });
  }
  return out;
}
