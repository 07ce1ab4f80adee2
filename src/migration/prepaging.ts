/**
 * The order in which post-copy pushes the pages the destination still lacks (Hines & Gopalan,
 * VEE 2009, §3.2). `LinearPush` walks RAM from page 0. `Bubbling` pre-pages around recent
 * network faults: each fault becomes a pivot, and the pages on both sides of it go next,
 * alternating forward and backward, so the bubble grows outward from where the guest is
 * working. Several pivots (multi-pivot) are served round-robin, so several localities grow at
 * once; the oldest pivot gives way when a new fault arrives and all slots are taken. With no
 * pivot left, pushing falls back to linear order.
 *
 * Both read the caller's `needed` map (1 = the destination still lacks the page and it has not
 * been sent): a page sent on demand, or pushed earlier, is skipped. Neither allocates per page.
 */

export type PushOrderName = 'linear' | 'bubbling';
export const PUSH_ORDERS: readonly PushOrderName[] = ['linear', 'bubbling'];

export interface PushOrder {
  /** The next needed page to push, or -1 when none is left. Does not clear `needed`. */
  next(): number;
  /** A network fault on `page`: the order may steer toward it. */
  onFault(page: number): void;
}

/** Page 0 upward, once. */
export class LinearPush implements PushOrder {
  private cursor = 0;

  constructor(private readonly needed: Uint8Array) {}

  next(): number {
    const needed = this.needed;
    const n = needed.length;
    let p = this.cursor;
    while (p < n && needed[p] === 0) p++;
    this.cursor = p;
    return p < n ? p : -1;
  }

  onFault(_page: number): void {}
}

/** Default pivots: a few localities (code, stack, a working set or two). */
export const DEFAULT_PIVOTS = 4;
/**
 * A bubble edge skips at most this many pages that are already there before it stops: it has
 * met another bubble (or a region the guest never needed), and scanning on would cost time
 * for no locality.
 */
const EDGE_SKIP_LIMIT = 64;

/** Hines's bubbling with several pivots, served round-robin. */
export class Bubbling implements PushOrder {
  /** Per pivot slot: the next page forward and backward; -1/n when that side is spent. */
  private readonly fwd: Int32Array;
  private readonly back: Int32Array;
  /** Which side a slot takes next (0 forward, 1 backward). */
  private readonly side: Uint8Array;
  /** Slot ages, for replacing the oldest pivot. */
  private readonly born: Float64Array;
  private turn = 0;
  private clock = 0;
  private readonly linear: LinearPush;

  constructor(
    private readonly needed: Uint8Array,
    readonly pivots: number = DEFAULT_PIVOTS,
  ) {
    if (!Number.isInteger(pivots) || pivots < 1 || pivots > 64) throw new RangeError(`pivots must be 1..64, not ${pivots}`);
    this.fwd = new Int32Array(pivots).fill(-1);
    this.back = new Int32Array(pivots).fill(-1);
    this.side = new Uint8Array(pivots);
    this.born = new Float64Array(pivots);
    this.linear = new LinearPush(needed);
  }

  onFault(page: number): void {
    const n = this.needed.length;
    if (!(page >= 0 && page < n)) return;
    // Reuse the slot of a pivot whose bubble already covers this page, else a free or the oldest one.
    let slot = -1;
    let oldest = 0;
    for (let i = 0; i < this.pivots; i++) {
      const f = this.fwd[i]!;
      const b = this.back[i]!;
      const active = f >= 0 || b >= 0;
      if (active && b < page && page < f) {
        slot = i;
        break;
      }
      if (!active && slot < 0) slot = i;
      if (this.born[i]! < this.born[oldest]!) oldest = i;
    }
    if (slot < 0) slot = oldest;
    this.fwd[slot] = page + 1 < n ? page + 1 : -1;
    this.back[slot] = page - 1;
    this.side[slot] = 0;
    this.born[slot] = ++this.clock;
  }

  next(): number {
    const needed = this.needed;
    const n = needed.length;
    // Each slot at most once per call: bounded work (pivots × 2 edges × EDGE_SKIP_LIMIT).
    for (let k = 0; k < this.pivots; k++) {
      const i = this.turn;
      this.turn = (i + 1) % this.pivots;
      if (this.fwd[i]! < 0 && this.back[i]! < 0) continue;
      // Alternate sides; a spent side hands its turns to the other.
      for (let tries = 0; tries < 2; tries++) {
        const forward = this.side[i] === 0;
        this.side[i] ^= 1;
        if (forward) {
          let p = this.fwd[i]!;
          if (p < 0) continue;
          let skipped = 0;
          while (p < n && needed[p] === 0 && skipped < EDGE_SKIP_LIMIT) {
            p++;
            skipped++;
          }
          if (p >= n || needed[p] === 0) {
            this.fwd[i] = -1;
            continue;
          }
          this.fwd[i] = p + 1 < n ? p + 1 : -1;
          return p;
        }
        let p = this.back[i]!;
        if (p < 0) continue;
        let skipped = 0;
        while (p >= 0 && needed[p] === 0 && skipped < EDGE_SKIP_LIMIT) {
          p--;
          skipped++;
        }
        if (p < 0 || needed[p] === 0) {
          this.back[i] = -1;
          continue;
        }
        this.back[i] = p - 1;
        return p;
      }
    }
    return this.linear.next();
  }
}

export function pushOrder(name: PushOrderName, needed: Uint8Array, pivots = DEFAULT_PIVOTS): PushOrder {
  return name === 'bubbling' ? new Bubbling(needed, pivots) : new LinearPush(needed);
}
