/**
 * When to stop iterating and switch over (stop-and-copy). QEMU's rule: switch once the expected
 * downtime (remaining dirty bytes and the machine state over the measured bandwidth, plus a
 * round trip for COMMITTED) fits the downtime limit; plus Clark's and Xen's safety stops: a tiny
 * remainder, rounds that no longer shrink the dirty set, a maximum number of rounds.
 */

export type SwitchoverReason = 'downtime-limit' | 'small-remainder' | 'not-converging' | 'max-rounds';

/** What the policy sees at the end of each live round. */
export interface SwitchoverInput {
  /** The live round that just ended (1-based). */
  readonly round: number;
  /** Dirty bytes the next round (or stop-and-copy) must send. */
  readonly remainingBytes: number;
  /** Bandwidth stop-and-copy can expect, bytes/s. */
  readonly bandwidthBps: number;
  /** Expected size of the machine state. */
  readonly stateBytes: number;
  /** Round-trip time to the destination, ms. */
  readonly rttMs: number;
  /** What the destination takes from COMPLETE to running the VM (load the state, resume), ms. */
  readonly switchoverMs?: number;
}

export interface SwitchoverDecision {
  /** Undefined: keep iterating. */
  readonly reason: SwitchoverReason | undefined;
  readonly expectedDowntimeMs: number;
  /** The round left at most HALVING of the previous round's dirty bytes (the first round always). */
  readonly halved: boolean;
}

/** A round that leaves at most this fraction of the previous round's dirty bytes still converges fast. */
export const HALVING = 0.5;

export interface SwitchoverPolicy {
  decide(input: SwitchoverInput): SwitchoverDecision;
}

export interface DowntimeLimitOptions {
  readonly downtimeLimitMs: number;
  /** Live rounds at most; then stop-and-copy. */
  readonly maxRounds: number;
  /** Switch when fewer dirty bytes than this remain (Clark: 256 KiB). */
  readonly smallRemainderBytes?: number;
  /** Switch after this many consecutive rounds that leave no fewer dirty bytes than the best so far. */
  readonly stallRounds?: number;
  /**
   * Once the downtime limit is met, keep iterating while each round leaves at most this fraction
   * of the previous round's dirty bytes (default 0.5): the pause then carries the dirty set's low
   * point, not the first set that happens to fit. 0 switches as soon as the limit is met (QEMU).
   */
  readonly shrinkToContinue?: number;
}

const PAGE_BYTES = 4096;
/** Catch-up rounds a migration may add before its stop-and-copy (see catchUpWanted). */
export const MAX_CATCH_UPS = 2;

export interface CatchUpInput {
  /** How long the switchover waited for the destination to take in the last live round, ms. */
  readonly waitedMs: number;
  /** Pages dirty when the switchover was decided (what the decision counted on). */
  readonly decidedPages: number;
  /** Pages dirty now, after the wait (what stop-and-copy would carry). */
  readonly pendingPages: number;
  /** Bandwidth stop-and-copy can expect, bytes/s. */
  readonly bandwidthBps: number;
  /** Catch-up rounds already run. */
  readonly catchUps: number;
  /** The live round just ended, and the most allowed. */
  readonly round: number;
  readonly maxRounds: number;
}

/**
 * Before pausing, the source waits until the destination has taken in every live round (so the
 * last round does not queue behind them inside the downtime). When the destination was behind
 * (measured here: 23-51 ms, a first visit faulting in fresh RAM with the guest-image warm-up on
 * the other core), the guest kept writing meanwhile, and all of it would go in the stop-and-copy
 * round: 100-200 pages where the decision counted on a few dozen. One more live round sends
 * those while the VM runs; its own wait is short, since the destination has caught up.
 * Wanted when the wait took at least a millisecond, the pages dirty after it are at least 1.5
 * times the decided set, what was added would take at least a millisecond at stop-and-copy's
 * bandwidth, and it was added at under half that bandwidth (faster, the extra round fills up as
 * fast as it sends); at most MAX_CATCH_UPS times, within the round limit.
 */
