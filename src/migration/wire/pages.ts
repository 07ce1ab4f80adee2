/**
 * PAGES, the hot path. The builder appends entries into one buffer allocated up front and reused
 * for every batch; the reader validates a batch once and then exposes each entry's page number,
 * encoding and data as offsets into (views of) the frame payload: no per-page copies.
 *
 * Payload: round u32 | requestId u32 | count u16 | reserved u16 | count entries, each
 * page u32 | encoding u8 | raw: 4096 bytes, zero: nothing, delta/compressed: length u32 + bytes.
 */
import {
  FRAME_HEADER_BYTES,
  FrameFlag,
  FrameType,
  MAX_BATCH_PAGES,
  MAX_ENCODED_PAGE_BYTES,
  MAX_PAGE_ENTRY_BYTES,
  PAGES_FIXED_BYTES,
  PageEncoding,
  WIRE_PAGE_SIZE,
} from './constants.js';
import { copyBytes, writeHeader } from './bytes.js';
import { WireError } from './errors.js';
import type { Body, Pages } from './messages.js';

const MSG = 'PAGES';

function fail(code: 'bad-value' | 'bad-count', field: string, text: string): never {
  throw new WireError(code, text, { message: MSG, field });
}

function checkPage(page: number): void {
  if (!Number.isInteger(page) || page < 0 || page > 0xffff_ffff) fail('bad-value', 'page', `${page} is not a u32 page number`);
}

/**
 * Builds PAGES frames into a reusable buffer sized for `capacity` worst-case entries. Use:
 * begin(round) · add*() until `full` · finish() → the frame (header included). The returned
 * view aliases the buffer: it is valid until the next begin(), so wait for the socket to take it
 * (write callback) before starting the next batch, or alternate two builders.
 */
export class PageBatchBuilder {
  readonly capacity: number;
  private readonly buf: Uint8Array;
  private readonly view: DataView;
  private pos = FRAME_HEADER_BYTES + PAGES_FIXED_BYTES;
  private n = 0;
  private flags = 0;
  private open = false;
  private reservedAt = -1; // offset of the pending encoded entry's length field

