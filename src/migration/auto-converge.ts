/**
 * Auto-converge (QEMU's `migration_trigger_throttle` / `mig_throttle_guest_down`): when the
 * guest dirties memory faster than pre-copy can send it, slow the vCPU down. After each round
 * (QEMU: each dirty-bitmap sync), if the bytes dirtied during the round exceed 50% of the bytes
 * transferred in it, that counts as a high-dirty-rate period; at the second such period the
 * throttle starts at 20%, and every second period after that it steps up by 10%, up to 99%.
 */

/** QEMU's throttle-trigger-threshold: dirtied bytes above this percent of transferred bytes. */
export const THROTTLE_TRIGGER_PERCENT = 50;
/** QEMU's cpu-throttle-initial. */
export const THROTTLE_INITIAL_PERCENT = 20;
/** QEMU's cpu-throttle-increment. */
export const THROTTLE_INCREMENT_PERCENT = 10;
/** QEMU's CPU_THROTTLE_PCT_MAX. */
export const THROTTLE_MAX_PERCENT = 99;
/** High periods that trigger a step (QEMU: dirty_rate_high_cnt >= 2). */
const HIGH_PERIODS_PER_STEP = 2;

export interface AutoConvergeOptions {
  readonly triggerPercent?: number;
  readonly initialPercent?: number;
  readonly incrementPercent?: number;
  readonly maxPercent?: number;
}

/** Decides the vCPU throttle from each period's dirtied and transferred bytes. Swappable policy. */
export class AutoConverge {
  private readonly trigger: number;
  private readonly initial: number;
  private readonly increment: number;
  private readonly max: number;
  private high = 0;
  private percent = 0;

  constructor(opts: AutoConvergeOptions = {}) {
    this.trigger = opts.triggerPercent ?? THROTTLE_TRIGGER_PERCENT;
    this.initial = opts.initialPercent ?? THROTTLE_INITIAL_PERCENT;
    this.increment = opts.incrementPercent ?? THROTTLE_INCREMENT_PERCENT;
    this.max = opts.maxPercent ?? THROTTLE_MAX_PERCENT;
    for (const [k, v] of [['triggerPercent', this.trigger], ['initialPercent', this.initial], ['incrementPercent', this.increment], ['maxPercent', this.max]] as const) {
      if (!Number.isFinite(v) || v < 0 || v > 99) throw new RangeError(`auto-converge: ${k} ${v} is outside 0..99`);
    }
  }

  /** The throttle in force, percent of wall time the vCPU sleeps. */
  get throttlePercent(): number {
    return this.percent;
  }

  /** Below its maximum: later high-dirty-rate periods still slow the vCPU down. */
  get canRise(): boolean {
    return this.percent < this.max;
  }

  /**
   * One period (a pre-copy round) is over: `dirtiedBytes` were dirtied during it and
   * `transferredBytes` sent. Returns the throttle to apply from now on (unchanged or higher).
   */
  afterPeriod(dirtiedBytes: number, transferredBytes: number): number {
    const threshold = (transferredBytes * this.trigger) / 100;
    if (dirtiedBytes > threshold && ++this.high >= HIGH_PERIODS_PER_STEP) {
      this.high = 0;
      this.percent = this.percent === 0 ? this.initial : Math.min(this.max, this.percent + this.increment);
    }
    return this.percent;
  }
}
