import { ALL_BLOCKS, PAGE_SHIFT } from './layout.js';

/**
 * One byte per guest page, set by every guest store and device DMA write while logging is on.
 * Lives in shared memory: the vCPU thread marks, the host thread syncs. Clear-before-copy:
 * a page's byte is taken (cleared) *before* its contents are copied, so a store that races with
 * the copy marks it again for the next round.
 *
 * A mark is not just non-zero: it is the mask of the page's 512-byte blocks written since the
 * last take (layout.ts BLOCK_SHIFT). The CPU's aligned stores set their block's bit; everything
 * else (device DMA, the loader, the CPU's slow paths) sets ALL_BLOCKS. sync() can hand the
 * masks out: stop-and-copy's XBZRLE compares only the blocks written since a page was cached.
 * A store racing with a take can only leave more bits set, never fewer.
 *
 * While logging is off the same stores mark `written` instead (GuestRam.written). Every mark
 * this log gives up (sync, take, clear) is folded into `written` first, so a page that was ever
 * written is always marked in one of the two: a page marked in neither still holds zeros.
 */
export class DirtyLog {
  /** The marks, one byte per page; the CPU writes these directly on its hot path. */
  readonly bits: Uint8Array;
  private readonly words: Int32Array;
  readonly pageCount: number;
  /** Where taken marks are folded (GuestRam.written's bytes). */
  private readonly written: Uint8Array;

  constructor(buffer: SharedArrayBuffer, pageCount: number, written: Uint8Array = new Uint8Array(pageCount)) {
    this.pageCount = pageCount;
    this.bits = new Uint8Array(buffer, 0, pageCount);
    this.words = new Int32Array(buffer, 0, buffer.byteLength >>> 2);
    this.written = written;
  }

  static allocate(pageCount: number): DirtyLog {
    return new DirtyLog(new SharedArrayBuffer(DirtyLog.bytesFor(pageCount)), pageCount);
  }

  /** Rounded up to whole 32-bit words so sync can skip clean stretches four pages at a time. */
  static bytesFor(pageCount: number): number {
    return (pageCount + 3) & ~3;
  }

  /** Marks every page dirty (the first pre-copy round sends everything). */
  markAll(): void {
    this.bits.fill(ALL_BLOCKS);
  }

  /** Where clear() lets sync() write the page list it does not need (allocated on first use). */
  private clearList: Uint32Array | undefined;

  /** Takes every mark (folding it into `written`, as sync does). */
  clear(): void {
    this.sync((this.clearList ??= new Uint32Array(this.pageCount)));
  }

  /** Marks the pages covering [addr, addr+len) of guest-physical offset space (device DMA). */
  markRange(offset: number, length: number): void {
    if (length <= 0) return;
    const first = offset >>> PAGE_SHIFT;
    const last = (offset + length - 1) >>> PAGE_SHIFT;
    for (let p = first; p <= last; p++) this.bits[p] = ALL_BLOCKS;
  }

  isDirty(page: number): boolean {
    return Atomics.load(this.bits, page) !== 0;
  }

  /** Takes one page's mark: returns whether it was dirty and leaves it clean. */
  take(page: number): boolean {
    if (Atomics.exchange(this.bits, page, 0) === 0) return false;
    this.written[page] = 1;
    return true;
  }

  /**
   * Takes every mark at once and writes the dirty page numbers, ascending, into `out`
   * (allocated if absent or too small). Returns the filled prefix. With `masks` (one byte per
   * page), each taken page's block mask is written at its page number.
   */
  sync(out?: Uint32Array, masks?: Uint8Array): Uint32Array {
    const words = this.words;
    const bits = this.bits;
    const written = this.written;
    let buf = out !== undefined && out.length >= this.pageCount ? out : new Uint32Array(this.pageCount);
    let n = 0;
    const nWords = words.length;
    for (let w = 0; w < nWords; w++) {
      if (words[w] === 0) continue;
      const base = w << 2;
      for (let i = 0; i < 4; i++) {
        const p = base + i;
        if (p >= this.pageCount) continue;
        const m = Atomics.exchange(bits, p, 0);
        if (m !== 0) {
          buf[n++] = p;
          written[p] = 1;
          if (masks !== undefined) masks[p] = m;
        }
      }
    }
    return buf.subarray(0, n);
  }

  /** How many of the pages [first, first + n) are marked now (does not clear). */
  countIn(first: number, n: number): number {
    const bits = this.bits;
    const end = Math.min(this.pageCount, first + n);
    let c = 0;
    for (let p = Math.max(0, first); p < end; p++) if (bits[p] !== 0) c++;
    return c;
  }

  /** How many pages are marked now (does not clear). */
  count(): number {
    const words = this.words;
    const bits = this.bits;
    let n = 0;
    for (let w = 0; w < words.length; w++) {
      if (words[w] === 0) continue;
      const base = w << 2;
      for (let i = 0; i < 4; i++) if (base + i < this.pageCount && bits[base + i] !== 0) n++;
    }
    return n;
  }
}
