/**
 * Little-endian binary writer/reader for machine state. Every read is bounds-checked and throws
 * StateFormatError, so a truncated or corrupt state is refused instead of half-loaded.
 */
export class StateFormatError extends Error {
  constructor(message: string, readonly section?: string) {
    super(section !== undefined ? `machine state, section '${section}': ${message}` : `machine state: ${message}`);
    this.name = 'StateFormatError';
  }
}

export class StateWriter {
  private buf: Uint8Array;
  private view: DataView;
  private pos = 0;

  constructor(initial = 4096) {
    this.buf = new Uint8Array(initial);
    this.view = new DataView(this.buf.buffer);
  }

  get length(): number {
    return this.pos;
  }

  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }

  u8(v: number): void {
    this.ensure(1);
    this.view.setUint8(this.pos, v);
    this.pos += 1;
  }
  bool(v: boolean): void {
    this.u8(v ? 1 : 0);
  }
  u16(v: number): void {
    this.ensure(2);
    this.view.setUint16(this.pos, v, true);
    this.pos += 2;
  }
  u32(v: number): void {
    this.ensure(4);
    this.view.setUint32(this.pos, v >>> 0, true);
    this.pos += 4;
  }
  i32(v: number): void {
    this.ensure(4);
    this.view.setInt32(this.pos, v | 0, true);
    this.pos += 4;
  }
  /** A double; also used for 64-bit counters, which stay below 2^53. */
  f64(v: number): void {
    this.ensure(8);
    this.view.setFloat64(this.pos, v, true);
    this.pos += 8;
  }
  /** Length-prefixed bytes. */
  bytes(b: Uint8Array): void {
    this.u32(b.length);
    this.ensure(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }
  i32s(a: Int32Array): void {
    this.u32(a.length);
    for (let i = 0; i < a.length; i++) this.i32(a[i]!);
  }
  string(s: string): void {
    this.bytes(new TextEncoder().encode(s));
  }
  /** Raw bytes, no length prefix. */
  raw(b: Uint8Array): void {
    this.ensure(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }
  /** Overwrites a u32 already written at `at` (for back-patched lengths). */
  patchU32(at: number, v: number): void {
    this.view.setUint32(at, v >>> 0, true);
  }
  finish(): Uint8Array {
    return this.buf.slice(0, this.pos);
  }
}

export class StateReader {
  private readonly view: DataView;
  private pos = 0;
  /** Names the section being read, for error messages. */
  section: string | undefined;

  constructor(readonly buf: Uint8Array, section?: string) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    this.section = section;
  }

  get offset(): number {
    return this.pos;
  }
  get remaining(): number {
    return this.buf.length - this.pos;
  }

  fail(message: string): never {
    throw new StateFormatError(message, this.section);
  }

  private need(n: number): void {
    if (this.pos + n > this.buf.length) this.fail(`truncated: needed ${n} more bytes at offset ${this.pos}, ${this.buf.length - this.pos} left`);
  }

  u8(): number {
    this.need(1);
    return this.view.getUint8(this.pos++);
  }
  bool(): boolean {
    const v = this.u8();
    if (v > 1) this.fail(`boolean byte ${v} at offset ${this.pos - 1}`);
    return v === 1;
  }
  u16(): number {
    this.need(2);
    const v = this.view.getUint16(this.pos, true);
    this.pos += 2;
    return v;
  }
  u32(): number {
    this.need(4);
    const v = this.view.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }
  i32(): number {
    this.need(4);
    const v = this.view.getInt32(this.pos, true);
    this.pos += 4;
    return v;
  }
  f64(): number {
    this.need(8);
    const v = this.view.getFloat64(this.pos, true);
    this.pos += 8;
    return v;
  }
  /** Length-prefixed bytes; `max` bounds the length before anything is allocated. */
  bytes(max: number): Uint8Array {
    const n = this.u32();
    if (n > max) this.fail(`byte string of ${n} bytes exceeds the limit of ${max}`);
    this.need(n);
    const out = this.buf.slice(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
  /** Reads an Int32Array written by i32s into `into`, which must have exactly that length. */
  i32sInto(into: Int32Array): void {
    const n = this.u32();
    if (n !== into.length) this.fail(`expected ${into.length} words, found ${n}`);
    for (let i = 0; i < n; i++) into[i] = this.i32();
  }
  string(max: number): string {
    return new TextDecoder('utf-8', { fatal: true }).decode(this.bytes(max));
  }
  raw(n: number): Uint8Array {
    this.need(n);
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
  /** Asserts the section was consumed exactly. */
  end(): void {
    if (this.pos !== this.buf.length) this.fail(`${this.buf.length - this.pos} unexpected trailing bytes`);
  }
}

/** Everything that is part of a VM's non-RAM state implements this (v86's state.js shape). */
export interface Stateful {
  /** Section name in the state file, unique within a machine. */
  readonly stateId: string;
  /** Version of this section's layout; bumped whenever the layout changes. */
  readonly stateVersion: number;
  saveState(w: StateWriter): void;
  /** Called with a reader over exactly this section; `version` is the version it was saved with. */
  restoreState(r: StateReader, version: number): void;
}
