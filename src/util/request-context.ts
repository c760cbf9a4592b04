/**
 * The request id of the API call being served, available to anything it calls (VM
 * operation logs) without threading it through every signature.
 */
import { AsyncLocalStorage } from "node:async_hooks";

const store = new AsyncLocalStorage<{ requestId: string }>();

/** Marks the rest of the current async flow as serving `requestId`. */
export function enterRequest(requestId: string): void {
  store.enterWith({ requestId });
}

export function currentRequestId(): string | null {
  return store.getStore()?.requestId ?? null;
}
