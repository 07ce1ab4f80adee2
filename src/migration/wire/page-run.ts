/**
 * PAGE_RUN (0x16, since 1.5, capability page-runs): `count` consecutive raw pages in one frame,
 * their bytes exactly as they lie in guest RAM. A receiver that has read the 12 fixed bytes knows
 * where every later byte of the frame belongs, so it can have the socket read them straight into
 * guest RAM (no staging buffer, no copy in user space); a sender writes them straight from guest RAM.
 *
 * Payload: round u32 | first u32 | count u32 (1..MAX_RUN_PAGES) | count × 4096 bytes.
 */
import { FRAME_HEADER_BYTES, FrameType, MAX_RUN_PAGES, PAGE_RUN_FIXED_BYTES, WIRE_PAGE_SIZE } from './constants.js';
import { PayloadReader, checkU32, writeHeader } from './bytes.js';
import { WireError } from './errors.js';
import type { Body, PageRun } from './messages.js';

const MSG = 'PAGE_RUN';

/** The frame's first bytes: its header and the fixed fields (what precedes the page data). */
export const PAGE_RUN_HEAD_BYTES = FRAME_HEADER_BYTES + PAGE_RUN_FIXED_BYTES;

/** The fixed fields of a PAGE_RUN. */
export interface PageRunHead {
  readonly round: number;
  readonly first: number;
  readonly count: number;
}

function checkCount(count: number): void {
  if (!Number.isInteger(count) || count < 1 || count > MAX_RUN_PAGES) {
    throw new WireError('bad-count', `count ${count} is outside 1..${MAX_RUN_PAGES}`, { message: MSG, field: 'count' });
  }
}

/**
 * Writes a PAGE_RUN's header and fixed fields (PAGE_RUN_HEAD_BYTES) into `out` at `at`; the
 * count pages of data follow them on the wire.
 */
export function writePageRunHead(out: Uint8Array, at: number, round: number, first: number, count: number): void {
  checkU32(MSG, 'round', round);
  checkU32(MSG, 'first', first);
  checkCount(count);
  if (first + count > 0x1_0000_0000) throw new WireError('bad-value', `pages ${first}..${first + count - 1} run past page 2^32 - 1`, { message: MSG, field: 'first' });
  const v = new DataView(out.buffer, out.byteOffset + at, PAGE_RUN_HEAD_BYTES);
  writeHeader(v, 0, FrameType.PageRun, 0, PAGE_RUN_FIXED_BYTES + count * WIRE_PAGE_SIZE);
  v.setUint32(FRAME_HEADER_BYTES, round, true);
  v.setUint32(FRAME_HEADER_BYTES + 4, first, true);
  v.setUint32(FRAME_HEADER_BYTES + 8, count, true);
}

/**
 * Reads and checks the fixed fields from the first PAGE_RUN_FIXED_BYTES of a payload whose
 * length (from the frame header) is `payloadLength`: the count must agree with the length, and
 * with `ramPages` every page must lie below it.
 */
export function decodePageRunHead(fixed: Uint8Array, payloadLength: number, ramPages?: number): PageRunHead {
  const r = new PayloadReader(fixed.subarray(0, PAGE_RUN_FIXED_BYTES), MSG);
  const round = r.u32('round');
  const first = r.u32('first');
  const count = r.u32('count');
  checkCount(count);
  if (payloadLength !== PAGE_RUN_FIXED_BYTES + count * WIRE_PAGE_SIZE) {
    throw new WireError('bad-count', `a run of ${count} pages needs a ${PAGE_RUN_FIXED_BYTES + count * WIRE_PAGE_SIZE}-byte payload, the frame has ${payloadLength}`, { message: MSG, field: 'count' });
  }
  if (ramPages !== undefined && first + count > ramPages) {
    throw new WireError('bad-value', `pages ${first}..${first + count - 1} are outside guest RAM (${ramPages} pages)`, { message: MSG, field: 'first' });
  }
  return { round, first, count };
}

/** A whole PAGE_RUN frame (copies the data: for tests and tools, not the hot path). */
export function encodePageRun(m: Body<PageRun>): Uint8Array {
  checkCount(m.count);
  if (m.data.length !== m.count * WIRE_PAGE_SIZE) {
    throw new WireError('bad-count', `${m.count} pages need ${m.count * WIRE_PAGE_SIZE} bytes of data, got ${m.data.length}`, { message: MSG, field: 'data' });
  }
  const out = new Uint8Array(PAGE_RUN_HEAD_BYTES + m.data.length);
  writePageRunHead(out, 0, m.round, m.first, m.count);
  out.set(m.data, PAGE_RUN_HEAD_BYTES);
  return out;
}

/** A whole PAGE_RUN payload; the data is a view of it. */
export function decodePageRun(payload: Uint8Array, ramPages?: number): PageRun {
  const h = decodePageRunHead(payload, payload.length, ramPages);
  return { type: FrameType.PageRun, ...h, data: payload.subarray(PAGE_RUN_FIXED_BYTES) };
}
