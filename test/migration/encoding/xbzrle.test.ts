// XBZRLE: round trips decode to exactly the source page, the byte format is QEMU's, overflow,
// unchanged pages, the page cache (clock eviction, no growth), and a seeded fuzz of the decoder.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PAGE_SIZE } from '../../../src/machine/memory/layout.js';
import { PageCache } from '../../../src/migration/encoding/page-cache.js';
import { XbzrleEncoder, XbzrleOutcome, xbzrleDecode, xbzrleEncode } from '../../../src/migration/encoding/xbzrle.js';
import { PageBatchBuilder, PageBatchReader, PageEncoding, WireError } from '../../../src/migration/wire/index.js';
import { prng, randInt } from '../wire/helpers.js';

function randomPage(rand: () => number): Uint8Array {
  const p = new Uint8Array(PAGE_SIZE);
  for (let i = 0; i < PAGE_SIZE; i++) p[i] = randInt(rand, 0, 255);
  return p;
}

/** Encodes `nw` against `old` with the standalone function; returns the delta or a status. */
function encode(old: Uint8Array, nw: Uint8Array, max = PAGE_SIZE): Uint8Array | number {
  const o = old.slice();
  const n = nw.slice();
  const dst = new Uint8Array(PAGE_SIZE + 16);
  const len = xbzrleEncode(o, new Int32Array(o.buffer), 0, n, new Int32Array(n.buffer), 0, dst, 0, max);
  return len <= 0 ? len : dst.slice(0, len);
}

function roundTrip(old: Uint8Array, nw: Uint8Array): number {
  const d = encode(old, nw);
  if (typeof d === 'number') return d;
  const page = old.slice();
  xbzrleDecode(d, 0, d.length, page, 0);
  assert.deepEqual(page, nw);
  return d.length;
}

test('the byte format is QEMU\'s: (zrun uleb128, nzrun uleb128, bytes)*, trailing unchanged bytes implied', () => {
  const old = new Uint8Array(PAGE_SIZE);
  const nw = old.slice();
  nw[0] = 1; // zrun 0 first (allowed only first)
  nw[200] = 2;
  nw[201] = 3;
  const d = encode(old, nw);
  // zrun 0 | nzrun 1: 0x01 | zrun 199 = 0xc7 0x01 | nzrun 2: 0x02 0x03
  assert.deepEqual(d, Uint8Array.from([0x00, 0x01, 0x01, 0xc7, 0x01, 0x02, 0x02, 0x03]));
});

test('changed runs one or two unchanged bytes apart are folded into one run', () => {
  const old = new Uint8Array(PAGE_SIZE);
  const nw = old.slice();
  nw[10] = 1;
  nw[12] = 1; // one equal byte between
  nw[20] = 1; // seven equal bytes: a new run
  assert.deepEqual(encode(old, nw), Uint8Array.from([10, 3, 1, 0, 1, 7, 1, 1]));
});

test('an unchanged page encodes to nothing; a page that differs everywhere overflows', () => {
  const rand = prng(1);
  const a = randomPage(rand);
  assert.equal(encode(a, a), 0);
  const b = a.map((x) => x ^ 0xff);
  assert.equal(encode(a, b), -1);
  assert.equal(encode(a, b, PAGE_SIZE), -1, 'a whole page of changes never fits in a page');
});

test('round trips: random pages, a few bytes changed, runs at both ends, word and byte boundaries', () => {
  const rand = prng(42);
  for (let t = 0; t < 300; t++) {
    const old = randomPage(rand);
    const nw = old.slice();
    const changes = randInt(rand, 1, t % 3 === 0 ? 400 : 12);
    for (let k = 0; k < changes; k++) {
      const at = randInt(rand, 0, PAGE_SIZE - 1);
      const len = randInt(rand, 1, 9);
      for (let j = at; j < Math.min(PAGE_SIZE, at + len); j++) nw[j] = (old[j]! + randInt(rand, 1, 255)) & 0xff;
    }
    if (t % 7 === 0) nw[0] = old[0]! ^ 1;
    if (t % 5 === 0) nw[PAGE_SIZE - 1] = old[PAGE_SIZE - 1]! ^ 1;
    const n = roundTrip(old, nw);
    assert.ok(n !== 0, 'a changed page never encodes as unchanged');
  }
});

