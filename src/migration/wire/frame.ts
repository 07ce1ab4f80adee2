/**
 * Framing: an 8-byte header {type u8, flags u8, reserved u16 = 0, length u32 LE} + payload, and
 * FrameReader, which turns arbitrary stream chunks into whole frames. Each byte is copied at most
 * once (a frame inside one chunk is a view of it), and a header is validated, bound included,
 * before a single payload byte is buffered for it.
 */
import {
  FRAME_HEADER_BYTES,
  FrameType,
  MAGIC,
  PROTOCOL_VERSION,
  allowedFlagsFor,
  formatVersion,
  frameTypeName,
  isFrameType,
  maxPayloadFor,
  senderOf,
} from './constants.js';
import { FrameWriter, writeHeader } from './bytes.js';
import { WireError } from './errors.js';

export interface FrameHeader {
  readonly type: FrameType;
  readonly flags: number;
  /** Payload bytes that follow the header. */
  readonly length: number;
}

export interface Frame {
  readonly type: FrameType;
  readonly flags: number;
  /** The payload; a view into the received chunk when it arrived whole. Never overwritten by the reader. */
  readonly payload: Uint8Array;
}

/**
 * Validates an 8-byte header: known type, zero reserved field, only the flags its type allows,
 * and a length within the type's bound.
 */
export function decodeFrameHeader(bytes: Uint8Array, at = 0): FrameHeader {
  if (bytes.length - at < FRAME_HEADER_BYTES) {
    throw new WireError('truncated', `frame header needs ${FRAME_HEADER_BYTES} bytes, got ${Math.max(0, bytes.length - at)}`);
  }
  const type = bytes[at]!;
  const flags = bytes[at + 1]!;
  const reserved = bytes[at + 2]! | (bytes[at + 3]! << 8);
  const length = (bytes[at + 4]! | (bytes[at + 5]! << 8) | (bytes[at + 6]! << 16) | (bytes[at + 7]! << 24)) >>> 0;
  if (!isFrameType(type)) {
    throw new WireError('unknown-type', `frame type 0x${type.toString(16).padStart(2, '0')} is not defined by protocol ${formatVersion(PROTOCOL_VERSION)}`, { field: 'type' });
  }
  const name = frameTypeName(type);
  if (reserved !== 0) {
    throw new WireError('reserved-bits', `header reserved field is 0x${reserved.toString(16)}, must be 0`, { message: name, field: 'reserved' });
  }
  const extra = flags & ~allowedFlagsFor(type);
  if (extra !== 0) {
    throw new WireError('reserved-bits', `flag bits 0x${extra.toString(16)} are not defined for ${name} (flags 0x${flags.toString(16)})`, { message: name, field: 'flags' });
  }
  const max = maxPayloadFor(type);
  if (length > max) {
    throw new WireError('oversized', `payload length ${length} exceeds the ${name} bound of ${max} bytes`, { message: name, field: 'length' });
  }
  return { type, flags, length };
}

/** Just the 8 header bytes, for writing a large payload (STATE) without copying it. */
export function encodeFrameHeader(type: FrameType, length: number, flags = 0): Uint8Array {
  const b = new Uint8Array(FRAME_HEADER_BYTES);
  writeHeader(new DataView(b.buffer), 0, type, flags, length);
  return b;
}

/** Header + a copy of the payload. */
export function encodeFrame(type: FrameType, payload: Uint8Array, flags = 0): Uint8Array {
  return new FrameWriter(type, payload.length, flags).raw(payload).finish();
}

/**
 * A frame whose payload is left where it arrived: views of the received chunks, in order, whose
 * lengths add up to `length`. Nothing is copied, however many chunks the payload spans.
 */
export interface FramePieces {
  readonly type: FrameType;
  readonly flags: number;
  readonly length: number;
  readonly pieces: readonly Uint8Array[];
}

export interface FrameReaderOptions {
  /**
   * Who writes the stream this reader reads. When set, the first frame must be the handshake
   * (HELLO from a source; ACCEPT or REFUSE from a destination) and every later frame must be
   * one that side may send.
   */
  readonly from?: 'source' | 'destination';
}

const EMPTY = new Uint8Array(0);

function printable(b: Uint8Array): string {
  let s = '';
  for (let i = 0; i < b.length; i++) s += b[i]! >= 0x20 && b[i]! < 0x7f ? String.fromCharCode(b[i]!) : '.';
  return s;
}

function hexBytes(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join(' ');
}

/**
 * Streaming framer. `push` chunks as they arrive, pull frames with `next()` (or `feed`, which
 * does both). After a WireError the stream is unusable: every later call throws the same error.
 */
