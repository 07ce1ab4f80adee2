import type { StateReader, StateWriter } from '../state/codec.js';

const TWO32 = 4294967296;

/**
 * A writable 64-bit guest counter (mcycle, minstret) derived from the hart's retired-instruction
 * count, kept exact as two 32-bit halves plus a base so guest writes of any 64-bit value are
 * exact even though a double only holds 53 bits.
 */
export class Counter64 {
  /** Value (high, low halves) when the hart's retired count was `at`. */
  private hi = 0;
  private lo = 0;
  private at = 0;
  /** mcountinhibit bit: the counter holds its value. */
  private inhibited = false;

  reset(): void {
    this.hi = 0;
    this.lo = 0;
    this.at = 0;
    this.inhibited = false;
  }

  lo32(n: number): number {
    if (this.inhibited) return this.lo;
    return (this.lo + ((n - this.at) % TWO32)) >>> 0;
  }

  hi32(n: number): number {
    if (this.inhibited) return this.hi;
    const d = n - this.at;
    const dl = d % TWO32;
    const carry = this.lo + dl >= TWO32 ? 1 : 0;
    return (this.hi + Math.floor(d / TWO32) + carry) >>> 0;
  }

  /**
   * A csr write during the instruction that retires as instruction number n+1: the written value
   * replaces that instruction's own increment (privileged spec, Zicsr side effects).
   */
  writeLo(v: number, n: number): void {
    this.hi = this.hi32(n);
    this.lo = v >>> 0;
    this.at = n + 1;
  }

  writeHi(v: number, n: number): void {
    this.lo = this.lo32(n);
    this.hi = v >>> 0;
    this.at = n + 1;
  }

  setInhibited(on: boolean, n: number): void {
    if (on === this.inhibited) return;
    if (on) {
      this.hi = this.hi32(n);
      this.lo = this.lo32(n);
    } else {
      this.at = n + 1;
    }
    this.inhibited = on;
  }

  save(w: StateWriter): void {
    w.u32(this.hi);
    w.u32(this.lo);
    w.f64(this.at);
    w.bool(this.inhibited);
  }

  /** Reads into a detached copy so a failing restore leaves this counter untouched. */
  static read(r: StateReader): Counter64 {
    const c = new Counter64();
    c.hi = r.u32();
    c.lo = r.u32();
    c.at = r.f64();
    if (!Number.isSafeInteger(c.at)) r.fail(`counter base ${c.at} is not an integer`);
    c.inhibited = r.bool();
    return c;
  }

  copyFrom(c: Counter64): void {
    this.hi = c.hi;
    this.lo = c.lo;
    this.at = c.at;
    this.inhibited = c.inhibited;
  }
}
