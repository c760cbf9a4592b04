/**
 * Fault 1 of docs/reliability.md: rcloud SIGKILLed at every step of a create and a delete
 * (every fault point of src/util/fault-points.ts), on the libvirt driver (qemu:///system on
 * the rig's `main` daemon, TCG) and on the QEMU driver. Each kill is followed by a restart
 * and POST /api/v1/reconcile; then every VM is complete and listed or gone (no volume, seed,
 * console log, VM directory, domain or QEMU process of a VM not listed), a VM created before
 * (answered 201) is still there and whole, and the name can be used again. Each kill costs
 * two rcloud starts, so the suite takes four points per driver (before the seed is in use,
 * between define and start, after start, mid-delete); `bun run chaos` runs every point on
 * both drivers for many rounds.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { FaultPoint } from "../../src/util/fault-points.ts";
import { ChaosSite, type ChaosDriverKind, keptAfter, killAt, vmBody } from "../helpers/chaos.ts";

/** One point of each kind of outcome: removed (before define), kept (after define/start), half-deleted. */
const SUITE_POINTS: FaultPoint[] = ["create.after-seed-upload", "create.after-define", "create.after-start", "delete.after-undefine"];

for (const kind of ["libvirt", "qemu"] as ChaosDriverKind[]) {
  describe(`${kind} driver: rcloud killed at each fault point`, () => {
    let site: ChaosSite;
    const bystander = `chaos-keep-${kind}`;

    beforeAll(async () => {
      site = new ChaosSite(kind);
      await site.start();
      const r = await site.req("POST", "/api/v1/vms", vmBody(bystander));
      expect(r?.status).toBe(201);
      await site.stopChildren();
    }, 120_000);

    afterAll(async () => {
      await site?.cleanup();
    }, 120_000);

    for (const [i, point] of SUITE_POINTS.entries()) {
      test(point, async () => {
        const o = await killAt(site, point, `chaos-${kind.slice(0, 1)}${i}`, [bystander]);
        console.log(`${kind} ${point}: kept=${o.kept} removed=${o.reconcile.removed} phases=${JSON.stringify(o.phases)}`);
        expect(o.killed).toBe(true);
        expect(o.orphans).toEqual([]);
        expect(o.lost).toEqual([]);
        expect(o.nameReused).toBe(true);
        // Cut short before its commit point (libvirt: the define; QEMU driver: vm.json, written
        // after the start) a create leaves nothing; after it, a listed VM.
        expect(o.kept).toBe(keptAfter(kind, point));
        if (!o.kept) expect(o.reconcile.removed).toBeGreaterThan(0);
      }, 180_000);
    }
  });
}
