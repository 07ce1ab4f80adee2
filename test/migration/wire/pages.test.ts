// The PAGES hot path: the builder reuses one buffer (no growth after construction), the reader
// is reusable and hands out views, encodings reserved in place.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  FrameReader,
  FrameType,
  MAX_BATCH_PAGES,
  PageBatchBuilder,
  PageBatchReader,
  PageEncoding,
  WIRE_PAGE_SIZE,
  WireError,
  decodeFrameHeader,
} from '../../../src/migration/wire/index.js';
import { PAGE_SIZE } from '../../../src/machine/memory/layout.js';
import { pageOf, prng, randInt } from './helpers.js';

test('the wire page size is the machine page size', () => {
  assert.equal(WIRE_PAGE_SIZE, PAGE_SIZE);
});

test('builder reuses its buffer across batches with no growth after the first', () => {
  const ram = new Uint8Array(new SharedArrayBuffer(64 * WIRE_PAGE_SIZE));
  for (let p = 0; p < 64; p++) ram.set(pageOf(p), p * WIRE_PAGE_SIZE);
  const b = new PageBatchBuilder();
  const buffer = b.bytes;
  const size = buffer.byteLength;
  const reader = new PageBatchReader();
  const delta = new Uint8Array(WIRE_PAGE_SIZE).fill(9); // worst-case encoded size
  for (let batch = 0; batch < 5; batch++) {
    b.begin(batch + 1);
    let i = 0;
    while (!b.full) {
      const page = (batch * 7 + i) % 64;
      if (i % 3 === 0) b.addRaw(page, ram, page * WIRE_PAGE_SIZE);
      else if (i % 3 === 1) b.addDelta(page, delta);
      else b.addZero(page);
      i++;
    }
    assert.equal(b.count, MAX_BATCH_PAGES);
    const f = b.finish();
    assert.equal(f.buffer, buffer.buffer, 'frame aliases the one buffer');
    assert.equal(b.bytes, buffer);
    assert.equal(b.bytes.byteLength, size, 'no growth');
    const h = decodeFrameHeader(f);
    assert.equal(h.length, f.length - 8);
    reader.decode(f.subarray(8), h.flags);
    assert.equal(reader.round, batch + 1);
    assert.equal(reader.count, MAX_BATCH_PAGES);
    const page0 = (batch * 7) % 64;
    assert.equal(reader.page(0), page0);
    assert.deepEqual(reader.data(0), pageOf(page0));
    assert.equal(reader.encoding(1), PageEncoding.Delta);
    assert.equal(reader.dataLength(1), WIRE_PAGE_SIZE);
    assert.equal(reader.encoding(2), PageEncoding.Zero);
    assert.equal(reader.dataLength(2), 0);
  }
  b.begin(9);
  for (let i = 0; i < MAX_BATCH_PAGES; i++) b.addZero(i);
  assert.throws(() => b.addZero(0), (e: unknown) => e instanceof WireError && e.code === 'bad-count');
  assert.equal(b.bytes.byteLength, size);
});

test('reserveEncoded writes in place; cancelEncoded drops the entry', () => {
  const b = new PageBatchBuilder(4);
  b.begin(1);
  const at = b.reserveEncoded(10, PageEncoding.Compressed);
  b.bytes.set([5, 6, 7], at);
  b.commitEncoded(3);
  const at2 = b.reserveEncoded(11, PageEncoding.Delta);
  b.bytes.fill(1, at2, at2 + 4096);
  b.cancelEncoded(); // did not pay off
  b.addRaw(11, pageOf(11));
  const f = b.finish();
  const r = new PageBatchReader().decode(f.subarray(8), f[1]);
  assert.equal(r.count, 2);
  assert.deepEqual([...r].map((e) => [e.page, e.encoding, e.data.length]), [[10, PageEncoding.Compressed, 3], [11, PageEncoding.Raw, 4096]]);
  assert.deepEqual(r.data(0), Uint8Array.from([5, 6, 7]));
  assert.deepEqual(r.data(1), pageOf(11));
});

test('reader data are views into the payload, valid after the reader moves on', () => {
  const b = new PageBatchBuilder(2);
  const r = new PageBatchReader();
  const f1 = b.begin(1).addRaw(1, pageOf(1)).finish().slice();
  r.decode(f1.subarray(8));
  const view = r.data(0);
  assert.equal(view.buffer, f1.buffer);
  const f2 = b.begin(2).addRaw(2, pageOf(2)).finish().slice();
  r.decode(f2.subarray(8));
  assert.deepEqual(view, pageOf(1));
  assert.deepEqual(r.data(0), pageOf(2));
});

test('a failed decode leaves an empty batch', () => {
  const r = new PageBatchReader();
  const good = new PageBatchBuilder(1).begin(1).addZero(3).finish().slice(8);
  r.decode(good);
  assert.equal(r.count, 1);
  assert.throws(() => r.decode(good.subarray(0, 14)), WireError);
  assert.equal(r.count, 0);
});

test('builder checks its inputs', () => {
  const b = new PageBatchBuilder(2);
  assert.throws(() => b.addZero(1), /begin/);
  b.begin(1);
  assert.throws(() => b.addRaw(1, new Uint8Array(100)), { code: 'bad-value' });
  assert.throws(() => b.addDelta(1, new Uint8Array(0)), { code: 'bad-value' });
  assert.throws(() => b.addDelta(1, new Uint8Array(4097)), { code: 'bad-value' });
  assert.throws(() => b.addZero(-1), { code: 'bad-value' });
  assert.throws(() => b.finish(), { code: 'bad-count' });
  assert.throws(() => new PageBatchBuilder(0), { code: 'bad-count' });
  assert.throws(() => new PageBatchBuilder(1025), { code: 'bad-count' });
});

test('random batches through the framer and one reused reader', () => {
  const rand = prng(42);
  const builder = new PageBatchBuilder(64);
  const reader = new PageBatchReader({ ramPages: 1000 });
  const plain = new FrameReader(); // PAGES only: no handshake checks
  for (let n = 0; n < 200; n++) {
    const requestId = rand() < 0.2 ? randInt(rand, 1, 1e6) : 0;
    builder.begin(n, requestId);
    const want: Array<[number, number, number[]]> = [];
    const k = randInt(rand, 1, 64);
    for (let i = 0; i < k; i++) {
      const page = randInt(rand, 0, 999);
      const kind = randInt(rand, 0, 3);
      if (kind === 0) {
        builder.addRaw(page, pageOf(page));
        want.push([page, kind, Array.from(pageOf(page))]);
      } else if (kind === 1) {
        builder.addZero(page);
        want.push([page, kind, []]);
      } else {
        const d = Array.from({ length: randInt(rand, 1, 200) }, () => randInt(rand, 0, 255));
        if (kind === 2) builder.addDelta(page, Uint8Array.from(d));
        else builder.addCompressed(page, Uint8Array.from(d));
        want.push([page, kind, d]);
      }
    }
    const bytes = builder.finish().slice(); // the socket would hold it; the builder moves on
    const got = [...plain.feed(bytes)];
    assert.equal(got.length, 1);
    assert.equal(got[0]!.type, FrameType.Pages);
    reader.decode(got[0]!.payload, got[0]!.flags);
    assert.equal(reader.requestId, requestId);
    assert.equal(reader.demand, requestId !== 0);
    assert.deepEqual([...reader].map((e) => [e.page, e.encoding, Array.from(e.data)]), want);
  }
});
