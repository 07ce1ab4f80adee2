/**
 * Free page hinting at migration start (QEMU's free-page-hint on virtio-balloon): the source asks
 * the guest's balloon driver for its free pages right after dirty logging starts, waits (bounded)
 * until the guest has reported them, and round 1 skips them (page-skip.ts). Stopped after round
 * 1 and finished when the migration ends, as QEMU does.
 */
import type { BalloonHostPort } from '../machine/devices/virtio/balloon-host-port.js';
import type { Logger } from '../util/log.js';

/** How long round 1 waits for the guest to report its free pages; it starts anyway after this. */
export const HINT_WAIT_MS = 1000;
const HINT_POLL_MS = 5;

export class FreePageHintRun {
  private stopped = false;
  private finished = false;
  /** Set once reported() resolved: how long the guest took, or HINT_WAIT_MS. */
  waitMs = 0;

  private constructor(private readonly balloon: BalloonHostPort, private readonly log: Logger) {}

  /** Starts a hint run if the guest's driver negotiated hinting; undefined otherwise. */
  static start(balloon: BalloonHostPort, log: Logger): FreePageHintRun | undefined {
    const d = balloon.driver();
    if (!d.live || !d.freePageHint) return undefined;
    balloon.startFreePageHint();
    return new FreePageHintRun(balloon, log);
  }

  /** Resolves once the guest has reported its free pages, or after HINT_WAIT_MS. */
  async reported(): Promise<void> {
    const t0 = performance.now();
    while (!this.balloon.freePageHintSettled()) {
      if (performance.now() - t0 >= HINT_WAIT_MS) {
        this.log.warn({ waitMs: HINT_WAIT_MS }, 'free page hinting: the guest has not finished reporting; round 1 starts with the hints so far');
        break;
      }
      await new Promise((r) => setTimeout(r, HINT_POLL_MS));
    }
    this.waitMs = Math.round((performance.now() - t0) * 1000) / 1000;
  }

  /** No more hints are taken (the device stops marking); those taken stay. */
  stop(): void {
    if (this.stopped || this.finished) return;
    this.stopped = true;
    this.balloon.stopFreePageHint();
  }

  /** The migration is over: the guest may reuse what it reported (free_page_done). */
  finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.balloon.finishFreePageHint();
  }
}
