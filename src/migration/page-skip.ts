/**
 * Pages a migration need not send (docs/precopy.md, "Pages never sent"): pages in the balloon
 * (`ram.discarded`: the device zeroed them, and the destination's reserved RAM is zero) and, in
 * round 1, pages the guest hinted free (`ram.freeHints`, QEMU's free-page-hint). The source
 * remembers which pages the destination holds as zero because they were never sent, so a later
 * round knows whether a ballooned page must still go (its old contents are there) or not.
 */
import type { GuestRam } from '../machine/memory/ram.js';
import { PAGE_SIZE } from '../machine/memory/layout.js';
import type { SkippedPageCounts } from './report.js';

/** Why a page was left out; kept until the page is sent after all. */
const enum Skipped {
  No = 0,
  Balloon = 1,
  FreeHint = 2,
}

export class PageSkips {
  readonly counts: SkippedPageCounts = { balloon: 0, freeHint: 0 };
  /** Per page: Skipped; non-zero while the destination holds zero for the page, never sent. */
  private readonly state: Uint8Array;
  private readonly discarded: Uint8Array;
  private readonly hints: Uint8Array;

  constructor(private readonly ram: GuestRam) {
    this.state = new Uint8Array(ram.pageCount);
    this.discarded = ram.discarded.bits;
    this.hints = ram.freeHints.bits;
  }

  /**
   * Round 1: drops ballooned pages and, with `useHints`, pages hinted free from `list` (in
   * place); returns the pages to send. A hinted page written after its hint is in the dirty
   * log, so a later round sends it.
   */
  firstRound(list: Uint32Array, useHints: boolean): Uint32Array {
    const { state, discarded, hints, counts } = this;
    let n = 0;
    for (let i = 0; i < list.length; i++) {
      const p = list[i]!;
      if (discarded[p] !== 0) {
        state[p] = Skipped.Balloon;
        counts.balloon++;
      } else if (useHints && hints[p] !== 0) {
        state[p] = Skipped.FreeHint;
        counts.freeHint++;
      } else {
        list[n++] = p;
      }
    }
    return list.subarray(0, n);
  }

  /**
   * A later round's dirty list (or hybrid's DISCARD set): drops ballooned pages the destination
   * holds as zero (never sent); any other page goes, and from then on counts as sent. A page
   * sent earlier and ballooned since goes too (as a zero page): the destination has its old bytes.
   */
  laterRound(list: Uint32Array): Uint32Array {
    const { state, discarded, counts } = this;
    let n = 0;
    for (let i = 0; i < list.length; i++) {
      const p = list[i]!;
      if (state[p] !== Skipped.No) {
        if (discarded[p] !== 0) {
          counts.balloon++;
          continue;
        }
        state[p] = Skipped.No;
      }
      list[n++] = p;
    }
    return list.subarray(0, n);
  }

  /**
   * Post-copy: clears `needed` for ballooned pages (the destination installs them as zero pages
   * from the balloon state it loads); returns how many it cleared.
   */
  postcopyNeeded(needed: Uint8Array): number {
    const discarded = this.discarded;
    let n = 0;
    for (let p = 0; p < needed.length; p++) {
      if (needed[p] !== 0 && discarded[p] !== 0) {
        needed[p] = 0;
        n++;
      }
    }
    this.counts.balloon += n;
    return n;
  }

  /**
   * While paused, for --verify: zeroes the free-hinted pages that were never sent and not written
   * since their hint (still free: a write would have put them in a later round), so both sides'
   * RAM is the same. Returns how many it zeroed.
   */
  zeroUnsentFreePages(): number {
    const { state, discarded } = this;
    const u8 = this.ram.u8;
    let n = 0;
    for (let p = 0; p < state.length; p++) {
      if (state[p] === Skipped.FreeHint && discarded[p] === 0) {
        u8.fill(0, p * PAGE_SIZE, (p + 1) * PAGE_SIZE);
        n++;
      }
    }
    return n;
  }
}
