/**
 * The one error type the configuration loader raises. `key` is the dotted rcloud key
 * (`vm_defaults.vcpus`), the extra_vars.yaml variable (`guestfs_base_image_dir`) for a
 * reference-resolution failure, or "" for a problem with a whole file (unreadable, invalid YAML,
 * not a mapping). The message is `<key>: <reason> (<where the value came from>)`.
 */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
  /** Dotted key (or extra_vars variable) the error is about; "" for a whole-file problem. */
  readonly key: string;
  /** Where the offending value came from (`/etc/rcloud.yaml line 12`, `environment variable RCLOUD_WORKERS`), if known. */
  readonly source: string | null;

  constructor(key: string, reason: string, source: string | null = null) {
    const where = source === null ? "" : ` (${source})`;
    super(key === "" ? `${source ?? "configuration"}: ${reason}` : `${key}: ${reason}${where}`);
    this.key = key;
    this.source = source;
  }
}
