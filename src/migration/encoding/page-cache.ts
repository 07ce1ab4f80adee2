/**
 * A bounded cache of page contents keyed by page number, for XBZRLE (QEMU's `page_cache.c`
 * role): it holds what the source last sent of a page, so a re-sent page can go as a delta.
 * Fixed size, allocated once: one byte array for the slots, an index from page number to slot,
 * and the clock algorithm (second chance) for eviction. Nothing is allocated per page.
 */
import { PAGE_SIZE } from '../../machine/memory/layout.js';

/** Smallest cache: a few pages, so the clock has something to turn over. */
export const MIN_CACHE_PAGES = 4;

export class PageCache {
  /** Slot contents, slot s at s * PAGE_SIZE. */
  readonly data: Uint8Array;
  readonly slots: number;
  /** Page held by each slot, -1 when free. */
  private readonly slotPage: Int32Array;
  /** Slot holding each page, -1 when not cached. */
  private readonly pageSlot: Int32Array;
  /** Clock reference bits: set on use, cleared as the hand passes. */
  private readonly referenced: Uint8Array;
  private hand = 0;
  private used = 0;
  /** Pages pushed out to make room, over the cache's life. */
  evictions = 0;

  /**
   * @param cacheBytes size of the page store (rounded down to whole pages, at least MIN_CACHE_PAGES)
   * @param ramPages pages of the RAM it caches: page numbers are < ramPages
   */
  constructor(cacheBytes: number, ramPages: number) {
    if (!Number.isInteger(ramPages) || ramPages < 1) throw new RangeError(`page cache: ramPages ${ramPages} must be a positive integer`);
    if (!Number.isFinite(cacheBytes) || cacheBytes < 0) throw new RangeError(`page cache: size ${cacheBytes} must be a non-negative number of bytes`);
    // More slots than RAM pages would never be used.
    this.slots = Math.min(ramPages, Math.max(MIN_CACHE_PAGES, Math.floor(cacheBytes / PAGE_SIZE)));
    this.data = new Uint8Array(this.slots * PAGE_SIZE);
    this.slotPage = new Int32Array(this.slots).fill(-1);
    this.pageSlot = new Int32Array(ramPages).fill(-1);
    this.referenced = new Uint8Array(this.slots);
  }

  get bytes(): number {
    return this.data.length;
  }

  /** Pages cached now. */
  get size(): number {
    return this.used;
  }

  /** The slot holding `page` (and marks it used), or -1. Its bytes are data[slot * PAGE_SIZE ...]. */
  lookup(page: number): number {
    const s = this.pageSlot[page];
    if (s === undefined || s < 0) return -1;
    this.referenced[s] = 1;
    return s;
  }

  /** Does the cache hold `page`? (Does not count as a use.) */
  has(page: number): boolean {
    const s = this.pageSlot[page];
    return s !== undefined && s >= 0;
  }

  /**
   * A slot for `page`, evicting another page if needed; the caller fills its bytes. Returns the
   * page's existing slot if it is cached already.
   */
  insert(page: number): number {
    if (page < 0 || page >= this.pageSlot.length || !Number.isInteger(page)) throw new RangeError(`page cache: page ${page} is outside 0..${this.pageSlot.length - 1}`);
    const had = this.pageSlot[page]!;
    if (had >= 0) {
      this.referenced[had] = 1;
      return had;
    }
    const s = this.victim();
    const old = this.slotPage[s]!;
    if (old >= 0) {
      this.pageSlot[old] = -1;
      this.evictions++;
    } else {
      this.used++;
    }
    this.slotPage[s] = page;
    this.pageSlot[page] = s;
    this.referenced[s] = 1;
    return s;
  }

  /** Forgets `page` (its slot becomes free). */
  remove(page: number): void {
    const s = this.pageSlot[page];
    if (s === undefined || s < 0) return;
    this.pageSlot[page] = -1;
    this.slotPage[s] = -1;
    this.referenced[s] = 0;
    this.used--;
  }

  /** Clock: the first free slot, or the first slot whose reference bit is clear (clearing bits on the way). */
  private victim(): number {
    const n = this.slots;
    for (;;) {
      const s = this.hand;
      this.hand = s + 1 === n ? 0 : s + 1;
      if (this.slotPage[s]! < 0) return s;
      if (this.referenced[s] === 0) return s;
      this.referenced[s] = 0;
    }
  }
}