export function catchUpWanted(i: CatchUpInput): boolean {
  if (i.catchUps >= MAX_CATCH_UPS || i.round >= i.maxRounds || i.waitedMs < 1) return false;
  if (2 * i.pendingPages < 3 * i.decidedPages) return false;
  const grewBytes = (i.pendingPages - i.decidedPages) * PAGE_BYTES;
  const bw = Math.max(1, i.bandwidthBps);
  // Dirtied at over half the bandwidth, the round would only fill up again as fast as it sends.
  if ((grewBytes * 1000) / i.waitedMs > bw / 2) return false;
  return (grewBytes * 1000) / bw >= 1;
}

/** A last live round at most this big (Clark's small remainder) is not waited for before the pause. */
export const NO_WAIT_ROUND_BYTES = 256 * 1024;

export interface AckWaitInput {
  /** The live round just ended. */
  readonly round: number;
  /** The destination's PONG to the round before it is back. */
  readonly previousAcked: boolean;
  /** Bytes the round just ended sent. */
  readonly roundBytes: number;
}

/**
 * Whether to wait, before pausing, until the destination has taken in the last live round (see
 * catchUpWanted). Not when the destination has every earlier round (its PONG to the one before
 * is back; it holds PONGs until its standby thread is ready, so it is) and the last round is
 * small: that round is in the socket already and takes the destination well under a millisecond,
 * while every millisecond of waiting lets the guest dirty more. Measured: a guest rewriting
 * 64 MiB in bursts every 10 ms, switched over on a small remainder, was caught mid-burst by a
 * 2.7 ms wait and took 16384 pages into stop-and-copy where the decision counted on none.
 */
export function ackWaitNeeded(i: AckWaitInput): boolean {
  return !(i.round >= 2 && i.previousAcked && i.roundBytes <= NO_WAIT_ROUND_BYTES);
}

/**
 * Expected downtime: the remaining pages and the state at `bandwidthBps`, plus one round trip,
 * plus the destination's own switchover (load and resume).
 */
export function expectedDowntimeMs(remainingBytes: number, stateBytes: number, bandwidthBps: number, rttMs: number, switchoverMs = 0): number {
  const bw = bandwidthBps > 0 ? bandwidthBps : 1;
  return ((remainingBytes + stateBytes) * 1000) / bw + rttMs + switchoverMs;
}

export class DowntimeLimitPolicy implements SwitchoverPolicy {
  private readonly limit: number;
  private readonly maxRounds: number;
  private readonly small: number;
  private readonly stall: number;
  private readonly shrink: number;
  private best = Infinity;
  private stalled = 0;
  private previous = Infinity;

  constructor(o: DowntimeLimitOptions) {
    this.limit = o.downtimeLimitMs;
    this.maxRounds = Math.max(1, Math.floor(o.maxRounds));
    this.small = o.smallRemainderBytes ?? 256 * 1024;
    this.stall = o.stallRounds ?? 3;
    this.shrink = o.shrinkToContinue ?? HALVING;
  }

  decide(i: SwitchoverInput): SwitchoverDecision {
    const expected = expectedDowntimeMs(i.remainingBytes, i.stateBytes, i.bandwidthBps, i.rttMs, i.switchoverMs ?? 0);
    if (i.remainingBytes < this.best) {
      this.best = i.remainingBytes;
      this.stalled = 0;
    } else {
      this.stalled++;
    }
    // Still shrinking fast: one more live round costs little (the set fits the limit) and
    // takes most of what the pause would otherwise carry.
    const shrinking = i.remainingBytes <= this.previous * this.shrink;
    const halved = i.remainingBytes <= this.previous * HALVING;
    this.previous = i.remainingBytes;
    let reason: SwitchoverReason | undefined;
    if (i.remainingBytes < this.small) reason = 'small-remainder';
    else if (expected <= this.limit && !shrinking) reason = 'downtime-limit';
    else if (this.stalled >= this.stall) reason = 'not-converging';
    else if (i.round >= this.maxRounds) reason = 'max-rounds';
    return { reason, expectedDowntimeMs: expected, halved };
  }
}
