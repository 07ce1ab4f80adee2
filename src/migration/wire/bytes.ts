/**
 * Bounds-checked little-endian payload reading and exact-size frame writing. Every read failure
 * becomes a WireError naming the message and field; nothing here reads out of bounds.
 */
import { FRAME_HEADER_BYTES, FrameType, MAX_FRAME_PAYLOAD, frameTypeName } from './constants.js';
import { WireError, type WireErrorCode } from './errors.js';

const TWO_32 = 0x1_0000_0000;
/** hi word limit that keeps lo + hi * 2^32 a safe integer. */
const MAX_SAFE_HI = 0x1f_ffff;

const utf8Encoder = new TextEncoder();
// ignoreBOM keeps a leading U+FEFF, so a name round-trips byte for byte.
const utf8Decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

export function utf8Bytes(s: string): Uint8Array {
  return utf8Encoder.encode(s);
}

/** UTF-8 of `s`, cut to at most `max` bytes at a character boundary (for human-readable reasons). */
export function utf8BytesTruncated(s: string, max: number): Uint8Array {
  const b = utf8Encoder.encode(s);
  if (b.length <= max) return b;
  let end = max;
  while (end > 0 && (b[end]! & 0xc0) === 0x80) end--;
  return b.subarray(0, end);
}

export class PayloadReader {
  private readonly view: DataView;
  private pos = 0;

  constructor(readonly bytes: Uint8Array, readonly message: string) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  get offset(): number {
    return this.pos;
  }
  get remaining(): number {
    return this.bytes.length - this.pos;
  }

  fail(code: WireErrorCode, field: string, text: string): never {
    throw new WireError(code, text, { message: this.message, field });
  }

  private need(n: number, field: string): void {
    if (this.bytes.length - this.pos < n) {
      this.fail('truncated', field, `needs ${n} bytes at offset ${this.pos}, but the ${this.bytes.length}-byte payload has ${this.bytes.length - this.pos} left`);
    }
  }

  u8(field: string): number {
    this.need(1, field);
    return this.bytes[this.pos++]!;
  }
  u16(field: string): number {
    this.need(2, field);
    const v = this.view.getUint16(this.pos, true);
    this.pos += 2;
    return v;
  }
  u32(field: string): number {
    this.need(4, field);
    const v = this.view.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }
  /** u64 as two u32 (low word first); refused if it does not fit a safe integer. */
  u64(field: string): number {
    this.need(8, field);
    const lo = this.view.getUint32(this.pos, true);
    const hi = this.view.getUint32(this.pos + 4, true);
    if (hi > MAX_SAFE_HI) this.fail('bad-value', field, `u64 value with high word 0x${hi.toString(16)} exceeds 2^53`);
    this.pos += 8;
    return hi * TWO_32 + lo;
  }
  big64(field: string): bigint {
    this.need(8, field);
    const v = this.view.getBigUint64(this.pos, true);
    this.pos += 8;
    return v;
  }
  /** Reserved bytes that must be zero. */
  reserved(n: number, field: string): void {
    this.need(n, field);
    for (let i = 0; i < n; i++) {
      if (this.bytes[this.pos + i] !== 0) this.fail('reserved-bits', field, `reserved byte at offset ${this.pos + i} is 0x${this.bytes[this.pos + i]!.toString(16)}, must be 0`);
    }
    this.pos += n;
  }
  /** Fixed-size bytes, copied (ids, digests: small, and independent of the frame). */
  fixed(n: number, field: string): Uint8Array {
    this.need(n, field);
    const b = this.bytes.slice(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }
  /** `n` bytes whose length came from a count field: a shortfall is a count mismatch. View, not copy. */
  counted(n: number, field: string): Uint8Array {
    if (this.bytes.length - this.pos < n) {
      this.fail('bad-count', field, `declares ${n} bytes at offset ${this.pos}, but the ${this.bytes.length}-byte payload has ${this.bytes.length - this.pos} left`);
    }
    const b = this.bytes.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }
  utf8(n: number, field: string): string {
    const b = this.counted(n, field);
    try {
      return utf8Decoder.decode(b);
    } catch {
      return this.fail('bad-text', field, `${n} bytes are not valid UTF-8`);
    }
  }
  /** The payload must end here. */
  end(): void {
    if (this.pos !== this.bytes.length) {
      this.fail('trailing-bytes', 'end', `${this.bytes.length - this.pos} unexpected bytes after the last field (offset ${this.pos} of ${this.bytes.length})`);
    }
  }
}

/** Writes one frame, header included, into an exactly sized buffer. */
export class FrameWriter {
  readonly bytes: Uint8Array;
  private readonly view: DataView;
  private pos = FRAME_HEADER_BYTES;

