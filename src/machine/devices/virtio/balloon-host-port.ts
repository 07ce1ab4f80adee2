import { BalloonDriverBits, Sig, ring } from '../../memory/signals.js';
import { BALLOON_CMD_ID_MIN, HintCommand, HintState } from './balloon.js';

/** The guest's balloon driver as the device last saw it. */
export interface BalloonDriverInfo {
  /** A driver has set DRIVER_OK (and the device works): it follows targets. */
  readonly live: boolean;
  /** The driver negotiated free page hinting. */
  readonly freePageHint: boolean;
  /** The device's free page hint state. */
  readonly hintState: HintState;
}

/** The host thread's side of a VM's virtio-balloon device. */
export interface BalloonHostPort {
  /** Asks the guest to hold `pages` 4 KiB pages in the balloon (config num_pages). */
  setTarget(pages: number): void;
  /** The target last set (config num_pages), in pages. */
  target(): number;
  /** Whether a driver runs and what it negotiated. */
  driver(): BalloonDriverInfo;
  /** The guest's last reported balloon size in pages (config actual). */
  actual(): Promise<number>;
  /** Starts a free page hint run: clears ram.freeHints and returns the new command id. */
  startFreePageHint(): number;
  /** Asks the guest to stop reporting (QEMU's free_page_stop); hints stay in ram.freeHints. */
  stopFreePageHint(): void;
  /** Tells the guest the run is over and it may reuse the pages it reported (QEMU's free_page_done). */
  finishFreePageHint(): void;
  /**
   * The run last started is over on the guest's side: the device took the start command and the
   * guest has stopped reporting (it sent STOP), or the host stopped it.
   */
  freePageHintSettled(): boolean;
}

export class BalloonRangeError extends RangeError {
  constructor(message: string) {
    super(message);
    this.name = 'BalloonRangeError';
  }
}

/** BalloonHostPort through the shared signal slots (the device applies them before each slice). */
export class BalloonHost implements BalloonHostPort {
  private readonly sig: Int32Array;
  private readonly pageCount: number;
  private readonly clearHints: () => void;

  constructor(opts: { signals: Int32Array; pageCount: number; clearHints: () => void }) {
    this.sig = opts.signals;
    this.pageCount = opts.pageCount;
    this.clearHints = opts.clearHints;
  }

  setTarget(pages: number): void {
    if (!Number.isInteger(pages) || pages < 0 || pages > this.pageCount) {
      throw new BalloonRangeError(`balloon target ${pages} pages is not an integer in 0..${this.pageCount} (the VM's RAM in 4 KiB pages)`);
    }
    Atomics.store(this.sig, Sig.BalloonTarget, pages);
    ring(this.sig);
  }

  target(): number {
    return Atomics.load(this.sig, Sig.BalloonTarget) >>> 0;
  }

  driver(): BalloonDriverInfo {
    const bits = Atomics.load(this.sig, Sig.BalloonDriver);
    return {
      live: (bits & BalloonDriverBits.Live) !== 0,
      freePageHint: (bits & BalloonDriverBits.FreePageHint) !== 0,
      hintState: ((bits >>> BalloonDriverBits.HintStateShift) & 3) as HintState,
    };
  }

  actual(): Promise<number> {
    return Promise.resolve(Atomics.load(this.sig, Sig.BalloonActual) >>> 0);
  }

  startFreePageHint(): number {
    const cur = Atomics.load(this.sig, Sig.HintCmdId) >>> 0;
    // As QEMU: ids count up from 0x80000000 and wrap back to it.
    const id = cur >= BALLOON_CMD_ID_MIN && cur < 0xffff_ffff ? cur + 1 : BALLOON_CMD_ID_MIN;
    this.clearHints();
    Atomics.store(this.sig, Sig.HintCmdId, id | 0);
    this.command(HintCommand.Start);
    return id;
  }

  freePageHintSettled(): boolean {
    const bits = Atomics.load(this.sig, Sig.BalloonDriver);
    const sent = (Atomics.load(this.sig, Sig.HintCommand) >>> 2) & BalloonDriverBits.AppliedMask;
    const state = (bits >>> BalloonDriverBits.HintStateShift) & 3;
    return bits >>> BalloonDriverBits.AppliedShift === sent && state !== HintState.Requested && state !== HintState.Start;
  }

  stopFreePageHint(): void {
    this.command(HintCommand.Stop);
  }

  finishFreePageHint(): void {
    this.command(HintCommand.Done);
  }

  private command(kind: HintCommand): void {
    const seq = (Atomics.load(this.sig, Sig.HintCommand) >>> 2) + 1;
    Atomics.store(this.sig, Sig.HintCommand, ((seq << 2) | kind) | 0);
    ring(this.sig);
  }
}
