/** rcloud's version; the build stamps the git commit into RCLOUD_GIT_COMMIT. */
import pkg from "../../package.json" with { type: "json" };

export const VERSION: string = pkg.version;
export const GIT_COMMIT: string = process.env.RCLOUD_GIT_COMMIT ?? "dev";
