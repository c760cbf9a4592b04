/**
 * gRPC service definitions from the vendored .proto files (grpc-proto/, MPL-2.0). The files are
 * imported as text so a `bun build --compile` executable carries them; nothing is read from
 * disk at run time.
 */
import type { ServiceDefinition } from "@grpc/grpc-js";
import { fromJSON } from "@grpc/proto-loader";
import protobuf from "protobufjs";
import brokerProto from "./grpc-proto/grpc_broker.proto" with { type: "text" };
import controllerProto from "./grpc-proto/grpc_controller.proto" with { type: "text" };
import stdioProto from "./grpc-proto/grpc_stdio.proto" with { type: "text" };
import tfplugin6 from "./grpc-proto/tfplugin6.8.proto" with { type: "text" };

export interface Services {
  provider: ServiceDefinition;
  controller: ServiceDefinition;
  stdio: ServiceDefinition;
  broker: ServiceDefinition;
}

export function loadServices(): Services {
  const root = new protobuf.Root();
  // The google/protobuf imports (timestamp, empty) come from protobufjs's bundled common types.
  for (const file of ["google/protobuf/timestamp.proto", "google/protobuf/empty.proto"]) {
    const json = protobuf.common.get(file);
    if (!json?.nested) throw new Error(`protobufjs lacks ${file}`);
    root.addJSON(json.nested);
  }
  for (const src of [tfplugin6, controllerProto, stdioProto, brokerProto]) protobuf.parse(src, root, { keepCase: true });
  const def = fromJSON(root.toJSON(), { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true });
  const svc = (name: string): ServiceDefinition => {
    const s = def[name];
    if (!s || typeof s !== "object" || "format" in s) throw new Error(`service ${name} missing from the vendored protos`);
    return s as ServiceDefinition;
  };
  return {
    provider: svc("tfplugin6.Provider"),
    controller: svc("plugin.GRPCController"),
    stdio: svc("plugin.GRPCStdio"),
    broker: svc("plugin.GRPCBroker"),
  };
}
