/** Console tickets (src/api/console-tickets.ts): single use, 30 s, bound to one VM. */
import { expect, test } from "bun:test";
import { ServiceError } from "../../src/api-types/errors.ts";
import { ConsoleTickets } from "../../src/api/console-tickets.ts";

const vm = { id: "vm-abcd1234", name: "web" };
const caller = { role: "user" as const, project: "alpha", tokenId: "t1" };

test("a ticket stands for its caller once, by the VM's id or name", () => {
  const tickets = new ConsoleTickets();
  const a = tickets.issue(vm, caller);
  expect(a.ticket).toMatch(/^[A-Za-z0-9_-]{43}$/);
  expect(tickets.redeem(a.ticket, "vm-abcd1234")).toEqual({ caller });
  const again = tickets.redeem(a.ticket, "vm-abcd1234");
  expect(again).toBeInstanceOf(ServiceError);
  expect((again as ServiceError).code).toBe("unauthorized");
  expect((again as ServiceError).message).toContain("already used");
  const b = tickets.issue(vm, null);
  expect(tickets.redeem(b.ticket, "web")).toEqual({ caller: null });
});

test("expired after 30 s; refused for another VM (and used up by the attempt)", () => {
  let now = 1_000_000;
  const tickets = new ConsoleTickets(() => now);
  const a = tickets.issue(vm, caller);
  expect(a.expiresAt.getTime()).toBe(1_030_000);
  now += 30_001;
  expect((tickets.redeem(a.ticket, "web") as ServiceError).message).toContain("expired");
  const b = tickets.issue(vm, caller);
  expect((tickets.redeem(b.ticket, "other") as ServiceError).message).toContain("is for VM web");
  expect((tickets.redeem(b.ticket, "web") as ServiceError).message).toContain("already used");
  expect((tickets.redeem("made-up", "web") as ServiceError).code).toBe("unauthorized");
});