test('a few rewritten bytes cost a few bytes on the wire', () => {
  const rand = prng(7);
  const old = randomPage(rand);
  const nw = old.slice();
  nw.set([1, 2, 3, 4, 5, 6, 7, 8], 1000);
  const n = roundTrip(old, nw);
  assert.ok(n > 0 && n <= 12, `delta of ${n} bytes`);
});

test('the page cache: lookup, clock eviction, a fixed store, remove', () => {
  const c = new PageCache(4 * PAGE_SIZE, 100);
  assert.equal(c.slots, 4);
  assert.equal(c.bytes, 4 * PAGE_SIZE);
  for (let p = 0; p < 4; p++) c.data.fill(p + 1, c.insert(p) * PAGE_SIZE, (c.lookup(p) + 1) * PAGE_SIZE);
  assert.equal(c.size, 4);
  for (let p = 0; p < 4; p++) assert.equal(c.data[c.lookup(p) * PAGE_SIZE], p + 1);
  // Everything is referenced; the clock clears every bit, then evicts the first slot.
  const s = c.insert(50);
  assert.equal(c.evictions, 1);
  assert.equal(c.has(0), false);
  assert.equal(c.lookup(50), s);
  // Page 1's bit was cleared and not set again; pages 2 and 3 are used: page 1 goes next.
  c.lookup(2);
  c.lookup(3);
  c.insert(60);
  assert.equal(c.has(1), false);
  assert.ok(c.has(2) && c.has(3) && c.has(50) && c.has(60));
  assert.equal(c.size, 4);
  c.remove(60);
  assert.equal(c.size, 3);
  assert.equal(c.lookup(60), -1);
  assert.equal(c.data.length, 4 * PAGE_SIZE, 'the store never grows');
  assert.throws(() => c.insert(100), RangeError);
  // Never more slots than RAM pages.
  assert.equal(new PageCache(1 << 30, 10).slots, 10);
});

/** Sends `pages` (one per page number) through an encoder into a batch and decodes it into `ram`. */
function sendAndApply(enc: XbzrleEncoder, src: Uint8Array, pages: number[], ram: Uint8Array, final = false, blocks?: Uint8Array): XbzrleOutcome[] {
  const b = new PageBatchBuilder(64).begin(2);
  const outcomes = pages.map((p) => enc.encode(p, src, p * PAGE_SIZE, b, final, blocks?.[p]));
  if (b.count === 0) return outcomes;
  const frame = b.finish();
  const r = new PageBatchReader({ ramPages: src.length / PAGE_SIZE }).decode(frame.subarray(8));
  for (let i = 0; i < r.count; i++) {
    const at = r.page(i) * PAGE_SIZE;
    if (r.encoding(i) === PageEncoding.Raw) r.copyData(i, ram, at);
    else if (r.encoding(i) === PageEncoding.Delta) xbzrleDecode(r.payload, r.dataOffset(i), r.dataLength(i), ram, at);
    else assert.fail(`unexpected encoding ${r.encoding(i)}`);
  }
  return outcomes;
}

