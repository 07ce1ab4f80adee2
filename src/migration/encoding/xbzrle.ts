/**
 * XBZRLE delta encoding of re-sent pages (QEMU's `migration/xbzrle.c`, same byte format): a
 * page is sent as the runs where it differs from the version the destination already holds.
 *
 *   delta = (zrun nzrun)+       zrun  = uleb128 count of unchanged bytes (0 only first)
 *                               nzrun = uleb128 count ≥ 1, then that many new bytes
 *
 * Counts are ULEB128 in one or two bytes (< 2^14). Unchanged bytes at the end of the page are
 * not encoded. The encoder also folds changed runs separated by one or two unchanged bytes into
 * one run (costs no more than a new run's headers, and decodes faster); the result is still a
 * valid QEMU delta. A page is first compared whole with a native memcmp (an unchanged page
 * costs just that), and after a changed run the rest of it again (a page with one changed spot
 * costs a scan up to it); scans compare 32-bit words four at a time where they can. Nothing is
 * allocated per page.
 *
 * In stop-and-copy a page may come with its dirty mark's block mask (dirty-log.ts): the 512-byte
 * blocks the guest wrote since the cached copy was taken. Only those are compared; the others
 * are known unchanged and skipped unread. A guest that touches a word of each page then costs
 * two 512-byte reads per page instead of two 4 KiB ones.
 */
import { ALL_BLOCKS, BLOCK_SHIFT, BLOCK_SIZE, PAGE_SIZE } from '../../machine/memory/layout.js';
import { PageEncoding, WireError, copyBytes, type PageBatchBuilder } from '../wire/index.js';
import { PageCache } from './page-cache.js';

/** A delta longer than this goes raw instead (QEMU also gives up near a page). */
export const DEFAULT_DELTA_BUDGET = PAGE_SIZE - 256;
/** QEMU's default xbzrle-cache-size. */
export const DEFAULT_XBZRLE_CACHE_BYTES = 64 * 1024 * 1024;

/** Unchanged runs this short inside a changed area are sent as literal bytes. */
const FOLD = 2;
/**
 * After a changed run, the rest of the page is compared natively (memcmp, no allocation) at most
 * this many times per page, and only while at least TAIL_CHECK_MIN bytes remain: a page with one
 * changed spot then costs a JS scan up to it and one memcmp, not a JS scan of the whole page.
 */
const TAIL_CHECKS = 4;
const TAIL_CHECK_MIN = 512;
const memcmp = Buffer.prototype.compare;

function ulebSize(n: number): number {
  return n < 0x80 ? 1 : 2;
}

function putUleb(dst: Uint8Array, at: number, n: number): number {
  if (n < 0x80) {
    dst[at] = n;
    return 1;
  }
  dst[at] = (n & 0x7f) | 0x80;
  dst[at + 1] = n >>> 7;
  return 2;
}

/**
 * Encodes page `nw` (PAGE_SIZE bytes at byte offset `nwAt`) against `old` (at `oldAt`) into
 * `dst` at `dstAt`, using at most `max` bytes. Returns the delta's length; 0 if the pages are
 * equal; -1 if the delta would exceed `max` (overflow: send the page raw). Offsets must be
 * multiples of 4 (pages and cache slots are) so whole words can be compared through the
 * Int32Array views `old32` / `nw32` of the same buffers. `blocks`: the page's 512-byte blocks
 * that may differ (bit k: bytes [k * 512, (k + 1) * 512)); the others must be equal, and are
 * not read.
 */
