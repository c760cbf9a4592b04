import type { MessageDescriptor, ProcedureDescriptor } from "../xdr/index.ts";

/** Identity helpers that pin the generic types of generated procedure tables. */
export function defineProcedure<Args, Ret>(d: ProcedureDescriptor<Args, Ret>): ProcedureDescriptor<Args, Ret> {
  return d;
}

export function defineMessage<Msg>(d: MessageDescriptor<Msg>): MessageDescriptor<Msg> {
  return d;
}