test('encoder and decoder keep the destination equal to the source across rounds, misses, overflows and evictions', () => {
  const rand = prng(99);
  const pages = 32;
  const src = new Uint8Array(pages * PAGE_SIZE);
  for (let i = 0; i < src.length; i++) src[i] = randInt(rand, 0, 255);
  const dst = new Uint8Array(src.length);
  // A cache of 8 pages over 32: evictions happen all the time.
  const enc = new XbzrleEncoder(8 * PAGE_SIZE, pages);
  const all = Array.from({ length: pages }, (_, i) => i);
  assert.deepEqual(sendAndApply(enc, src, all, dst), all.map(() => XbzrleOutcome.Raw));
  assert.deepEqual(dst, src);
  for (let round = 0; round < 40; round++) {
    const touched = new Set<number>();
    for (let k = 0; k < 10; k++) {
      const p = randInt(rand, 0, pages - 1);
      touched.add(p);
      const base = p * PAGE_SIZE;
      if (rand() < 0.15) {
        for (let j = 0; j < PAGE_SIZE; j++) src[base + j] = randInt(rand, 0, 255); // overflows
      } else {
        for (let j = 0; j < 5; j++) src[base + randInt(rand, 0, PAGE_SIZE - 1)] = randInt(rand, 0, 255);
      }
    }
    // Sometimes re-send a page that did not change: it must not be sent at all.
    if (round % 4 === 0) touched.add(randInt(rand, 0, pages - 1));
    sendAndApply(enc, src, [...touched], dst);
    assert.deepEqual(dst, src, `round ${round}`);
  }
  const s = enc.stats();
  assert.ok(s.hits > 20, `hits ${s.hits}`);
  assert.ok(s.misses > pages, `misses ${s.misses}`);
  assert.ok(s.overflows > 0, `overflows ${s.overflows}`);
  assert.ok(s.evictions > 0, `evictions ${s.evictions}`);
  assert.equal(s.cacheBytes, 8 * PAGE_SIZE);
  assert.ok(s.deltaBytes > 0 && s.deltaBytes < s.hits * 200);
});

test('stop-and-copy (final): pages encoded in place from RAM, short and long runs, misses and overflows; the cache is left as it was', () => {
  const rand = prng(7);
  const pages = 16;
  const src = new Uint8Array(new SharedArrayBuffer(pages * PAGE_SIZE));
  for (let i = 0; i < src.length; i++) src[i] = randInt(rand, 0, 255);
  const dst = new Uint8Array(src.length);
  const enc = new XbzrleEncoder(8 * PAGE_SIZE, pages); // pages 8..15 miss once 0..7 are cached
  const first = Array.from({ length: 8 }, (_, i) => i);
  sendAndApply(enc, src, first, dst);
  dst.set(src.subarray(8 * PAGE_SIZE), 8 * PAGE_SIZE); // as if sent raw earlier, not cached
  src[1 * PAGE_SIZE + 100] ^= 1; // a one-byte run
  for (let j = 0; j < 200; j++) src[2 * PAGE_SIZE + 1000 + j] ^= 0x5a; // a long run (subarray copy)
  for (let j = 0; j < PAGE_SIZE; j += 64) src[3 * PAGE_SIZE + j] ^= 1; // many short runs
  for (let j = 0; j < PAGE_SIZE; j++) src[4 * PAGE_SIZE + j] ^= 0xff; // overflows: raw
  src[9 * PAGE_SIZE + 4095] ^= 1; // a miss: raw
  const cacheBefore = enc.cache.data.slice();
  const stats = enc.stats();
  const out = sendAndApply(enc, src, [0, 1, 2, 3, 4, 9], dst, true);
  assert.deepEqual(out, [XbzrleOutcome.Unchanged, XbzrleOutcome.Delta, XbzrleOutcome.Delta, XbzrleOutcome.Delta, XbzrleOutcome.Raw, XbzrleOutcome.Raw]);
  assert.deepEqual(dst, src, 'the destination holds every page');
  assert.deepEqual(enc.cache.data, cacheBefore, 'the final round does not update the cache');
  assert.equal(enc.cache.has(9), false, 'nor insert into it');
  assert.equal(enc.stats().hits, stats.hits + 3);
});

test('an unchanged page adds nothing to the batch; a zero page clears its cached copy', () => {
  const src = new Uint8Array(4 * PAGE_SIZE).fill(7);
  const dst = new Uint8Array(src.length);
  const enc = new XbzrleEncoder(4 * PAGE_SIZE, 4);
  sendAndApply(enc, src, [1], dst);
  assert.deepEqual(sendAndApply(enc, src, [1], dst), [XbzrleOutcome.Unchanged]);
  assert.equal(enc.unchanged, 1);
  // The page goes as a zero page by other means; then a byte changes: the delta is against zeros.
  src.fill(0, PAGE_SIZE, 2 * PAGE_SIZE);
  dst.fill(0, PAGE_SIZE, 2 * PAGE_SIZE);
  enc.sentZero(1);
  src[PAGE_SIZE + 5] = 9;
  assert.deepEqual(sendAndApply(enc, src, [1], dst), [XbzrleOutcome.Delta]);
  assert.deepEqual(dst.subarray(PAGE_SIZE, 2 * PAGE_SIZE), src.subarray(PAGE_SIZE, 2 * PAGE_SIZE));
});

