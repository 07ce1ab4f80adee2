/**
 * A single-producer/single-consumer ring of packets in a SharedArrayBuffer, between a VM's vCPU
 * thread and the host thread. Records are `[u32 length LE][bytes]`, packed, wrapping at the end.
 * Layout: Int32 head (bytes ever written, mod 2^32) at 0, Int32 tail (bytes ever read) at 4,
 * Int32 producer-waiting flag at 8 (set by a producer that found the ring full, taken by the
 * consumer to know it should wake it), 4 bytes reserved, then `capacity` data bytes. The producer writes data before publishing head
 * with Atomics.store; the consumer reads head with Atomics.load before the data (so the data is
 * visible), and frees space by publishing tail.
 */
export const PACKET_RING_CAPACITY = 1 << 20;
const HEADER_BYTES = 16;
const HEAD = 0;
const TAIL = 1;
const WAITING = 2;

export class PacketRing {
  readonly buffer: SharedArrayBuffer;
  readonly capacity: number;
  private readonly ctl: Int32Array;
  private readonly data: Uint8Array;
  private readonly mask: number;
  /** Producer: write position of the record being built (beginRecord .. commit). */
  private wpos = 0;
  private wlen = 0;

  constructor(buffer: SharedArrayBuffer) {
    const capacity = buffer.byteLength - HEADER_BYTES;
    if (capacity <= 0 || (capacity & (capacity - 1)) !== 0) throw new RangeError(`packet ring data area of ${capacity} bytes is not a power of two`);
    this.buffer = buffer;
    this.capacity = capacity;
    this.mask = capacity - 1;
    this.ctl = new Int32Array(buffer, 0, 3);
    this.data = new Uint8Array(buffer, HEADER_BYTES, capacity);
  }

  static allocate(capacity = PACKET_RING_CAPACITY): SharedArrayBuffer {
    return new SharedArrayBuffer(HEADER_BYTES + capacity);
  }

  /** Bytes in use (records and their length words). */
  get used(): number {
    return (Atomics.load(this.ctl, HEAD) - Atomics.load(this.ctl, TAIL)) >>> 0;
  }

  get free(): number {
    return this.capacity - this.used;
  }

  get empty(): boolean {
    return Atomics.load(this.ctl, HEAD) === Atomics.load(this.ctl, TAIL);
  }

  // ---- producer ----

  /** Whether a record of `len` bytes fits now. */
  fits(len: number): boolean {
    return 4 + len <= this.free;
  }

  /** Appends one record; false (nothing written) if it does not fit. */
  push(packet: Uint8Array): boolean {
    if (!this.beginRecord(packet.length)) return false;
    this.writeChunk(packet);
    this.commit();
    return true;
  }

  /** Starts a record of exactly `len` bytes, to be filled by writeChunk calls; false if it does not fit. */
  beginRecord(len: number): boolean {
    if (!this.fits(len)) {
      // Flag first, then look again: a consumer that drained in between sees the flag.
      Atomics.store(this.ctl, WAITING, 1);
      if (!this.fits(len)) return false;
    }
    const head = Atomics.load(this.ctl, HEAD) >>> 0;
    this.putU32(head, len);
    this.wpos = (head + 4) >>> 0;
    this.wlen = len;
    return true;
  }

  writeChunk(src: Uint8Array): void {
    this.copyIn(this.wpos, src);
    this.wpos = (this.wpos + src.length) >>> 0;
  }

  /** Publishes the record started by beginRecord. */
  commit(): void {
    const head = Atomics.load(this.ctl, HEAD) >>> 0;
    Atomics.store(this.ctl, HEAD, (head + 4 + this.wlen) | 0);
  }

  // ---- consumer ----

  /** Length of the next record, or -1 if the ring is empty. */
  peekLength(): number {
    const tail = Atomics.load(this.ctl, TAIL) >>> 0;
    if ((Atomics.load(this.ctl, HEAD) >>> 0) === tail) return -1;
    return this.getU32(tail);
  }

  /** Copies the next record into `dst` (which must be large enough) and removes it; returns its length. */
  readInto(dst: Uint8Array): number {
    const tail = Atomics.load(this.ctl, TAIL) >>> 0;
    const len = this.getU32(tail);
    this.copyOut((tail + 4) >>> 0, dst, len);
    Atomics.store(this.ctl, TAIL, (tail + 4 + len) | 0);
    return len;
  }

  /** Removes the next record unread. */
  skip(): void {
    const tail = Atomics.load(this.ctl, TAIL) >>> 0;
    const len = this.getU32(tail);
    Atomics.store(this.ctl, TAIL, (tail + 4 + len) | 0);
  }

  /** Removes and returns the next record (a copy), or undefined if empty. */
  shift(): Uint8Array | undefined {
    const len = this.peekLength();
    if (len < 0) return undefined;
    const out = new Uint8Array(len);
    this.readInto(out);
    return out;
  }

  /** Consumer: whether the producer found the ring full since the last call (and so wants waking). */
  takeWaiting(): boolean {
    return Atomics.exchange(this.ctl, WAITING, 0) !== 0;
  }

  /** Drops every record (consumer side). */
  clear(): void {
    Atomics.store(this.ctl, TAIL, Atomics.load(this.ctl, HEAD));
  }

  // ---- bytes with wrap-around ----

  private putU32(pos: number, v: number): void {
    const d = this.data;
    const m = this.mask;
    d[pos & m] = v & 0xff;
    d[(pos + 1) & m] = (v >>> 8) & 0xff;
    d[(pos + 2) & m] = (v >>> 16) & 0xff;
    d[(pos + 3) & m] = (v >>> 24) & 0xff;
  }

  private getU32(pos: number): number {
    const d = this.data;
    const m = this.mask;
    return (d[pos & m]! | (d[(pos + 1) & m]! << 8) | (d[(pos + 2) & m]! << 16) | (d[(pos + 3) & m]! << 24)) >>> 0;
  }

  private copyIn(pos: number, src: Uint8Array): void {
    const at = pos & this.mask;
    const first = Math.min(src.length, this.capacity - at);
    this.data.set(first === src.length ? src : src.subarray(0, first), at);
    if (first < src.length) this.data.set(src.subarray(first), 0);
  }

  private copyOut(pos: number, dst: Uint8Array, len: number): void {
    const at = pos & this.mask;
    const first = Math.min(len, this.capacity - at);
    dst.set(this.data.subarray(at, at + first), 0);
    if (first < len) dst.set(this.data.subarray(0, len - first), first);
  }
}