export function xbzrleEncode(
  old: Uint8Array, old32: Int32Array, oldAt: number,
  nw: Uint8Array, nw32: Int32Array, nwAt: number,
  dst: Uint8Array, dstAt: number, max: number,
  blocks: number = ALL_BLOCKS,
): number {
  const n = PAGE_SIZE;
  const ow = (old.byteOffset + oldAt - old32.byteOffset) >> 2;
  const nwW = (nw.byteOffset + nwAt - nw32.byteOffset) >> 2;
  const whole = blocks === ALL_BLOCKS;
  // The whole page first: an unchanged page costs one memcmp.
  if (whole && memcmp.call(nw, old, oldAt, oldAt + n, nwAt, nwAt + n) === 0) return 0;
  let i = 0;
  let d = 0;
  let tailChecks = whole ? TAIL_CHECKS : 0;
  for (;;) {
    // Unchanged run: four words at a time, then word by word while aligned, then byte by byte.
    // With a block mask, a clean block is skipped whole; a dirty one is scanned (a native
    // memcmp's call costs about what scanning 512 bytes does).
    const z = i;
    while (i < n) {
      if (!whole && (i & (BLOCK_SIZE - 1)) === 0 && (blocks & (1 << (i >>> BLOCK_SHIFT))) === 0) {
        i += BLOCK_SIZE;
        continue;
      }
      if ((i & 3) === 0) {
        let w = i >> 2;
        // Word scans stop at the block's end, where the next block's mask bit is looked at.
        const end = whole ? n >> 2 : ((i >>> BLOCK_SHIFT) + 1) << (BLOCK_SHIFT - 2);
        while (w + 4 <= end && ((old32[ow + w]! ^ nw32[nwW + w]!) | (old32[ow + w + 1]! ^ nw32[nwW + w + 1]!) | (old32[ow + w + 2]! ^ nw32[nwW + w + 2]!) | (old32[ow + w + 3]! ^ nw32[nwW + w + 3]!)) === 0) w += 4;
        while (w < end && old32[ow + w] === nw32[nwW + w]) w++;
        i = w << 2;
        if (i >= n) break;
        if (w === end) continue; // a block's end (block mask): look at the next block
      }
      if (old[oldAt + i] !== nw[nwAt + i]) break;
      i++;
    }
    if (i >= n) return d; // trailing unchanged bytes are implied (d = 0: the page is unchanged)
    const zlen = i - z;
    // Changed run: ends at an unchanged run longer than FOLD, or at the page's end.
    const s = i;
    while (i < n) {
      if (old[oldAt + i] !== nw[nwAt + i]) {
        i++;
        continue;
      }
      let k = 1;
      while (k <= FOLD && i + k < n && old[oldAt + i + k] === nw[nwAt + i + k]) k++;
      if (k > FOLD || i + k >= n) break;
      i += k;
      if (d + 4 + (i - s) > max) return -1; // give up early on a page that differs everywhere
    }
    const len = i - s;
    if (d + ulebSize(zlen) + ulebSize(len) + len > max) return -1;
    d += putUleb(dst, dstAt + d, zlen);
    d += putUleb(dst, dstAt + d, len);
    copyBytes(nw, nwAt + s, dst, dstAt + d, len);
    d += len;
    if (tailChecks > 0 && n - i >= TAIL_CHECK_MIN) {
      tailChecks--;
      if (memcmp.call(nw, old, oldAt + i, oldAt + n, nwAt + i, nwAt + n) === 0) return d;
    }
  }
}

/** `field`: a field name, or a batch entry's index (the field is then `entry[i].delta`, made only on error). */
function bad(text: string, field: string | number): never {
  throw new WireError('bad-value', text, { message: 'PAGES', field: typeof field === 'number' ? `entry[${field}].delta` : field });
}

/** A one- or two-byte ULEB128 at delta offset `i` (two bytes readable): (value << 2) | its size. */
function readUleb(src: Uint8Array, at: number, i: number, field: string | number): number {
  const b = src[at + i]!;
  if ((b & 0x80) === 0) return (b << 2) | 1;
  const c = src[at + i + 1]!;
  if (c & 0x80) bad(`run length at delta offset ${i} is longer than two bytes`, field);
  return (((b & 0x7f) | (c << 7)) << 2) | 2;
}