export class FrameReader {
  private chunks: Uint8Array[] = [];
  private first = 0; // index of the head chunk in `chunks`
  private headOffset = 0; // bytes of the head chunk already consumed
  private avail = 0;
  private pendingType = -1; // header parsed, payload not yet complete
  private pendingFlags = 0;
  private pendingLength = 0;
  private framesRead = 0;
  private failure: WireError | undefined;
  private refused = false;
  private magicChecked = false;
  private readonly scratch = new Uint8Array(FRAME_HEADER_BYTES);
  private readonly from: 'source' | 'destination' | undefined;

  constructor(options: FrameReaderOptions = {}) {
    this.from = options.from;
  }

  /** Bytes received but not yet returned as frames (header bytes of a pending frame excluded). */
  get buffered(): number {
    return this.avail;
  }

  /** Frames returned so far. */
  get frameCount(): number {
    return this.framesRead;
  }

  push(chunk: Uint8Array): void {
    if (this.failure !== undefined) throw this.failure;
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.avail += chunk.length;
  }

  /** The next complete frame, or undefined until more bytes arrive. Throws WireError. */
  next(): Frame | undefined {
    if (this.failure !== undefined) throw this.failure;
    try {
      if (!this.ready()) return undefined;
      const type = this.pendingType as FrameType;
      const flags = this.pendingFlags;
      return { type, flags, payload: this.take(this.complete()) };
    } catch (e) {
      if (e instanceof WireError) this.failure = e;
      throw e;
    }
  }

  /**
   * Like next(), but the payload comes back as views of the chunks it arrived in, never copied
   * into one buffer (for large frames consumed piece by piece, such as PAGES into guest RAM).
   */
  nextPieces(): FramePieces | undefined {
    if (this.failure !== undefined) throw this.failure;
    try {
      if (!this.ready()) return undefined;
      const type = this.pendingType as FrameType;
      const flags = this.pendingFlags;
      const length = this.complete();
      return { type, flags, length, pieces: this.takePieces(length) };
    } catch (e) {
      if (e instanceof WireError) this.failure = e;
      throw e;
    }
  }

  /**
   * The frame being received while only part of its payload is here: its checked header and the
   * payload bytes buffered so far (`buffered` < `length`). Undefined at a frame boundary without
   * a whole header yet, and when a whole frame is buffered (next() returns it).
   */
  partial(): (FrameHeader & { readonly buffered: number }) | undefined {
    if (this.failure !== undefined) throw this.failure;
    try {
      if (this.ready() || this.pendingType < 0) return undefined;
    } catch (e) {
      if (e instanceof WireError) this.failure = e;
      throw e;
    }
    return { type: this.pendingType as FrameType, flags: this.pendingFlags, length: this.pendingLength, buffered: this.avail };
  }

  /**
   * Ends the partial frame here: returns its buffered payload bytes as views (`length` is their
   * count) and goes back to a frame boundary. The frame's other bytes will not be pushed: the
   * caller receives them itself (PAGE_RUN data read straight into guest RAM), and pushes what
   * follows them.
   */
  detachPartial(): FramePieces {
    const p = this.partial();
    if (p === undefined) throw new Error('FrameReader.detachPartial(): no partly received frame');
    const n = this.avail;
    this.complete();
    return { type: p.type, flags: p.flags, length: n, pieces: this.takePieces(n) };
  }

  /** Every complete frame buffered now. */
  *drain(): Generator<Frame, void, undefined> {
    for (;;) {
      const f = this.next();
      if (f === undefined) return;
      yield f;
    }
  }

  /** push + drain. The chunk is taken at once; frames are produced as the result is iterated. */
  feed(chunk: Uint8Array): Generator<Frame, void, undefined> {
    this.push(chunk);
    return this.drain();
  }

  /**
   * The peer closed the stream. Call after draining: throws WireError 'truncated' if it stopped
   * inside a frame.
   */
  end(): void {
    if (this.failure !== undefined) throw this.failure;
    if (this.pendingType < 0) {
      if (this.avail >= FRAME_HEADER_BYTES) throw new Error('FrameReader.end(): complete frames are still buffered; drain them first');
      if (this.avail > 0) {
        this.failure = new WireError('truncated', `stream ended inside a frame header: ${this.avail} of ${FRAME_HEADER_BYTES} bytes received`);
        throw this.failure;
      }
      return;
    }
    if (this.avail >= this.pendingLength) throw new Error('FrameReader.end(): complete frames are still buffered; drain them first');
    const name = frameTypeName(this.pendingType);
    this.failure = new WireError('truncated', `stream ended inside a ${name} frame: ${this.avail} of ${this.pendingLength} payload bytes received`, { message: name });
    throw this.failure;
  }

