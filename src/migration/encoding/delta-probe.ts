/**
 * Would XBZRLE deltas help this guest? The XBZRLE fallback (docs/precopy.md) costs two rounds
 * of the dirty set sent whole before deltas start; for a guest that rewrites its pages whole it
 * buys nothing. So at the start of each round the probe copies a sample of the pages that round
 * will send (the ones dirtied in the round before), and when pre-copy stops converging it encodes
 * those of them that were dirtied again against their copies: what a delta would have cost for
 * one round's changes. The fallback goes ahead only if that is small. Fixed memory (the sample),
 * nothing allocated per page.
 */
import { PAGE_SIZE } from '../../machine/memory/layout.js';
import type { GuestRam } from '../../machine/memory/ram.js';
import { DEFAULT_DELTA_BUDGET, xbzrleEncode } from './xbzrle.js';

/** Pages sampled per round, spread evenly over its list. */
const SAMPLE_PAGES = 256;
/** Fewest sampled pages dirty again for a verdict. */
const MIN_SAMPLES = 8;

export class DeltaProbe {
  private readonly copies = new Uint8Array(SAMPLE_PAGES * PAGE_SIZE);
  private readonly copies32 = new Int32Array(this.copies.buffer);
  private readonly pages = new Int32Array(SAMPLE_PAGES);
  private readonly scratch = new Uint8Array(PAGE_SIZE);
  private count = 0;

  /** A round is about to send `list` (`n` pages): copy a sample of them as they are now. */
  snapshot(ram: GuestRam, list: Uint32Array, n: number = list.length): void {
    const step = Math.max(1, Math.floor(n / SAMPLE_PAGES));
    this.count = 0;
    for (let i = 0; i < n && this.count < SAMPLE_PAGES; i += step) {
      const page = list[i]!;
      this.copies.set(ram.u8.subarray(page * PAGE_SIZE, (page + 1) * PAGE_SIZE), this.count * PAGE_SIZE);
      this.pages[this.count++] = page;
    }
  }

  /**
   * Mean delta size in bytes of the sampled pages dirtied again since the snapshot (an overflow
   * counts as a whole page), or undefined when too few of them were to tell.
   */
  meanDeltaBytes(ram: GuestRam): number | undefined {
    let n = 0;
    let bytes = 0;
    for (let i = 0; i < this.count; i++) {
      const page = this.pages[i]!;
      if (!ram.dirty.isDirty(page)) continue;
      const len = xbzrleEncode(this.copies, this.copies32, i * PAGE_SIZE, ram.u8, ram.i32, page * PAGE_SIZE, this.scratch, 0, DEFAULT_DELTA_BUDGET);
      bytes += len < 0 ? PAGE_SIZE : len;
      n++;
    }
    return n < MIN_SAMPLES ? undefined : bytes / n;
  }
}