/**
 * Applies a delta (`len` bytes of `src` at `at`) to the page at `dst[dstAt ..]`, which must hold
 * the version the delta was made against. The whole delta is checked before any byte of the page
 * changes: a malformed one throws WireError ('bad-value') and leaves the page as it was. `field`
 * names the delta in errors (a batch entry's index: `entry[i].delta`). Nothing is allocated.
 */
export function xbzrleDecode(src: Uint8Array, at: number, len: number, dst: Uint8Array, dstAt: number, field: string | number = 'delta'): void {
  if (len < 1 || at < 0 || at + len > src.length) bad(`${len} bytes at ${at} are outside the ${src.length}-byte source`, field);
  if (dstAt < 0 || dstAt + PAGE_SIZE > dst.length) bad(`page at ${dstAt} is outside the ${dst.length}-byte destination`, field);
  // Pass 1: check. Pass 2: apply.
  for (let pass = 0; pass < 2; pass++) {
    let i = 0;
    let d = 0;
    while (i < len) {
      if (len - i < 2) bad(`truncated run header at delta offset ${i}`, field);
      const first = i === 0;
      let r = readUleb(src, at, i, field);
      let count = r >>> 2;
      i += r & 3;
      if (count === 0 && !first) bad(`empty unchanged run before delta offset ${i} (only the first may be empty)`, field);
      d += count;
      if (d > PAGE_SIZE) bad(`unchanged run reaches byte ${d}, past the ${PAGE_SIZE}-byte page`, field);
      if (len - i < 2) bad(`truncated changed run at delta offset ${i}`, field);
      r = readUleb(src, at, i, field);
      count = r >>> 2;
      i += r & 3;
      if (count === 0) bad(`empty changed run at delta offset ${i}`, field);
      if (d + count > PAGE_SIZE) bad(`changed run of ${count} bytes at page byte ${d} runs past the page`, field);
      if (i + count > len) bad(`changed run of ${count} bytes at delta offset ${i} runs past the ${len}-byte delta`, field);
      if (pass === 1) copyBytes(src, at + i, dst, dstAt + d, count);
      d += count;
      i += count;
    }
  }
}

export interface XbzrleStats {
  /** Size of the page cache. */
  cacheBytes: number;
  /** Pages sent as a delta. */
  hits: number;
  /** Pages not in the cache (sent raw, then cached). */
  misses: number;
  /** Pages in the cache whose delta exceeded the budget (sent raw). */
  overflows: number;
  /** Pages equal to what was last sent: not sent at all. */
  unchanged: number;
  /** Pages pushed out of the cache to make room. */
  evictions: number;
  /** Delta bytes sent (data only, without the 9-byte entry headers). */
  deltaBytes: number;
}

/** What XbzrleEncoder.encode did with a page. */
export const enum XbzrleOutcome {
  /** The destination holds it already: nothing was added to the batch. */
  Unchanged = 0,
  Delta = 1,
  Raw = 2,
}

/**
 * The source's side: a page cache of what was sent and the counters. `encode` copies the page
 * out of guest RAM first (the guest keeps writing), then encodes that stable copy, sends it, and
 * caches exactly the bytes sent, so the cache always equals what the destination holds.
 */
export class XbzrleEncoder {
  readonly cache: PageCache;
  private readonly cache32: Int32Array;
  private readonly cur = new Uint8Array(PAGE_SIZE);
  private readonly cur32 = new Int32Array(this.cur.buffer);
  /** Int32 view of the last source buffer encoded in place (`paused`), and that source. */
  private src32: Int32Array | undefined;
  private src32Of: Uint8Array | undefined;
  private readonly budget: number;
  /** The round being encoded (startRound). */
  private round = 0;
  /**
   * Per cache slot, the round whose encoding last made the slot equal to the page as sent: a
   * block mask covers the writes since the last live round's sync, so only a slot of that round
   * may be compared block by block.
   */
  private readonly slotRound: Uint32Array;
  hits = 0;
  misses = 0;
  overflows = 0;
  unchanged = 0;
  deltaBytes = 0;

