import { StateReader, StateWriter, type Stateful } from './state/codec.js';

/** Bytes of console history kept with the VM; older output is dropped, and the count of dropped bytes kept. */
export const CONSOLE_HISTORY_BYTES = 1 << 20;

/** The last `n` bytes of `chunks` joined (all of them if they hold fewer), copied from the newest chunk back. */
export function lastBytes(chunks: readonly Uint8Array[], n: number): Uint8Array {
  let have = 0;
  let i = chunks.length;
  while (i > 0 && have < n) have += chunks[--i]!.length;
  const out = new Uint8Array(Math.min(n, have));
  let o = out.length;
  for (let k = chunks.length - 1; k >= i && o > 0; k--) {
    const c = chunks[k]!;
    const m = Math.min(c.length, o);
    out.set(c.subarray(c.length - m), o - m);
    o -= m;
  }
  return out;
}

/**
 * Everything the guest printed on its console, kept with the machine so it travels across
 * migrations. A ring of the last CONSOLE_HISTORY_BYTES bytes.
 */
export class ConsoleLog implements Stateful {
  readonly stateId = 'console';
  readonly stateVersion = 1;
  private ring = new Uint8Array(CONSOLE_HISTORY_BYTES);
  private head = 0; // next write position
  private filled = 0;
  /** Total bytes ever written (including dropped ones). */
  total = 0;

  push(byte: number): void {
    this.ring[this.head] = byte;
    this.head = (this.head + 1) % CONSOLE_HISTORY_BYTES;
    if (this.filled < CONSOLE_HISTORY_BYTES) this.filled++;
    this.total++;
  }

  pushAll(bytes: Uint8Array): void {
    for (let i = 0; i < bytes.length; i++) this.push(bytes[i]!);
  }

  /** The retained history, oldest first (a copy). */
  contents(): Uint8Array {
    const out = new Uint8Array(this.filled);
    const start = (this.head - this.filled + CONSOLE_HISTORY_BYTES) % CONSOLE_HISTORY_BYTES;
    const first = Math.min(this.filled, CONSOLE_HISTORY_BYTES - start);
    out.set(this.ring.subarray(start, start + first), 0);
    out.set(this.ring.subarray(0, this.filled - first), first);
    return out;
  }

  get dropped(): number {
    return this.total - this.filled;
  }

  /**
   * The next saveState writes only the bytes from this position of the whole output on (the ones
   * before it travelled already: migration's CONSOLE frames); 0 (the default) writes all that is
   * retained. A state saved this way is an ordinary console state whose history starts later.
   */
  saveFrom = 0;

  /** The retained bytes from `from` (a position in the whole output) on, a copy; all retained if `from` is older. */
  since(from: number): Uint8Array {
    const all = this.contents();
    const skip = Math.min(all.length, Math.max(0, from - (this.total - this.filled)));
    return all.subarray(skip); // contents() is a copy already
  }

  saveState(w: StateWriter): void {
    w.f64(this.total);
    w.bytes(this.saveFrom > 0 ? this.since(this.saveFrom) : this.contents());
  }

  /**
   * Puts history that ended at `end` (bytes [end − prefix.length, end) of the whole output) in
   * front of what this log retains, where the two meet or overlap: the history a migration sent
   * live, joined to the tail the machine state carried. Where they do not meet (a gap, or the
   * retained bytes already reach back as far), it changes nothing. The newest
   * CONSOLE_HISTORY_BYTES are kept. Returns whether it joined.
   */
  join(end: number, prefix: Uint8Array): boolean {
    const base = this.total - this.filled;
    const start = end - prefix.length;
    if (base > end || base <= start || this.filled >= CONSOLE_HISTORY_BYTES) return false;
    const head = prefix.subarray(0, base - start);
    const tail = this.contents();
    const keep = Math.min(CONSOLE_HISTORY_BYTES, head.length + tail.length);
    const fromHead = keep - tail.length;
    this.ring.set(head.subarray(head.length - fromHead), 0);
    this.ring.set(tail, fromHead);
    this.filled = keep;
    this.head = keep % CONSOLE_HISTORY_BYTES;
    return true;
  }

  restoreState(r: StateReader): void {
    const total = r.f64();
    const data = r.bytes(CONSOLE_HISTORY_BYTES);
    if (!Number.isSafeInteger(total) || total < data.length) r.fail(`console total ${total} is smaller than its ${data.length} retained bytes`);
    // No clearing: only the `filled` bytes are ever read. (Clearing the whole MiB faulted in the
    // pages of a new machine's ring: 2 ms of a destination's first load, inside the downtime.)
    this.ring.set(data, 0);
    this.filled = data.length;
    this.head = data.length % CONSOLE_HISTORY_BYTES;
    this.total = total;
  }
}