test('the decoder refuses malformed deltas with a WireError and leaves the page untouched', () => {
  const page = new Uint8Array(PAGE_SIZE).fill(0xaa);
  const cases: [string, number[]][] = [
    ['truncated header', [0x05]],
    ['nzrun of 0', [0x00, 0x00]],
    ['nzrun past the delta', [0x00, 0x05, 1, 2]],
    ['zrun past the page', [0x81, 0x40, 0x01, 0x01]], // 0x2001
    ['nzrun past the page', [0xff, 0x1f, 0x02, 1, 2]], // zrun 4095, nzrun 2
    ['three-byte uleb', [0x80, 0x80, 0x01, 0x01, 0x01]],
    ['empty zrun after the first pair', [0x00, 0x01, 0x07, 0x00, 0x01, 0x07]],
    ['good then garbage', [0x00, 0x01, 0x07, 0x03]],
  ];
  for (const [what, bytes] of cases) {
    const before = page.slice();
    const d = Uint8Array.from(bytes);
    assert.throws(() => xbzrleDecode(d, 0, d.length, page, 0), (e: unknown) => e instanceof WireError && e.code === 'bad-value', what);
    assert.deepEqual(page, before, `${what}: the page changed`);
  }
  assert.throws(() => xbzrleDecode(new Uint8Array(4), 0, 8, page, 0), WireError);
  assert.throws(() => xbzrleDecode(new Uint8Array(4), 0, 0, page, 0), WireError);
  assert.throws(() => xbzrleDecode(new Uint8Array(4), 0, 2, page, 1), WireError);
});

test('seeded fuzz: garbage and mutated deltas either decode within the page or throw WireError', () => {
  const rand = prng(2024);
  const old = randomPage(rand);
  const nw = old.slice();
  for (let k = 0; k < 40; k++) nw[randInt(rand, 0, PAGE_SIZE - 1)] ^= 0x5a;
  const good = encode(old, nw) as Uint8Array;
  let threw = 0;
  let decoded = 0;
  const page = new Uint8Array(PAGE_SIZE + 8).fill(0xee); // guard bytes after the page
  for (let t = 0; t < 20000; t++) {
    let d: Uint8Array;
    if (t % 2 === 0) {
      d = new Uint8Array(randInt(rand, 1, 64));
      for (let i = 0; i < d.length; i++) d[i] = randInt(rand, 0, 255);
    } else {
      d = good.slice(0, randInt(rand, 1, good.length));
      for (let k = randInt(rand, 1, 4); k > 0; k--) d[randInt(rand, 0, d.length - 1)] = randInt(rand, 0, 255);
    }
    try {
      xbzrleDecode(d, 0, d.length, page, 0);
      decoded++;
    } catch (e) {
      assert.ok(e instanceof WireError, `not a WireError: ${String(e)}`);
      threw++;
    }
    for (let g = PAGE_SIZE; g < PAGE_SIZE + 8; g++) assert.equal(page[g], 0xee, 'wrote past the page');
  }
  assert.ok(threw > 1000 && decoded > 100, `threw ${threw}, decoded ${decoded}`);
});

