/**
 * PAGES_COMPRESSED (0x14, since 1.1): a whole PAGES payload compressed as one block, so the
 * compressor sees many pages at once (like QEMU's multifd compression of a packet).
 *
 * Payload: algorithm u8 (1 lz4, 2 zstd) | reserved u8 | reserved u16 | rawLength u32 | data.
 * rawLength is the PAGES payload's length (PAGES_FIXED_BYTES + 5 .. MAX_PAGES_PAYLOAD); data
 * is at least one byte. The frame's flags are the PAGES frame's (demand). Decompressing is the
 * receiver's business (src/migration/encoding/compress.ts); this is only the envelope.
 */
import {
  FRAME_HEADER_BYTES,
  FrameFlag,
  FrameType,
  MAX_PAGES_PAYLOAD,
  PAGES_COMPRESSED_FIXED_BYTES,
  PAGES_FIXED_BYTES,
} from './constants.js';
import { PayloadReader, writeHeader } from './bytes.js';
import { WireError } from './errors.js';

const MSG = 'PAGES_COMPRESSED';

/** Compression algorithm codes of PAGES_COMPRESSED. */
export const enum CompressionCode {
  Lz4 = 1,
  Zstd = 2,
}

/** The smallest PAGES payload: the batch header and one zero-page entry. */
export const MIN_PAGES_PAYLOAD = PAGES_FIXED_BYTES + 5;

export interface PagesCompressed {
  readonly type: FrameType.PagesCompressed;
  /** The PAGES frame's demand flag. */
  readonly demand: boolean;
  readonly algorithm: CompressionCode;
  /** Length of the PAGES payload once decompressed. */
  readonly rawLength: number;
  /** The compressed bytes; a view into the payload. */
  readonly data: Uint8Array;
}

function checkAlgorithm(r: PayloadReader | undefined, a: number): CompressionCode {
  if (a !== CompressionCode.Lz4 && a !== CompressionCode.Zstd) {
    const text = `${a} is not a compression algorithm (1 lz4, 2 zstd)`;
    if (r !== undefined) r.fail('bad-value', 'algorithm', text);
    throw new WireError('bad-value', text, { message: MSG, field: 'algorithm' });
  }
  return a;
}

function checkRawLength(r: PayloadReader | undefined, n: number): void {
  if (!Number.isInteger(n) || n < MIN_PAGES_PAYLOAD || n > MAX_PAGES_PAYLOAD) {
    const text = `${n} is outside ${MIN_PAGES_PAYLOAD}..${MAX_PAGES_PAYLOAD}`;
    if (r !== undefined) r.fail('bad-value', 'rawLength', text);
    throw new WireError('bad-value', text, { message: MSG, field: 'rawLength' });
  }
}

/**
 * The 16 bytes before the compressed data (frame header and fixed fields), so the data (the
 * compressor's output buffer) can be written after it without a copy.
 */
export function encodePagesCompressedHead(algorithm: CompressionCode, rawLength: number, dataLength: number, demand = false): Uint8Array {
  checkAlgorithm(undefined, algorithm);
  checkRawLength(undefined, rawLength);
  if (!Number.isInteger(dataLength) || dataLength < 1 || dataLength > MAX_PAGES_PAYLOAD) {
    throw new WireError('bad-value', `${dataLength} compressed bytes is outside 1..${MAX_PAGES_PAYLOAD}`, { message: MSG, field: 'data' });
  }
  const b = new Uint8Array(FRAME_HEADER_BYTES + PAGES_COMPRESSED_FIXED_BYTES);
  const v = new DataView(b.buffer);
  writeHeader(v, 0, FrameType.PagesCompressed, demand ? FrameFlag.Demand : 0, PAGES_COMPRESSED_FIXED_BYTES + dataLength);
  b[FRAME_HEADER_BYTES] = algorithm;
  v.setUint32(FRAME_HEADER_BYTES + 4, rawLength, true);
  return b;
}

/** The whole frame (allocates and copies; the sender writes the head and the data separately). */
export function encodePagesCompressed(m: Omit<PagesCompressed, 'type'>): Uint8Array {
  const head = encodePagesCompressedHead(m.algorithm, m.rawLength, m.data.length, m.demand);
  const out = new Uint8Array(head.length + m.data.length);
  out.set(head, 0);
  out.set(m.data, head.length);
  return out;
}

export function decodePagesCompressed(payload: Uint8Array, flags = 0): PagesCompressed {
  const r = new PayloadReader(payload, MSG);
  const algorithm = checkAlgorithm(r, r.u8('algorithm'));
  r.reserved(3, 'reserved');
  const rawLength = r.u32('rawLength');
  checkRawLength(r, rawLength);
  if (r.remaining < 1) r.fail('truncated', 'data', 'no compressed bytes');
  const data = r.counted(r.remaining, 'data');
  r.end();
  return { type: FrameType.PagesCompressed, demand: (flags & FrameFlag.Demand) !== 0, algorithm, rawLength, data };
}