  constructor(capacity: number = MAX_BATCH_PAGES) {
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > MAX_BATCH_PAGES) {
      throw new WireError('bad-count', `capacity ${capacity} is outside 1..${MAX_BATCH_PAGES}`, { message: MSG, field: 'capacity' });
    }
    this.capacity = capacity;
    this.buf = new Uint8Array(FRAME_HEADER_BYTES + PAGES_FIXED_BYTES + capacity * MAX_PAGE_ENTRY_BYTES);
    this.view = new DataView(this.buf.buffer);
  }

  /** The whole internal buffer (constant for the builder's life); encoders write at reserveEncoded()'s offset. */
  get bytes(): Uint8Array {
    return this.buf;
  }
  get count(): number {
    return this.n;
  }
  get full(): boolean {
    return this.n >= this.capacity;
  }
  /** Frame bytes so far, header included. */
  get frameBytes(): number {
    return this.pos;
  }

  /**
   * Starts a batch. A non-zero requestId marks it as the answer to that PAGE_REQUEST (frame flag
   * demand); 0 is an ordinary (pushed) batch.
   */
  begin(round: number, requestId = 0): this {
    if (!Number.isInteger(round) || round < 0 || round > 0xffff_ffff) fail('bad-value', 'round', `${round} is not a u32`);
    if (!Number.isInteger(requestId) || requestId < 0 || requestId > 0xffff_ffff) fail('bad-value', 'requestId', `${requestId} is not a u32`);
    this.view.setUint32(FRAME_HEADER_BYTES, round, true);
    this.view.setUint32(FRAME_HEADER_BYTES + 4, requestId, true);
    this.flags = requestId !== 0 ? FrameFlag.Demand : 0;
    this.pos = FRAME_HEADER_BYTES + PAGES_FIXED_BYTES;
    this.n = 0;
    this.open = true;
    this.reservedAt = -1;
    return this;
  }

  private entry(page: number, encoding: PageEncoding): void {
    if (!this.open) throw new Error('PageBatchBuilder: begin() a batch first');
    if (this.reservedAt >= 0) throw new Error('PageBatchBuilder: commitEncoded() the reserved entry first');
    if (this.n >= this.capacity) fail('bad-count', 'count', `batch is full (${this.capacity} entries)`);
    checkPage(page);
    this.view.setUint32(this.pos, page, true);
    this.buf[this.pos + 4] = encoding;
    this.pos += 5;
    this.n++;
  }

  /** A raw page: copies WIRE_PAGE_SIZE bytes of `src` from `offset` (e.g. the RAM view and page * 4096). */
  addRaw(page: number, src: Uint8Array, offset = 0): this {
    if (offset < 0 || offset + WIRE_PAGE_SIZE > src.length) fail('bad-value', 'data', `needs ${WIRE_PAGE_SIZE} bytes at offset ${offset} of a ${src.length}-byte source`);
    this.entry(page, PageEncoding.Raw);
    this.buf.set(src.subarray(offset, offset + WIRE_PAGE_SIZE), this.pos);
    this.pos += WIRE_PAGE_SIZE;
    return this;
  }

  addZero(page: number): this {
    this.entry(page, PageEncoding.Zero);
    return this;
  }

  addDelta(page: number, delta: Uint8Array): this {
    return this.addEncoded(page, PageEncoding.Delta, delta);
  }

  addCompressed(page: number, data: Uint8Array): this {
    return this.addEncoded(page, PageEncoding.Compressed, data);
  }

  private addEncoded(page: number, encoding: PageEncoding, data: Uint8Array): this {
    if (data.length < 1 || data.length > MAX_ENCODED_PAGE_BYTES) fail('bad-value', 'length', `encoded page of ${data.length} bytes is outside 1..${MAX_ENCODED_PAGE_BYTES}`);
    this.entry(page, encoding);
    this.view.setUint32(this.pos, data.length, true);
    this.buf.set(data, this.pos + 4);
    this.pos += 4 + data.length;
    return this;
  }

  /**
   * Starts a delta/compressed entry whose bytes an encoder writes straight into `bytes` at the
   * returned offset (up to MAX_ENCODED_PAGE_BYTES); then commitEncoded(length), or
   * cancelEncoded() if the encoding did not pay off.
   */
  reserveEncoded(page: number, encoding: PageEncoding.Delta | PageEncoding.Compressed): number {
    this.entry(page, encoding);
    this.reservedAt = this.pos;
    return this.pos + 4;
  }

  commitEncoded(length: number): this {
    if (this.reservedAt < 0) throw new Error('PageBatchBuilder: no reserved entry');
    if (!Number.isInteger(length) || length < 1 || length > MAX_ENCODED_PAGE_BYTES) {
      fail('bad-value', 'length', `encoded page of ${length} bytes is outside 1..${MAX_ENCODED_PAGE_BYTES}`);
    }
    this.view.setUint32(this.reservedAt, length, true);
    this.pos = this.reservedAt + 4 + length;
    this.reservedAt = -1;
    return this;
  }

  cancelEncoded(): this {
    if (this.reservedAt < 0) throw new Error('PageBatchBuilder: no reserved entry');
    this.pos = this.reservedAt - 5;
    this.n--;
    this.reservedAt = -1;
    return this;
  }

  /** Completes the frame: a view of the internal buffer, valid until the next begin(). */
  finish(): Uint8Array {
    if (!this.open) throw new Error('PageBatchBuilder: begin() a batch first');
    if (this.reservedAt >= 0) throw new Error('PageBatchBuilder: commitEncoded() the reserved entry first');
    if (this.n === 0) fail('bad-count', 'count', 'a batch holds at least one entry');
    this.view.setUint16(FRAME_HEADER_BYTES + 8, this.n, true);
    this.view.setUint16(FRAME_HEADER_BYTES + 10, 0, true);
    writeHeader(this.view, 0, FrameType.Pages, this.flags, this.pos - FRAME_HEADER_BYTES);
    this.open = false;
    return this.buf.subarray(0, this.pos);
  }
}

export interface PageEntry {
  readonly page: number;
  readonly encoding: PageEncoding;
  /** View into the frame payload; empty for a zero page. */
  readonly data: Uint8Array;
}

/** A decoded PAGES batch. Index accessors allocate nothing; data(i) allocates only a view. */
export interface PageBatch extends Iterable<PageEntry> {
  readonly round: number;
  /** Non-zero iff `demand`: the PAGE_REQUEST this batch answers. */
  readonly requestId: number;
  readonly demand: boolean;
  readonly count: number;
  /** The frame payload the offsets refer to. */
  readonly payload: Uint8Array;
  page(i: number): number;
  encoding(i: number): PageEncoding;
  /** Offset of entry i's data in `payload` (raw: the page; delta/compressed: after the length). */
  dataOffset(i: number): number;
  /** WIRE_PAGE_SIZE for raw, 0 for zero, the declared length otherwise. */
  dataLength(i: number): number;
  data(i: number): Uint8Array;
}