  /** Whether a whole frame is buffered (its header checked). */
  private ready(): boolean {
    if (this.pendingType < 0) {
      if (this.avail < FRAME_HEADER_BYTES) return false;
      this.peek(this.scratch, FRAME_HEADER_BYTES);
      const h = this.checkHeader(this.scratch);
      this.advance(FRAME_HEADER_BYTES);
      this.pendingType = h.type;
      this.pendingFlags = h.flags;
      this.pendingLength = h.length;
    }
    const length = this.pendingLength;
    if (this.framesRead === 0 && this.from !== undefined && !this.magicChecked) {
      // Check the magic as soon as it is here, not after buffering the whole handshake.
      const n = Math.min(MAGIC.length, length);
      if (this.avail < n) return false;
      this.checkMagic(n);
      this.magicChecked = true;
    }
    return this.avail >= length;
  }

  /** Ends the pending frame; returns its payload length (the caller consumes the payload). */
  private complete(): number {
    this.pendingType = -1;
    this.framesRead++;
    return this.pendingLength;
  }

  private checkHeader(b: Uint8Array): FrameHeader {
    const from = this.from;
    if (from === undefined) return decodeFrameHeader(b);
    if (this.framesRead === 0) {
      const wanted = from === 'source' ? 'a HELLO frame' : 'an ACCEPT or REFUSE frame';
      let h: FrameHeader;
      try {
        h = decodeFrameHeader(b);
      } catch {
        throw new WireError('bad-magic', `peer does not speak the tern migration protocol: its first bytes are ${hexBytes(b)} ("${printable(b)}"), ${wanted} was expected`);
      }
      const ok = from === 'source' ? h.type === FrameType.Hello : h.type === FrameType.Accept || h.type === FrameType.Refuse;
      if (!ok) throw new WireError('unexpected-type', `first frame from the ${from} is ${frameTypeName(h.type)}; ${wanted} was expected`, { message: frameTypeName(h.type) });
      if (h.type === FrameType.Refuse) this.refused = true;
      return h;
    }
    const h = decodeFrameHeader(b);
    const name = frameTypeName(h.type);
    if (this.refused) throw new WireError('unexpected-type', `${name} after REFUSE; a refusing destination sends nothing more`, { message: name });
    if (h.type === FrameType.Hello || h.type === FrameType.Accept || h.type === FrameType.Refuse) {
      throw new WireError('unexpected-type', `${name} after the handshake (frame ${this.framesRead + 1})`, { message: name });
    }
    const sender = senderOf(h.type);
    if (sender !== 'either' && sender !== from) {
      throw new WireError('unexpected-type', `${name} is sent by the ${sender}, but this stream comes from the ${from}`, { message: name });
    }
    return h;
  }

  private checkMagic(n: number): void {
    const got = new Uint8Array(n);
    this.peek(got, n);
    let same = n === MAGIC.length;
    for (let i = 0; i < n && same; i++) same = got[i] === MAGIC[i];
    if (!same) {
      throw new WireError('bad-magic', `peer does not speak the tern migration protocol: handshake magic is ${hexBytes(got)} ("${printable(got)}"), expected "TERNMIGR"`, { message: frameTypeName(this.pendingType), field: 'magic' });
    }
  }

  /** Copies the first n buffered bytes into dst without consuming them. */
  private peek(dst: Uint8Array, n: number): void {
    let copied = 0;
    let i = this.first;
    let off = this.headOffset;
    while (copied < n) {
      const c = this.chunks[i]!;
      const k = Math.min(n - copied, c.length - off);
      dst.set(c.subarray(off, off + k), copied);
      copied += k;
      i++;
      off = 0;
    }
  }

  /** Consumes n bytes: a view when they lie in one chunk, else one copy into a new buffer. */
  private take(n: number): Uint8Array {
    if (n === 0) return EMPTY;
    const head = this.chunks[this.first]!;
    if (head.length - this.headOffset >= n) {
      const v = head.subarray(this.headOffset, this.headOffset + n);
      this.advance(n);
      return v;
    }
    const out = new Uint8Array(n);
    this.peek(out, n);
    this.advance(n);
    return out;
  }

  /** Consumes n bytes as views of the chunks that hold them. */
  private takePieces(n: number): Uint8Array[] {
    const out: Uint8Array[] = [];
    let left = n;
    let i = this.first;
    let off = this.headOffset;
    while (left > 0) {
      const c = this.chunks[i]!;
      const k = Math.min(left, c.length - off);
      out.push(c.subarray(off, off + k));
      left -= k;
      i++;
      off = 0;
    }
    this.advance(n);
    return out;
  }

  private advance(n: number): void {
    this.avail -= n;
    while (n > 0) {
      const c = this.chunks[this.first]!;
      const left = c.length - this.headOffset;
      if (n < left) {
        this.headOffset += n;
        return;
      }
      n -= left;
      this.first++;
      this.headOffset = 0;
    }
    if (this.first === this.chunks.length) {
      this.chunks = [];
      this.first = 0;
    } else if (this.first >= 64 && this.first * 2 >= this.chunks.length) {
      this.chunks = this.chunks.slice(this.first); // drop consumed chunks without shifting per chunk
      this.first = 0;
    }
  }
}
