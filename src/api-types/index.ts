/** The REST API's vocabulary: value sets, JSON bodies and error codes (see each module). */
export * from "./errors.ts";
export type * from "./json.ts";
export * from "./values.ts";
