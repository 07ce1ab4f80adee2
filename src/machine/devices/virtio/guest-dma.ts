import { ALL_BLOCKS, PAGE_SHIFT } from '../../memory/layout.js';
import type { GuestRam } from '../../memory/ram.js';

/** How a device learns the hart's dirty-logging and presence settings and waits for an absent page. */
export interface DmaHooks {
  /** Dirty logging is on: device writes must mark their pages. */
  dirtyLogOn(): boolean;
  /** Some pages may be absent (post-copy): every access must check presence first. */
  presenceOn(): boolean;
  /** Blocks until `page` is present (the hart's wait-for-page path). */
  waitPage(page: number): void;
}

/**
 * A device's access to guest RAM by RAM offset (callers bounds-check with GuestRam.offsetOf).
 * Every access first waits for absent pages (post-copy) and every write marks the dirty log, the
 * same rules the hart follows, so a device write is never lost by migration.
 */
export class GuestDma {
  readonly ram: GuestRam;
  readonly view: DataView;
  private readonly hooks: DmaHooks;

  constructor(ram: GuestRam, hooks: DmaHooks) {
    this.ram = ram;
    this.hooks = hooks;
    this.view = new DataView(ram.buffer);
  }

  /** Waits until every page of [off, off+len) is present. */
  touch(off: number, len: number): void {
    if (len <= 0 || !this.hooks.presenceOn()) return;
    const bits = this.ram.presence.bits;
    const last = (off + len - 1) >>> PAGE_SHIFT;
    for (let p = off >>> PAGE_SHIFT; p <= last; p++) {
      while (Atomics.load(bits, p) === 0) this.hooks.waitPage(p);
    }
  }

  /** Marks [off, off+len) after a device write: dirty when logging is on, else written (ram.ts). */
  wrote(off: number, len: number): void {
    if (len <= 0) return;
    const bits = this.hooks.dirtyLogOn() ? this.ram.dirty.bits : this.ram.written.bits;
    const last = (off + len - 1) >>> PAGE_SHIFT;
    for (let p = off >>> PAGE_SHIFT; p <= last; p++) if (bits[p] !== ALL_BLOCKS) bits[p] = ALL_BLOCKS;
  }

  u16(off: number): number {
    this.touch(off, 2);
    return this.view.getUint16(off, true);
  }

  u32(off: number): number {
    this.touch(off, 4);
    return this.view.getUint32(off, true);
  }

  setU16(off: number, v: number): void {
    this.touch(off, 2);
    this.view.setUint16(off, v, true);
    this.wrote(off, 2);
  }

  setU32(off: number, v: number): void {
    this.touch(off, 4);
    this.view.setUint32(off, v >>> 0, true);
    this.wrote(off, 4);
  }

  /** Copies guest bytes [off, off+len) into `dst` at `at`. */
  read(off: number, len: number, dst: Uint8Array, at: number): void {
    this.touch(off, len);
    dst.set(this.ram.u8.subarray(off, off + len), at);
  }

  /** Copies `src` into guest RAM at `off`. */
  write(off: number, src: Uint8Array): void {
    this.touch(off, src.length);
    this.ram.u8.set(src, off);
    this.wrote(off, src.length);
  }

  /** Zeroes [off, off+len). */
  zero(off: number, len: number): void {
    this.touch(off, len);
    this.ram.u8.fill(0, off, off + len);
    this.wrote(off, len);
  }
}