export interface PageBatchReaderOptions {
  /** When set, page numbers at or above it are refused ('bad-value'). */
  readonly ramPages?: number;
  /** Entries this reader can index (default MAX_BATCH_PAGES). */
  readonly capacity?: number;
}

/**
 * Validates PAGES payloads and indexes their entries. Reusable: decode() overwrites the index,
 * so read a batch fully before decoding the next (data views stay valid; they alias the payload).
 */
export class PageBatchReader implements PageBatch {
  round = 0;
  requestId = 0;
  demand = false;
  count = 0;
  payload: Uint8Array = new Uint8Array(0);
  private readonly pages: Uint32Array;
  private readonly encodings: Uint8Array;
  private readonly offsets: Uint32Array;
  private readonly lengths: Uint32Array;
  private readonly ramPages: number;
  /** decodePieces: the pieces and the payload offset each starts at (offsets are into their concatenation). */
  private pieces: readonly Uint8Array[] | undefined;
  private pieceStarts: number[] = [];
  private pieceHint = 0;

  constructor(options: PageBatchReaderOptions = {}) {
    const cap = options.capacity ?? MAX_BATCH_PAGES;
    this.ramPages = options.ramPages ?? 0x1_0000_0000;
    this.pages = new Uint32Array(cap);
    this.encodings = new Uint8Array(cap);
    this.offsets = new Uint32Array(cap);
    this.lengths = new Uint32Array(cap);
  }

  decode(payload: Uint8Array, flags = 0): this {
    this.pieces = undefined;
    const p = payload;
    const len = p.length;
    this.count = 0;
    if (len < PAGES_FIXED_BYTES) {
      throw new WireError('truncated', `payload of ${len} bytes is shorter than the ${PAGES_FIXED_BYTES}-byte batch header`, { message: MSG, field: 'header' });
    }
    const round = (p[0]! | (p[1]! << 8) | (p[2]! << 16) | (p[3]! << 24)) >>> 0;
    const requestId = (p[4]! | (p[5]! << 8) | (p[6]! << 16) | (p[7]! << 24)) >>> 0;
    const count = p[8]! | (p[9]! << 8);
    if (p[10] !== 0 || p[11] !== 0) fail2('reserved-bits', 'reserved', `is 0x${(p[10]! | (p[11]! << 8)).toString(16)}, must be 0`);
    const demand = (flags & FrameFlag.Demand) !== 0;
    if (demand && requestId === 0) fail('bad-value', 'requestId', 'is 0 in a demand batch; it must name the PAGE_REQUEST answered');
    if (!demand && requestId !== 0) fail('bad-value', 'requestId', `is ${requestId} in a batch without the demand flag; must be 0`);
    if (count === 0 || count > MAX_BATCH_PAGES) fail('bad-count', 'count', `${count} is outside 1..${MAX_BATCH_PAGES}`);
    if (count > this.pages.length) fail('bad-count', 'count', `${count} exceeds this reader's capacity of ${this.pages.length}`);
    let pos = PAGES_FIXED_BYTES;
    for (let i = 0; i < count; i++) {
      if (len - pos < 5) fail('bad-count', `entry[${i}]`, `count ${count} promises more entries than the payload holds: entry ${i} at offset ${pos} needs 5 header bytes, ${len - pos} left`);
      const page = (p[pos]! | (p[pos + 1]! << 8) | (p[pos + 2]! << 16) | (p[pos + 3]! << 24)) >>> 0;
      const enc = p[pos + 4]!;
      pos += 5;
      if (page >= this.ramPages) fail('bad-value', `entry[${i}].page`, `${page} is beyond guest RAM (${this.ramPages} pages)`);
      let dlen: number;
      switch (enc) {
        case PageEncoding.Raw:
          dlen = WIRE_PAGE_SIZE;
          break;
        case PageEncoding.Zero:
          dlen = 0;
          break;
        case PageEncoding.Delta:
        case PageEncoding.Compressed:
          if (len - pos < 4) fail('bad-count', `entry[${i}].length`, `count ${count} promises more than the payload holds: entry ${i} length field at offset ${pos}, ${len - pos} bytes left`);
          dlen = (p[pos]! | (p[pos + 1]! << 8) | (p[pos + 2]! << 16) | (p[pos + 3]! << 24)) >>> 0;
          pos += 4;
          if (dlen === 0 || dlen > MAX_ENCODED_PAGE_BYTES) fail('bad-value', `entry[${i}].length`, `${dlen} is outside 1..${MAX_ENCODED_PAGE_BYTES}`);
          break;
        default:
          fail('bad-value', `entry[${i}].encoding`, `${enc} is not a page encoding (0 raw, 1 zero, 2 delta, 3 compressed)`);
      }
      if (len - pos < dlen) fail('bad-count', `entry[${i}].data`, `entry ${i} (page ${page}) needs ${dlen} data bytes at offset ${pos}, ${len - pos} left`);
      this.pages[i] = page;
      this.encodings[i] = enc;
      this.offsets[i] = pos;
      this.lengths[i] = dlen;
      pos += dlen;
    }
    if (pos !== len) fail2('trailing-bytes', 'end', `${len - pos} bytes after the last of ${count} entries (offset ${pos} of ${len})`);
    this.round = round;
    this.requestId = requestId;
    this.demand = demand;
    this.count = count;
    this.payload = payload;
    return this;
  }