  constructor(readonly type: FrameType, payloadBytes: number, flags = 0) {
    if (payloadBytes > MAX_FRAME_PAYLOAD) {
      throw new WireError('oversized', `payload of ${payloadBytes} bytes exceeds the frame bound of ${MAX_FRAME_PAYLOAD}`, { message: frameTypeName(type) });
    }
    this.bytes = new Uint8Array(FRAME_HEADER_BYTES + payloadBytes);
    this.view = new DataView(this.bytes.buffer);
    writeHeader(this.view, 0, type, flags, payloadBytes);
  }

  u8(v: number): this {
    this.view.setUint8(this.pos, v);
    this.pos += 1;
    return this;
  }
  u16(v: number): this {
    this.view.setUint16(this.pos, v, true);
    this.pos += 2;
    return this;
  }
  u32(v: number): this {
    this.view.setUint32(this.pos, v >>> 0, true);
    this.pos += 4;
    return this;
  }
  u64(v: number): this {
    this.view.setUint32(this.pos, v % TWO_32, true);
    this.view.setUint32(this.pos + 4, Math.floor(v / TWO_32), true);
    this.pos += 8;
    return this;
  }
  big64(v: bigint): this {
    this.view.setBigUint64(this.pos, v, true);
    this.pos += 8;
    return this;
  }
  zeros(n: number): this {
    this.pos += n; // a fresh buffer is already zero
    return this;
  }
  raw(b: Uint8Array | ReadonlyArray<number>): this {
    this.bytes.set(b, this.pos);
    this.pos += b.length;
    return this;
  }
  finish(): Uint8Array {
    if (this.pos !== this.bytes.length) throw new Error(`FrameWriter(${frameTypeName(this.type)}): wrote ${this.pos} of ${this.bytes.length} bytes`);
    return this.bytes;
  }
}

export function writeHeader(view: DataView, at: number, type: number, flags: number, length: number): void {
  view.setUint8(at, type);
  view.setUint8(at + 1, flags);
  view.setUint16(at + 2, 0, true);
  view.setUint32(at + 4, length, true);
}

/** Encoder-side argument checks: the caller's bug, reported in the same vocabulary. */
export function checkU32(message: string, field: string, v: number): void {
  if (!Number.isInteger(v) || v < 0 || v > 0xffff_ffff) throw new WireError('bad-value', `${v} is not a u32`, { message, field });
}
export function checkU64(message: string, field: string, v: number): void {
  if (!Number.isSafeInteger(v) || v < 0) throw new WireError('bad-value', `${v} is not a non-negative safe integer`, { message, field });
}
export function checkBytes(message: string, field: string, b: Uint8Array, n: number): void {
  if (b.length !== n) throw new WireError('bad-value', `must be ${n} bytes, got ${b.length}`, { message, field });
}

/** Copies up to this many bytes one by one: a subarray per copy costs more than the loop. */
const SHORT_COPY = 32;

/**
 * Copies `n` bytes of `src` from `from` into `dst` at `at`. A short run (an XBZRLE run, a delta
 * entry) byte by byte, allocating nothing; a longer one through `set`.
 */
export function copyBytes(src: Uint8Array, from: number, dst: Uint8Array, at: number, n: number): void {
  if (n <= SHORT_COPY) for (let k = 0; k < n; k++) dst[at + k] = src[from + k]!;
  else dst.set(src.subarray(from, from + n), at);
}

export function isAllZero(b: Uint8Array): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}

export function hex(b: Uint8Array): string {
  let s = '';
  for (let i = 0; i < b.length; i++) s += b[i]!.toString(16).padStart(2, '0');
  return s;
}
