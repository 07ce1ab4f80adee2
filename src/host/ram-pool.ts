import type { GuestRam } from '../machine/memory/ram.js';
import { PAGE_SIZE } from '../machine/memory/layout.js';

/** A buffer held for reuse, and which of its pages may be non-zero (undefined: any). */
interface Held {
  readonly buffer: SharedArrayBuffer;
  /** Pages that may be non-zero; the scrubber clears entries as it zeroes them. */
  marks: Uint8Array | undefined;
  /** The scrubber's position: pages below it are zero. */
  scrubbed: number;
}

/** The scrubber zeroes at most this much per turn of the event loop (a fraction of a millisecond of memset: the thread also relays its VMs' network traffic). */
const SCRUB_SLICE_BYTES = 1024 * 1024;
const SCRUB_SLICE_PAGES = SCRUB_SLICE_BYTES / PAGE_SIZE;

/**
 * Guest RAM kept after its VM left this host (migrated away, deleted), for the next VM of the
 * same size. A fresh SharedArrayBuffer's pages are faulted in by the kernel on first write, which
 * on a virtualised host costs several times what copying the page does: an incoming migration
 * into fresh RAM moves pages at a fraction of the link's speed. Reused RAM is already backed.
 * Bounded: buffers beyond the cap are left to the garbage collector.
 *
 * RAM that tracked its writes (GuestRam.writesTracked) is zeroed only where it was written:
 * zeroing the rest would fault in pages its guest never touched (measured: 0.5 s for the
 * untouched half of a 256 MiB VM). The zeroing happens while the buffer waits in the pool, a
 * slice per turn of the event loop, so a reservation (inside a migration's setup) finds it done:
 * zeroing the 128 MiB a guest had written took 80–120 ms when it was done at the reservation.
 */
export class RamPool {
  private readonly buffers: Held[] = [];
  private held = 0;
  private scrubbing: NodeJS.Timeout | undefined;
  private idleWaiters: (() => void)[] = [];

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
    this.buffers.push({ buffer, marks: ram instanceof SharedArrayBuffer ? undefined : writtenPages(ram), scrubbed: 0 });
    this.held += buffer.byteLength;
    this.scheduleScrub();
  }

  /**
   * Adds a new buffer of `bytes` for the next VM of that size, whose pages the scrubber writes in
   * the background (a slice per turn of the event loop): writing a fresh page is what makes the
   * kernel back it, so the VM that takes the buffer (an incoming migration, a VM started here)
   * finds its RAM backed, like QEMU's -mem-prealloc. Returns false when it does not fit the cap
   * beside what is held already (nothing is evicted for it).
   */
  prealloc(bytes: number): boolean {
    if (bytes <= 0 || bytes % PAGE_SIZE !== 0 || this.held + bytes > this.capBytes) return false;
    this.put(new SharedArrayBuffer(bytes));
    return true;
  }

  /** Resolves when the scrubber has nothing left to do (every held buffer zeroed; preallocated ones backed). */
  idle(): Promise<void> {
    if (this.scrubbed) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** A zeroed buffer of exactly `bytes`, or undefined when none is held. */
  take(bytes: number): SharedArrayBuffer | undefined {
    const i = this.buffers.findIndex((h) => h.buffer.byteLength === bytes);
    if (i < 0) return undefined;
    const [h] = this.buffers.splice(i, 1) as [Held];
    this.held -= bytes;
    zeroFrom(h, Infinity);
    return h.buffer;
  }

  /** Whether every held buffer is zeroed already (the scrubber is done). */
  get scrubbed(): boolean {
    return this.buffers.every((h) => h.scrubbed * PAGE_SIZE >= h.buffer.byteLength);
  }

  private scheduleScrub(): void {
    if (this.scrubbing !== undefined) return;
    const step = (): void => {
      this.scrubbing = undefined;
      const h = this.buffers.find((b) => b.scrubbed * PAGE_SIZE < b.buffer.byteLength);
      if (h === undefined) {
        const waiters = this.idleWaiters;
        this.idleWaiters = [];
        for (const w of waiters) w();
        return;
      }
      zeroFrom(h, SCRUB_SLICE_PAGES);
      this.scrubbing = setTimeout(step, 0);
      this.scrubbing.unref();
    };
    this.scrubbing = setTimeout(step, 0);
    this.scrubbing.unref();
  }
}

/**
 * Zeroes the held buffer's marked pages (all pages without marks) from its scrub position on, up
 * to `maxPages` pages further; advances the position.
 */
function zeroFrom(h: Held, maxPages: number): void {
  const u8 = new Uint8Array(h.buffer);
  const pages = h.buffer.byteLength / PAGE_SIZE;
  const end = Math.min(pages, h.scrubbed + maxPages);
  const marks = h.marks;
  if (marks === undefined) {
    u8.fill(0, h.scrubbed * PAGE_SIZE, end * PAGE_SIZE);
    h.scrubbed = end;
    return;
  }
  // Zero each run of marked pages with one fill.
  let zeroed = 0;
  let p = h.scrubbed;
  while (p < pages && (zeroed < maxPages || marks[p] === 0)) {
    if (marks[p] === 0) {
      p++;
      continue;
    }
    const first = p;
    while (p < pages && marks[p] !== 0 && zeroed < maxPages) {
      marks[p] = 0;
      p++;
      zeroed++;
    }
    u8.fill(0, first * PAGE_SIZE, p * PAGE_SIZE);
  }
  h.scrubbed = p;
}

/** The pages of `ram` that may be non-zero (written or dirty), or undefined when it did not track writes. */
function writtenPages(ram: GuestRam): Uint8Array | undefined {
  if (!ram.writesTracked) return undefined;
  ram.dirty.clear(); // folds the dirty marks into the written map; no thread touches this RAM now
  return ram.written.bits.slice();
}
