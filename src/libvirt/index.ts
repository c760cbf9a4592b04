// The remote transports register themselves with transport.ts.
import "./tls.ts";
import "./ssh.ts";

export { LibvirtClient, DomainEventId, Feature, formatVersion } from "./client.ts";
export type { ClientState, DomainEventMap, DomainLifecycleEvent, HypervisorInfo, LibvirtClientOptions } from "./client.ts";
export type { CallOptions } from "./connection.ts";
export { CallAbortedError, CallTimeoutError, ConnectError, ConnectionClosedError, ErrorCode, ErrorDomain, LibvirtError } from "./errors.ts";
export { LibvirtStream } from "./stream.ts";
export { LibvirtPool, type PoolOptions } from "./pool.ts";
export { parseLibvirtUri, UriError } from "./uri.ts";
export type { LibvirtTarget, TransportKind } from "./uri.ts";
export { registerTransport } from "./transport.ts";
export type { Transport, TransportFactory, TransportHandlers, TransportOptions } from "./transport.ts";
export { remoteProcedures, remoteMessages } from "../codecs/generated/remote.ts";
export { qemuProcedures } from "../codecs/generated/qemu.ts";
export type { ProcedureDescriptor } from "../xdr/index.ts";
export type { RemoteDomainStatsRecord, RemoteNonnullDomain, RemoteNonnullDomainSnapshot, RemoteNonnullNetwork, RemoteNonnullStoragePool, RemoteNonnullStorageVol } from "../codecs/generated/remote.ts";