  constructor(cacheBytes: number, ramPages: number, budget: number = DEFAULT_DELTA_BUDGET) {
    this.cache = new PageCache(cacheBytes, ramPages);
    this.cache32 = new Int32Array(this.cache.data.buffer);
    this.slotRound = new Uint32Array(this.cache.slots);
    if (!Number.isInteger(budget) || budget < 4 || budget > PAGE_SIZE) throw new RangeError(`xbzrle: budget ${budget} is outside 4..${PAGE_SIZE}`);
    this.budget = budget;
  }

  /** The pages encoded from now on are round `round`'s. */
  startRound(round: number): void {
    this.round = round;
  }

  /**
   * Adds `page` (PAGE_SIZE bytes of `src` at `at`) to the batch as a delta or raw, or nothing if
   * unchanged. `final` (stop-and-copy: the vCPU is paused and no later round sends the page):
   * the page is read in place, not copied first, and the cache is not updated. `blocks` (final
   * only): the page's dirty mark from the sync that ended the previous round (dirty-log.ts);
   * if the cached copy was taken in that round, only those blocks are compared.
   */
  encode(page: number, src: Uint8Array, at: number, b: PageBatchBuilder, final = false, blocks: number = ALL_BLOCKS): XbzrleOutcome {
    let nw: Uint8Array = this.cur;
    let nw32: Int32Array = this.cur32;
    let nwAt = 0;
    if (final && (src.byteOffset & 3) === 0) {
      nw = src;
      nw32 = this.view32(src);
      nwAt = at;
    } else {
      this.cur.set(src.subarray(at, at + PAGE_SIZE));
      final = false;
    }
    const cache = this.cache;
    const data = cache.data;
    const slot = cache.lookup(page);
    if (slot < 0) {
      this.misses++;
      b.addRaw(page, nw, nwAt);
      if (!final) {
        const s = cache.insert(page);
        data.set(nw, s * PAGE_SIZE);
        this.slotRound[s] = this.round;
      }
      return XbzrleOutcome.Raw;
    }
    const slotAt = slot * PAGE_SIZE;
    const out = b.reserveEncoded(page, PageEncoding.Delta);
    const mask = final && this.slotRound[slot] === this.round - 1 ? blocks : ALL_BLOCKS;
    const len = xbzrleEncode(data, this.cache32, slotAt, nw, nw32, nwAt, b.bytes, out, this.budget, mask);
    if (!final) this.slotRound[slot] = this.round;
    if (len === 0) {
      b.cancelEncoded();
      this.unchanged++;
      return XbzrleOutcome.Unchanged;
    }
    if (!final) data.set(nw, slotAt);
    if (len < 0) {
      b.cancelEncoded();
      b.addRaw(page, nw, nwAt);
      this.overflows++;
      return XbzrleOutcome.Raw;
    }
    b.commitEncoded(len);
    this.hits++;
    this.deltaBytes += len;
    return XbzrleOutcome.Delta;
  }

  /** An Int32Array over all of `src`'s buffer (made once per buffer). */
  private view32(src: Uint8Array): Int32Array {
    if (this.src32Of === src) return this.src32!;
    let v = this.src32;
    if (v === undefined || v.buffer !== src.buffer) v = this.src32 = new Int32Array(src.buffer, 0, src.buffer.byteLength >> 2);
    this.src32Of = src;
    return v;
  }

  /** The page was sent by other means (e.g. as a zero page): keep the cache equal to the destination. */
  sentZero(page: number): void {
    const slot = this.cache.lookup(page);
    if (slot < 0) return;
    this.cache.data.fill(0, slot * PAGE_SIZE, (slot + 1) * PAGE_SIZE);
    this.slotRound[slot] = this.round;
  }

  stats(): XbzrleStats {
    return {
      cacheBytes: this.cache.bytes,
      hits: this.hits,
      misses: this.misses,
      overflows: this.overflows,
      unchanged: this.unchanged,
      evictions: this.cache.evictions,
      deltaBytes: this.deltaBytes,
    };
  }
}
