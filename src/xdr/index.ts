export { XdrReader } from "./reader.ts";
export { XdrWriter } from "./writer.ts";
export { XdrDecodeError, XdrEncodeError } from "./errors.ts";
export type { XdrDecodeErrorCode, XdrEncodeErrorCode } from "./errors.ts";
export type {
  ArgsOf,
  Decoder,
  Encoder,
  MessageDescriptor,
  MsgOf,
  ProcedureDescriptor,
  RetOf,
  StreamDirection,
} from "./procedure.ts";
