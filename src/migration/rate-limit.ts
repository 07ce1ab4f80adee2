/**
 * Dynamic rate limiting (Clark et al. 2005, §5.1): round 1 runs at the minimum bandwidth; each
 * later round at the previous round's dirtying rate plus a fixed increment, clamped to
 * [min, max]; stop-and-copy runs at the maximum. A token bucket paces the page stream.
 */

/** 50 Mbit/s in bytes per second: Clark's increment. */
export const CLARK_RATE_INCREMENT_BPS = 50_000_000 / 8;

/**
 * The increment when none is configured: Clark's 50 Mbit/s, or half the maximum when that is
 * more, and no pacing at all under an unlimited maximum. Clark's figure was chosen for a
 * 1 Gbit/s link shared with the VM's own traffic; at 1 Gbit/s it paces the second round of a
 * VM dirtying 8 MB/s to 14 MB/s, so live rounds take several times the downtime budget and the
 * guest dirties more meanwhile. Half the maximum keeps the other half of the cap for the host.
 */
export function defaultRateIncrement(maxBps: number): number {
  if (!(maxBps > 0) || maxBps === Infinity) return Infinity;
  return Math.max(CLARK_RATE_INCREMENT_BPS, maxBps / 2);
}

/** Chooses each round's bandwidth limit. Infinity means unlimited. Swappable. */
export interface RateLimitPolicy {
  /** Limit for live round `round` (1-based); `prevDirtyRateBps` is the previous round's dirtying rate. */
  roundLimit(round: number, prevDirtyRateBps: number): number;
  /** Limit for the stop-and-copy round. */
  finalLimit(): number;
}

export class DynamicRateLimit implements RateLimitPolicy {
  private readonly min: number;
  private readonly max: number;
  readonly incrementBps: number;

  /**
   * Bandwidths in bytes per second; max 0 = unlimited, min 0 = no floor, increment 0 or absent =
   * `defaultRateIncrement(max)`.
   */
  constructor(minBps: number, maxBps: number, incrementBps = 0) {
    this.max = maxBps > 0 ? maxBps : Infinity;
    this.min = Math.min(Math.max(0, minBps), this.max);
    this.incrementBps = incrementBps > 0 ? incrementBps : defaultRateIncrement(this.max);
  }

  roundLimit(round: number, prevDirtyRateBps: number): number {
    // Round 1 at the floor (Clark); with no floor configured, at the ceiling.
    if (round <= 1) return this.min > 0 ? this.min : this.max;
    const want = prevDirtyRateBps + this.incrementBps;
    return Math.min(this.max, Math.max(this.min, want));
  }

  finalLimit(): number {
    return this.max;
  }
}

/**
 * A token bucket in bytes. `take` charges a send and says how long to wait before it may go,
 * so the caller sleeps on a timer (never spins). The burst is small, so a round cannot start
 * with a saved-up flood.
 */
export class TokenBucket {
  private rate = Infinity;
  private burst = 0;
  private tokens = 0;
  private last = 0;

  constructor(private readonly now: () => number = () => performance.now()) {}

  get rateBps(): number {
    return this.rate;
  }

  /** Sets the rate (bytes/s; Infinity = unlimited) and the largest burst, and starts from empty. */
  setRate(bytesPerSecond: number, burstBytes: number): void {
    this.rate = bytesPerSecond > 0 ? bytesPerSecond : Infinity;
    this.burst = Math.max(1, burstBytes);
    this.tokens = 0;
    this.last = this.now();
  }

  /** Charges `bytes`; returns the milliseconds to wait before sending them (0: send now). */
  take(bytes: number): number {
    if (this.rate === Infinity) return 0;
    const t = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((t - this.last) * this.rate) / 1000);
    this.last = t;
    this.tokens -= bytes;
    return this.tokens >= 0 ? 0 : (-this.tokens * 1000) / this.rate;
  }
}