  /**
   * decode() for a payload left in the chunks it arrived in (FrameReader.nextPieces): the same
   * checks and errors, nothing copied. Read entry data with copyData() (or data(), which copies
   * when an entry spans two pieces); `payload` is empty unless there is a single piece.
   */
  decodePieces(pieces: readonly Uint8Array[], flags = 0): this {
    if (pieces.length === 1) return this.decode(pieces[0]!, flags);
    this.count = 0;
    let len = 0;
    const starts: number[] = [];
    for (const q of pieces) {
      starts.push(len);
      len += q.length;
    }
    // A cursor over the pieces; every read below is preceded by a check against `len - pos`.
    let pi = 0;
    let po = 0;
    let pos = 0;
    const byte = (): number => {
      let q = pieces[pi]!;
      while (po >= q.length) {
        pi++;
        po = 0;
        q = pieces[pi]!;
      }
      pos++;
      return q[po++]!;
    };
    const u32 = (): number => (byte() | (byte() << 8) | (byte() << 16) | (byte() << 24)) >>> 0;
    const skip = (n: number): void => {
      pos += n;
      po += n;
      while (pi < pieces.length - 1 && po >= pieces[pi]!.length) {
        po -= pieces[pi]!.length;
        pi++;
      }
    };
    if (len < PAGES_FIXED_BYTES) {
      throw new WireError('truncated', `payload of ${len} bytes is shorter than the ${PAGES_FIXED_BYTES}-byte batch header`, { message: MSG, field: 'header' });
    }
    const round = u32();
    const requestId = u32();
    const count = byte() | (byte() << 8);
    const r0 = byte();
    const r1 = byte();
    if (r0 !== 0 || r1 !== 0) fail2('reserved-bits', 'reserved', `is 0x${(r0 | (r1 << 8)).toString(16)}, must be 0`);
    const demand = (flags & FrameFlag.Demand) !== 0;
    if (demand && requestId === 0) fail('bad-value', 'requestId', 'is 0 in a demand batch; it must name the PAGE_REQUEST answered');
    if (!demand && requestId !== 0) fail('bad-value', 'requestId', `is ${requestId} in a batch without the demand flag; must be 0`);
    if (count === 0 || count > MAX_BATCH_PAGES) fail('bad-count', 'count', `${count} is outside 1..${MAX_BATCH_PAGES}`);
    if (count > this.pages.length) fail('bad-count', 'count', `${count} exceeds this reader's capacity of ${this.pages.length}`);
    for (let i = 0; i < count; i++) {
      if (len - pos < 5) fail('bad-count', `entry[${i}]`, `count ${count} promises more entries than the payload holds: entry ${i} at offset ${pos} needs 5 header bytes, ${len - pos} left`);
      const page = u32();
      const enc = byte();
      if (page >= this.ramPages) fail('bad-value', `entry[${i}].page`, `${page} is beyond guest RAM (${this.ramPages} pages)`);
      let dlen: number;
      switch (enc) {
        case PageEncoding.Raw:
          dlen = WIRE_PAGE_SIZE;
          break;
        case PageEncoding.Zero:
          dlen = 0;
          break;
        case PageEncoding.Delta:
        case PageEncoding.Compressed:
          if (len - pos < 4) fail('bad-count', `entry[${i}].length`, `count ${count} promises more than the payload holds: entry ${i} length field at offset ${pos}, ${len - pos} bytes left`);
          dlen = u32();
          if (dlen === 0 || dlen > MAX_ENCODED_PAGE_BYTES) fail('bad-value', `entry[${i}].length`, `${dlen} is outside 1..${MAX_ENCODED_PAGE_BYTES}`);
          break;
        default:
          fail('bad-value', `entry[${i}].encoding`, `${enc} is not a page encoding (0 raw, 1 zero, 2 delta, 3 compressed)`);
      }
      if (len - pos < dlen) fail('bad-count', `entry[${i}].data`, `entry ${i} (page ${page}) needs ${dlen} data bytes at offset ${pos}, ${len - pos} left`);
      this.pages[i] = page;
      this.encodings[i] = enc;
      this.offsets[i] = pos;
      this.lengths[i] = dlen;
      skip(dlen);
    }
    if (pos !== len) fail2('trailing-bytes', 'end', `${len - pos} bytes after the last of ${count} entries (offset ${pos} of ${len})`);
    this.round = round;
    this.requestId = requestId;
    this.demand = demand;
    this.count = count;
    this.payload = EMPTY;
    this.pieces = pieces;
    this.pieceStarts = starts;
    this.pieceHint = 0;
    return this;
  }

