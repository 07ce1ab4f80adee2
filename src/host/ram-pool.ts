import type { GuestRam } from '../machine/memory/ram.js';
import { PAGE_SIZE } from '../machine/memory/layout.js';

/** A buffer held for reuse, and which of its pages may be non-zero (undefined: any). */
interface Held {
  readonly buffer: SharedArrayBuffer;
  readonly marks: Uint8Array | undefined;
}

/**
 * Guest RAM kept after its VM left this host (migrated away, deleted), for the next VM of the
 * same size. A fresh SharedArrayBuffer's pages are faulted in by the kernel on first write, which
 * on a virtualised host costs several times what copying the page does: an incoming migration
 * into fresh RAM moves pages at a fraction of the link's speed. Reused RAM is already backed.
 * Bounded: buffers beyond the cap are left to the garbage collector.
 *
 * RAM that tracked its writes (GuestRam.writesTracked) is zeroed on reuse only where it was
 * written: zeroing the rest would fault in pages its guest never touched (measured: 0.5 s for
 * the untouched half of a 256 MiB VM).
 */
export class RamPool {
  private readonly buffers: Held[] = [];
  private held = 0;

  /** `capBytes` 0 disables the pool. */
  constructor(readonly capBytes: number) {}

  /** Bytes held for reuse. */
  get bytes(): number {
    return this.held;
  }

  /** Takes back the RAM of a VM that is gone; no thread may touch it any more. */
  put(ram: GuestRam | SharedArrayBuffer): void {
    const buffer = ram instanceof SharedArrayBuffer ? ram : ram.buffer;
    if (this.buffers.some((h) => h.buffer === buffer)) return;
    if (buffer.byteLength > this.capBytes) return;
    // Keep the newest: evict the oldest until it fits.
    while (this.held + buffer.byteLength > this.capBytes && this.buffers.length > 0) {
      this.held -= this.buffers.shift()!.buffer.byteLength;
    }
    this.buffers.push({ buffer, marks: ram instanceof SharedArrayBuffer ? undefined : writtenPages(ram) });
    this.held += buffer.byteLength;
  }

  /** A zeroed buffer of exactly `bytes`, or undefined when none is held. */
  take(bytes: number): SharedArrayBuffer | undefined {
    const i = this.buffers.findIndex((h) => h.buffer.byteLength === bytes);
    if (i < 0) return undefined;
    const [{ buffer, marks }] = this.buffers.splice(i, 1) as [Held];
    this.held -= bytes;
    const u8 = new Uint8Array(buffer);
    if (marks === undefined) {
      u8.fill(0);
      return buffer;
    }
    // Zero each run of marked pages with one fill.
    for (let p = 0; p < marks.length; ) {
      if (marks[p] === 0) {
        p++;
        continue;
      }
      const first = p;
      while (p < marks.length && marks[p] !== 0) p++;
      u8.fill(0, first * PAGE_SIZE, p * PAGE_SIZE);
    }
    return buffer;
  }
}

/** The pages of `ram` that may be non-zero (written or dirty), or undefined when it did not track writes. */
function writtenPages(ram: GuestRam): Uint8Array | undefined {
  if (!ram.writesTracked) return undefined;
  ram.dirty.clear(); // folds the dirty marks into the written map; no thread touches this RAM now
  return ram.written.bits.slice();
}
