import { PAGE_SHIFT } from './layout.js';

/**
 * One byte per guest page in shared memory, set and cleared by devices on the vCPU thread and read
 * by migration on the host thread. GuestRam keeps two: `discarded` (pages in the balloon: zeroed,
 * need not be sent) and `freeHints` (pages the guest reported free during the current hint run:
 * the first pre-copy round may skip them unless they are dirtied later).
 */
export class PageMarks {
  readonly bits: Uint8Array;
  readonly pageCount: number;

  constructor(buffer: SharedArrayBuffer, pageCount: number) {
    this.pageCount = pageCount;
    this.bits = new Uint8Array(buffer, 0, pageCount);
  }

  static allocate(pageCount: number): PageMarks {
    return new PageMarks(new SharedArrayBuffer(pageCount), pageCount);
  }

  isMarked(page: number): boolean {
    return Atomics.load(this.bits, page) !== 0;
  }

  mark(page: number): void {
    Atomics.store(this.bits, page, 1);
  }

  unmark(page: number): void {
    Atomics.store(this.bits, page, 0);
  }

  /** Marks the pages covering [offset, offset+length) of RAM. */
  markRange(offset: number, length: number): void {
    if (length <= 0) return;
    const last = (offset + length - 1) >>> PAGE_SHIFT;
    for (let p = offset >>> PAGE_SHIFT; p <= last; p++) Atomics.store(this.bits, p, 1);
  }

  clear(): void {
    this.bits.fill(0);
  }

  count(): number {
    let n = 0;
    const b = this.bits;
    for (let i = 0; i < b.length; i++) if (b[i] !== 0) n++;
    return n;
  }

  /** The marked pages as [first, count] runs, ascending (compact form for state sections). */
  runs(): Array<[number, number]> {
    const out: Array<[number, number]> = [];
    const b = this.bits;
    let i = 0;
    while (i < b.length) {
      if (b[i] === 0) {
        i++;
        continue;
      }
      const start = i;
      while (i < b.length && b[i] !== 0) i++;
      out.push([start, i - start]);
    }
    return out;
  }
}