  /** Copies entry i's data into `dst` at `at` (from one piece or two, without a temporary). */
  copyData(i: number, dst: Uint8Array, at: number): void {
    const o = this.offsets[i]!;
    const n = this.lengths[i]!;
    const pieces = this.pieces;
    if (pieces === undefined) {
      copyBytes(this.payload, o, dst, at, n);
      return;
    }
    const starts = this.pieceStarts;
    let k = this.pieceHint;
    if (k >= starts.length || starts[k]! > o) k = 0; // entries are usually read in order
    while (k + 1 < starts.length && starts[k + 1]! <= o) k++;
    this.pieceHint = k;
    let off = o - starts[k]!;
    let done = 0;
    while (done < n) {
      const q = pieces[k]!;
      const m = Math.min(n - done, q.length - off);
      copyBytes(q, off, dst, at + done, m);
      done += m;
      k++;
      off = 0;
    }
  }

  page(i: number): number {
    return this.pages[i]!;
  }
  encoding(i: number): PageEncoding {
    return this.encodings[i]! as PageEncoding;
  }
  dataOffset(i: number): number {
    return this.offsets[i]!;
  }
  dataLength(i: number): number {
    return this.lengths[i]!;
  }
  data(i: number): Uint8Array {
    const o = this.offsets[i]!;
    if (this.pieces !== undefined) {
      const out = new Uint8Array(this.lengths[i]!);
      this.copyData(i, out, 0);
      return out;
    }
    return this.payload.subarray(o, o + this.lengths[i]!);
  }

  *[Symbol.iterator](): Iterator<PageEntry> {
    const n = this.count;
    for (let i = 0; i < n; i++) yield { page: this.page(i), encoding: this.encoding(i), data: this.data(i) };
  }
}

const EMPTY = new Uint8Array(0);

function fail2(code: 'reserved-bits' | 'trailing-bytes', field: string, text: string): never {
  throw new WireError(code, text, { message: MSG, field });
}

/** Decodes a PAGES payload into a fresh reader (the generic path; the hot path reuses one reader). */
export function decodePages(payload: Uint8Array, flags = 0, ramPages?: number): PageBatchReader {
  const count = payload.length >= PAGES_FIXED_BYTES ? payload[8]! | (payload[9]! << 8) : 1;
  const capacity = Math.min(Math.max(count, 1), MAX_BATCH_PAGES);
  return new PageBatchReader(ramPages !== undefined ? { capacity, ramPages } : { capacity }).decode(payload, flags);
}

/** Encodes a batch (a decoded one, or any PageBatch) as a new frame. Allocates; not the hot path. */
export function encodePages(m: Body<Pages>): Uint8Array {
  const b = m.batch;
  const builder = new PageBatchBuilder(Math.min(Math.max(b.count, 1), MAX_BATCH_PAGES));
  builder.begin(b.round, b.demand ? b.requestId : 0);
  if (b.demand && b.requestId === 0) fail('bad-value', 'requestId', 'is 0 in a demand batch');
  for (let i = 0; i < b.count; i++) {
    const page = b.page(i);
    switch (b.encoding(i)) {
      case PageEncoding.Raw:
        builder.addRaw(page, b.data(i));
        break;
      case PageEncoding.Zero:
        builder.addZero(page);
        break;
      case PageEncoding.Delta:
        builder.addDelta(page, b.data(i));
        break;
      case PageEncoding.Compressed:
        builder.addCompressed(page, b.data(i));
        break;
      default:
        fail('bad-value', `entry[${i}].encoding`, `${String(b.encoding(i))} is not a page encoding`);
    }
  }
  return builder.finish().slice();
}
