/**
 * Console tickets: browsers cannot put an Authorization header on a websocket, so an
 * authenticated POST /vms/{id}/console hands out a ticket for that VM, good once and for
 * CONSOLE_TICKET_TTL_S seconds, which the page appends to the attach URL. Tickets are kept
 * hashed (a memory dump shows no usable ticket) and only in this process: a restart voids them.
 */
import { createHash, randomBytes } from "node:crypto";
import { ServiceError } from "../api-types/errors.ts";
import { CONSOLE_TICKET_TTL_S } from "../api-types/values.ts";
import type { Caller } from "../auth/index.ts";

interface Ticket {
  vmId: string;
  vmName: string;
  caller: Caller | null;
  expiresAt: number;
}

/** Tickets outstanding at most; the oldest go first (each lives 30 s anyway). */
const MAX_OUTSTANDING = 10_000;

const hash = (ticket: string) => createHash("sha256").update(ticket).digest("base64url");

export class ConsoleTickets {
  private readonly tickets = new Map<string, Ticket>();

  constructor(private readonly now: () => number = Date.now) {}

  issue(vm: { id: string; name: string }, caller: Caller | null): { ticket: string; expiresAt: Date } {
    this.prune();
    if (this.tickets.size >= MAX_OUTSTANDING) this.tickets.delete(this.tickets.keys().next().value!);
    const ticket = randomBytes(32).toString("base64url");
    const expiresAt = this.now() + CONSOLE_TICKET_TTL_S * 1000;
    this.tickets.set(hash(ticket), { vmId: vm.id, vmName: vm.name, caller, expiresAt });
    return { ticket, expiresAt: new Date(expiresAt) };
  }

  /**
   * The caller a ticket stands for, for the VM `ref` (its id or name) of the attach URL.
   * Used up by the first attempt, successful or not.
   */
  redeem(ticket: string, ref: string): { caller: Caller | null } | ServiceError {
    const key = hash(ticket);
    const t = this.tickets.get(key);
    this.tickets.delete(key);
    if (!t) return new ServiceError("unauthorized", "the console ticket is unknown or was already used; ask for a new one with POST /api/v1/vms/{id}/console");
    if (this.now() > t.expiresAt) return new ServiceError("unauthorized", `the console ticket expired (tickets are valid ${CONSOLE_TICKET_TTL_S} s); ask for a new one`);
    if (ref !== t.vmId && ref !== t.vmName) return new ServiceError("unauthorized", `the console ticket is for VM ${t.vmName}, not '${ref.slice(0, 64)}'`);
    return { caller: t.caller };
  }

  private prune(): void {
    const now = this.now();
    for (const [k, t] of this.tickets) if (now > t.expiresAt) this.tickets.delete(k);
  }
}
