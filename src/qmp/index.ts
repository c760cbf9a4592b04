export { QmpClient, waitForEvent, type QmpConnectOptions, type QmpEvent, type QmpExecuteOptions, type QmpStats, type QmpVersion } from "./client.ts";
export { QmpAbortedError, QmpClosedError, QmpConnectError, QmpError, QmpProtocolError, QmpTimeoutError } from "./errors.ts";
