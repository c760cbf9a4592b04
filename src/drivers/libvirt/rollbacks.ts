/**
 * Undoing failed creates: the domain (by UUID) and every volume named `<id>-*`. A rollback
 * that cannot finish now (libvirt gone or busy) is kept and tried again, on a timer and on
 * every reconnect, until it is done.
 */
import { ErrorCode, remoteProcedures as P } from "../../libvirt/index.ts";
import type { RemoteNonnullStorageVol } from "../../libvirt/index.ts";
import { UNDEFINE_ALL } from "./domain-state.ts";
import { alreadyDone } from "./errors.ts";
import type { Sessions, VmStorage } from "./storage.ts";

/** A rollback that could not finish is tried again after this long (and on every reconnect). */
const RETRY_MS = 5_000;

/** What a failed create may have left: the domain (by UUID) and volumes named <id>-*. */
export interface PendingRollback {
  id: string;
  domUuid: Uint8Array;
  vols: RemoteNonnullStorageVol[];
}

export class Rollbacks {
  private pending: PendingRollback[] = [];
  private timer: ReturnType<typeof setTimeout> | null = null;

  constructor(
    private readonly sessions: Sessions,
    private readonly storage: VmStorage,
    /** Runs the driver's recovery, which calls retry() among other things. */
    private readonly onRetryDue: () => void,
    /** Removes VM `id`'s files outside the pool (a console log in console_log_dir). */
    private readonly removeFilesOf: (id: string) => void = () => {},
  ) {}

  /** Rolls a failed create back now, or keeps trying in the background until it is done. */
  async undo(r: PendingRollback): Promise<void> {
    try {
      await this.rollback(r);
    } catch {
      this.pending.push(r);
      this.timer ??= setTimeout(() => {
        this.timer = null;
        this.onRetryDue();
      }, RETRY_MS);
      (this.timer as { unref?: () => void }).unref?.();
    }
  }

  /** Tries every kept rollback again. */
  async retry(): Promise<void> {
    const pending = this.pending;
    this.pending = [];
    for (const r of pending) await this.undo(r);
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  /**
   * Removes what a failed create made: the domain with its UUID (destroy stops a start still
   * in progress) and every volume named <id>-*, also one whose creation finished after rcloud
   * gave up on it. Only "no such domain/volume" and "not running" count as done; anything
   * else (libvirt gone, a job still holding the domain) throws, and the caller tries again.
   */
  private async rollback(r: PendingRollback): Promise<void> {
    const c = this.sessions();
    const dom = await c.call(P.domainLookupByUuid, { uuid: r.domUuid }).then(
      (x) => x.dom,
      (e) => {
        alreadyDone(ErrorCode.NO_DOMAIN)(e);
        return null;
      },
    );
    if (dom) {
      await c.call(P.domainDestroy, { dom }).catch(alreadyDone(ErrorCode.OPERATION_INVALID, ErrorCode.NO_DOMAIN));
      // Drivers that refuse one of the flags get a plain undefine.
      await c.call(P.domainUndefineFlags, { dom, flags: UNDEFINE_ALL }).catch(() => c.call(P.domainUndefine, { dom }).catch(alreadyDone(ErrorCode.NO_DOMAIN)));
    }
    for (const vol of [...r.vols].reverse()) await this.storage.delete(vol);
    await this.storage.deleteVolumesOf(r.id, "required");
    this.removeFilesOf(r.id);
  }
}
