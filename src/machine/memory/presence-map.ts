import { PAGE_SIZE } from './layout.js';
import { Sig, ring } from './signals.js';

/**
 * One byte per guest page: 1 = its contents are here, 0 = absent (post-copy: still on the
 * source). An access to an absent page stops the vCPU at that instruction; it publishes the
 * page number (Sig.FaultPage, Sig.FaultSeq) and sleeps until `install` makes the page present.
 */
export class PresenceMap {
  readonly bits: Uint8Array;
  readonly pageCount: number;
  private readonly signals: Int32Array;
  private readonly ramBytes: Uint8Array;
  private absentCount = 0;

  constructor(buffer: SharedArrayBuffer, pageCount: number, signals: Int32Array, ramBytes: Uint8Array) {
    this.bits = new Uint8Array(buffer, 0, pageCount);
    this.pageCount = pageCount;
    this.signals = signals;
    this.ramBytes = ramBytes;
  }

  static allocate(pageCount: number, signals: Int32Array, ramBytes: Uint8Array): PresenceMap {
    const m = new PresenceMap(new SharedArrayBuffer(pageCount), pageCount, signals, ramBytes);
    m.bits.fill(1);
    return m;
  }

  isPresent(page: number): boolean {
    return Atomics.load(this.bits, page) !== 0;
  }

  /** Absent pages remaining (host-side bookkeeping; valid in the thread that calls markAbsent/install). */
  get absent(): number {
    return this.absentCount;
  }

  /** Marks every page absent and turns presence checking on. Call while the vCPU is paused. */
  markAllAbsent(): void {
    this.bits.fill(0);
    this.absentCount = this.pageCount;
    Atomics.store(this.signals, Sig.PresenceOn, 1);
  }

  /** Marks one page absent (the vCPU must be paused or the page untouched). */
  markAbsent(page: number): void {
    if (Atomics.exchange(this.bits, page, 0) !== 0) this.absentCount++;
    Atomics.store(this.signals, Sig.PresenceOn, 1);
  }

  /**
   * Copies the page's contents into RAM, then marks it present and wakes the vCPU if it waits.
   * Returns false if the page was already present (its contents are left as they are: the
   * destination's copy may already have been written by the guest).
   */
  install(page: number, data: Uint8Array): boolean {
    if (Atomics.load(this.bits, page) !== 0) return false;
    this.ramBytes.set(data.subarray(0, PAGE_SIZE), page * PAGE_SIZE);
    Atomics.store(this.bits, page, 1);
    this.absentCount--;
    if (Atomics.load(this.signals, Sig.FaultPage) === page) ring(this.signals);
    return true;
  }

  /** Marks a page present without data (its RAM already holds the right bytes, e.g. zero). */
  installInPlace(page: number): boolean {
    if (Atomics.exchange(this.bits, page, 1) !== 0) return false;
    this.absentCount--;
    if (Atomics.load(this.signals, Sig.FaultPage) === page) ring(this.signals);
    return true;
  }

  /** Every page is here: presence checks can stop. */
  markAllPresent(): void {
    this.bits.fill(1);
    this.absentCount = 0;
    Atomics.store(this.signals, Sig.PresenceOn, 0);
    ring(this.signals);
  }
}