test('stop-and-copy with block masks: only the blocks written since the last live round are compared', () => {
  const rand = prng(11);
  const pages = 8;
  const src = new Uint8Array(new SharedArrayBuffer(pages * PAGE_SIZE));
  for (let i = 0; i < src.length; i++) src[i] = randInt(rand, 0, 255);
  const dst = new Uint8Array(src.length);
  const enc = new XbzrleEncoder(pages * PAGE_SIZE, pages);
  enc.startRound(2);
  sendAndApply(enc, src, [0, 1, 2, 3, 4, 5], dst); // cached in round 2
  enc.startRound(3);
  sendAndApply(enc, src, [6], dst); // cached in round 3, the last live round
  enc.startRound(4);
  sendAndApply(enc, src, [0, 1, 2, 3, 4, 5, 6], dst); // the last live round: unchanged pages are current as of round 4
  const seven = 7 * PAGE_SIZE; // pages 0-6 are this encoder's; page 7 is the second one's
  assert.deepEqual(dst.subarray(0, seven), src.subarray(0, seven));
  const blocks = new Uint8Array(pages);
  src[0 * PAGE_SIZE + 100] ^= 1; // block 0
  blocks[0] = 0x01;
  src[1 * PAGE_SIZE + 1500] ^= 1; // block 2
  blocks[1] = 0x04;
  src[2 * PAGE_SIZE + 3000] ^= 1; // block 5, but the mask names block 0 only: not read
  blocks[2] = 0x01;
  for (let j = 508; j < 516; j++) src[3 * PAGE_SIZE + j] ^= 0x5a; // one run across blocks 0 and 1
  blocks[3] = 0x03;
  blocks[4] = 0x10; // marked, not changed: unchanged
  src[6 * PAGE_SIZE + 3000] ^= 1; // block 5, mask block 0; its cache is round 4's, so the mask holds
  blocks[6] = 0x01;
  const expected = src.slice();
  expected[2 * PAGE_SIZE + 3000] ^= 1;
  expected[6 * PAGE_SIZE + 3000] ^= 1;
  enc.startRound(5);
  const out = sendAndApply(enc, src, [0, 1, 2, 3, 4, 6], dst, true, blocks);
  assert.deepEqual(out, [XbzrleOutcome.Delta, XbzrleOutcome.Delta, XbzrleOutcome.Unchanged, XbzrleOutcome.Delta, XbzrleOutcome.Unchanged, XbzrleOutcome.Unchanged]);
  assert.deepEqual(dst.subarray(0, seven), expected.subarray(0, seven), 'the blocks outside the masks were not read (as the dirty log promises they are unchanged)');

  // A cached copy older than the last live round: its mask does not cover every change since, so the page is compared whole.
  const enc2 = new XbzrleEncoder(pages * PAGE_SIZE, pages);
  const dst2 = new Uint8Array(src.length);
  enc2.startRound(2);
  sendAndApply(enc2, src, [0, 1, 2, 3, 4, 5, 6, 7], dst2);
  src[7 * PAGE_SIZE + 3000] ^= 1; // block 5 changed; the mask (from a later sync) says block 0
  blocks[7] = 0x01;
  enc2.startRound(4);
  assert.deepEqual(sendAndApply(enc2, src, [7], dst2, true, blocks), [XbzrleOutcome.Delta]);
  assert.deepEqual(dst2.subarray(7 * PAGE_SIZE), src.subarray(7 * PAGE_SIZE));
});

test('block masks: random changes inside the masked blocks round-trip exactly', () => {
  const rand = prng(12);
  const pages = 64;
  const src = new Uint8Array(new SharedArrayBuffer(pages * PAGE_SIZE));
  for (let i = 0; i < src.length; i++) src[i] = randInt(rand, 0, 255);
  const dst = new Uint8Array(src.length);
  const enc = new XbzrleEncoder(pages * PAGE_SIZE, pages);
  const all = Array.from({ length: pages }, (_, i) => i);
  enc.startRound(2);
  sendAndApply(enc, src, all, dst);
  const blocks = new Uint8Array(pages);
  for (let p = 0; p < pages; p++) {
    const changes = randInt(rand, 0, 12);
    for (let k = 0; k < changes; k++) {
      const off = randInt(rand, 0, PAGE_SIZE - 1);
      src[p * PAGE_SIZE + off] = randInt(rand, 0, 255);
      blocks[p] |= 1 << (off >>> 9);
    }
    if (rand() < 0.2) blocks[p] |= 1 << randInt(rand, 0, 7); // marked but not changed
  }
  enc.startRound(3);
  sendAndApply(enc, src, all, dst, true, blocks);
  assert.deepEqual(dst, src);
});
