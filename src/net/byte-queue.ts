/**
 * The unacknowledged bytes of one direction of a relayed stream, indexed by stream offset
 * (sequence number). Bytes [ackSeq, endSeq) are held until the other side acknowledges them, so
 * they can be sent again from any offset after a migration or a relink.
 */
export class ByteQueue {
  private chunks: Uint8Array[] = [];
  /** Index of the first chunk still held (chunks before it are dropped lazily). */
  private head = 0;
  /** Bytes of chunks[head] already acknowledged. */
  private headSkip = 0;
  private ack: number;
  private end: number;

  constructor(startSeq = 0) {
    this.ack = startSeq;
    this.end = startSeq;
  }

  /** Offset of the first byte held (everything before it is acknowledged). */
  get ackSeq(): number {
    return this.ack;
  }

  /** Offset just past the last byte held. */
  get endSeq(): number {
    return this.end;
  }

  get length(): number {
    return this.end - this.ack;
  }

  /** Appends a copy of `bytes` (the caller may reuse its buffer). */
  push(bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    this.chunks.push(bytes.slice());
    this.end += bytes.length;
  }

  /** Drops bytes before `seq`; a seq outside [ackSeq, endSeq] is clamped. Returns how many bytes were dropped. */
  ackTo(seq: number): number {
    const target = Math.min(Math.max(seq, this.ack), this.end);
    let n = target - this.ack;
    const dropped = n;
    while (n > 0) {
      const c = this.chunks[this.head]!;
      const left = c.length - this.headSkip;
      if (n >= left) {
        n -= left;
        this.head++;
        this.headSkip = 0;
      } else {
        this.headSkip += n;
        n = 0;
      }
    }
    this.ack = target;
    if (this.head > 64 && this.head * 2 > this.chunks.length) {
      this.chunks = this.chunks.slice(this.head);
      this.head = 0;
    }
    return dropped;
  }

  /**
   * Calls `fn` with views of the bytes from `seq` to endSeq, in order, each at most `max` bytes,
   * with the offset of its first byte. `seq` below ackSeq starts at ackSeq. Stops early when fn
   * returns false; returns the offset reached.
   */
  forEachFrom(seq: number, max: number, fn: (bytes: Uint8Array, seq: number) => boolean): number {
    let pos = Math.max(seq, this.ack);
    let at = this.ack;
    for (let i = this.head; i < this.chunks.length && pos < this.end; i++) {
      const c = this.chunks[i]!;
      const skip = i === this.head ? this.headSkip : 0;
      const len = c.length - skip;
      if (at + len <= pos) {
        at += len;
        continue;
      }
      let off = skip + (pos - at);
      while (off < c.length) {
        const n = Math.min(max, c.length - off);
        if (!fn(c.subarray(off, off + n), pos)) return pos;
        pos += n;
        off += n;
      }
      at += len;
    }
    return pos;
  }

  /** Copies up to `n` bytes from offset `seq` (≥ ackSeq) into `out` at `at`; returns how many. */
  copyOut(seq: number, out: Uint8Array, at: number, n: number): number {
    let pos = Math.max(seq, this.ack);
    const stop = Math.min(this.end, pos + n);
    let base = this.ack;
    let o = at;
    for (let i = this.head; i < this.chunks.length && pos < stop; i++) {
      const c = this.chunks[i]!;
      const skip = i === this.head ? this.headSkip : 0;
      const len = c.length - skip;
      if (base + len > pos) {
        const from = skip + (pos - base);
        const k = Math.min(c.length - from, stop - pos);
        out.set(c.subarray(from, from + k), o);
        o += k;
        pos += k;
      }
      base += len;
    }
    return o - at;
  }

  /** All held bytes as one array (state snapshots). */
  toBytes(): Uint8Array {
    const out = new Uint8Array(this.length);
    let o = 0;
    this.forEachFrom(this.ack, Number.MAX_SAFE_INTEGER, (b) => {
      out.set(b, o);
      o += b.length;
      return true;
    });
    return out;
  }

  /** A queue holding `bytes` at offsets [ackSeq, ackSeq + bytes.length). */
  static from(ackSeq: number, bytes: Uint8Array): ByteQueue {
    const q = new ByteQueue(ackSeq);
    q.push(bytes);
    return q;
  }
}
