import type { XdrReader } from "./reader.ts";
import type { XdrWriter } from "./writer.ts";

export type Encoder<T> = (w: XdrWriter, v: T) => void;
export type Decoder<T> = (r: XdrReader) => T;

/** Which way data flows on the stream a procedure opens (from the `@stream` annotation). */
export type StreamDirection = "read" | "write" | "both";

/**
 * One RPC procedure as declared in protocol/*.x. Generated tables hold one per procedure;
 * the client needs nothing else to call it.
 */
export interface ProcedureDescriptor<Args, Ret> {
  readonly name: string;
  readonly program: number;
  readonly version: number;
  readonly proc: number;
  readonly encodeArgs: Encoder<Args> | null;
  readonly decodeRet: Decoder<Ret> | null;
  readonly stream: StreamDirection | null;
  readonly priority: boolean;
}

/** An asynchronous message (event) the server sends with type MESSAGE. */
export interface MessageDescriptor<Msg> {
  readonly name: string;
  readonly program: number;
  readonly version: number;
  readonly proc: number;
  readonly decode: Decoder<Msg>;
}

export type ArgsOf<P> = P extends ProcedureDescriptor<infer A, unknown> ? A : never;
export type RetOf<P> = P extends ProcedureDescriptor<unknown, infer R> ? R : never;
export type MsgOf<M> = M extends MessageDescriptor<infer T> ? T : never;
