export { buildIso, IsoError, MAX_ISO_BYTES, MAX_FILES, SECTOR_SIZE } from "./iso9660.ts";
export type { IsoErrorCode, IsoFile, IsoOptions } from "./iso9660.ts";
export { buildSeedIso, renderMetaData, renderNetworkConfig, renderUserData, SeedError, validateSshPublicKey } from "./nocloud.ts";
export type { SeedErrorCode, SeedInput, SeedMount, SshKeyCheck } from "./nocloud.ts";
