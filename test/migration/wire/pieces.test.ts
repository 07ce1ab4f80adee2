// Frames left in the chunks they arrived in: FrameReader.nextPieces and
// PageBatchReader.decodePieces must agree with next() and decode() on every stream and every
// split, valid or not (same entries and bytes, or the same WireError).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  FrameReader,
  FrameType,
  PageBatchBuilder,
  PageBatchReader,
  WireError,
  encodeHello,
  encodePing,
  encodeRoundEnd,
} from '../../../src/migration/wire/index.js';
import { cat, pageOf, prng, randInt, sampleHello } from './helpers.js';

const RAM_PAGES = 4096;

function batch(rand: () => number): Uint8Array {
  const b = new PageBatchBuilder(64);
  b.begin(randInt(rand, 1, 5));
  const n = randInt(rand, 1, 64);
  for (let i = 0; i < n; i++) {
    const page = randInt(rand, 0, RAM_PAGES - 1);
    const k = randInt(rand, 0, 3);
    if (k === 0) b.addRaw(page, pageOf(page));
    else if (k === 1) b.addZero(page);
    else if (k === 2) b.addDelta(page, Uint8Array.from({ length: randInt(rand, 1, 100) }, (_, j) => j));
    else b.addCompressed(page, Uint8Array.from({ length: randInt(rand, 1, 4096) }, (_, j) => j * 3));
  }
  return b.finish().slice(8); // the payload
}

function split(bytes: Uint8Array, rand: () => number): Uint8Array[] {
  const out: Uint8Array[] = [];
  let o = 0;
  while (o < bytes.length) {
    const n = rand() < 0.3 ? randInt(rand, 1, 7) : randInt(rand, 1, 9000);
    out.push(bytes.subarray(o, o + n));
    o += n;
  }
  return out.length > 0 ? out : [bytes];
}

type Outcome = { error: string } | { round: number; entries: [number, number, number[]][] };

function outcome(f: () => PageBatchReader): Outcome {
  let r: PageBatchReader;
  try {
    r = f();
  } catch (e) {
    if (!(e instanceof WireError)) throw e;
    return { error: e.message };
  }
  const entries: [number, number, number[]][] = [];
  for (let i = 0; i < r.count; i++) {
    const d = new Uint8Array(r.dataLength(i));
    r.copyData(i, d, 0);
    assert.deepEqual(r.data(i), d);
    entries.push([r.page(i), r.encoding(i), Array.from(d)]);
  }
  return { round: r.round, entries };
}

test('decodePieces agrees with decode on valid and mutated batches, however they are split', () => {
  const rand = prng(99);
  const whole = new PageBatchReader({ ramPages: RAM_PAGES, capacity: 64 });
  const pieced = new PageBatchReader({ ramPages: RAM_PAGES, capacity: 64 });
  let errors = 0;
  for (let n = 0; n < 600; n++) {
    let p = batch(rand);
    if (n % 2 === 1) {
      p = p.slice();
      const k = randInt(rand, 0, 2);
      if (k === 0) p[randInt(rand, 0, Math.min(p.length - 1, 40))] = randInt(rand, 0, 255);
      else if (k === 1) p = p.subarray(0, randInt(rand, 0, p.length - 1));
      else p = cat(p, [randInt(rand, 0, 255)]);
    }
    const flags = n % 17 === 0 ? 1 : 0;
    const a = outcome(() => whole.decode(p, flags));
    const b = outcome(() => pieced.decodePieces(split(p, rand), flags));
    assert.deepEqual(b, a);
    if ('error' in a) errors++;
  }
  assert.ok(errors > 100, 'mutations were exercised');
});

test('nextPieces returns the same frames as next, as views of the pushed chunks', () => {
  const rand = prng(5);
  // HELLO, PAGES frames with real payloads, ROUND_END, PING.
  const stream: Uint8Array[] = [encodeHello(sampleHello())];
  for (let i = 0; i < 20; i++) {
    const p = batch(rand);
    stream.push(cat([FrameType.Pages, 0, 0, 0], [p.length & 0xff, (p.length >>> 8) & 0xff, (p.length >>> 16) & 0xff, 0], p));
  }
  stream.push(encodeRoundEnd({ round: 1, pagesSent: 1, pagesDirtied: 0, durationUs: 5, bytes: 9 }), encodePing({ nonce: 7n }));
  const bytes = cat(...stream);
  for (let trial = 0; trial < 20; trial++) {
    const a = new FrameReader({ from: 'source' });
    const b = new FrameReader({ from: 'source' });
    const got: Uint8Array[] = [];
    const want: Uint8Array[] = [];
    for (const chunk of split(bytes, rand)) {
      for (const f of a.feed(chunk)) want.push(f.payload.slice());
      b.push(chunk);
      for (;;) {
        const f = b.nextPieces();
        if (f === undefined) break;
        assert.equal(f.pieces.reduce((n, q) => n + q.length, 0), f.length);
        assert.ok(f.pieces.every((q) => q.length > 0));
        got.push(cat(...f.pieces));
      }
    }
    a.end();
    b.end();
    assert.deepEqual(got, want);
    assert.equal(b.frameCount, stream.length);
  }
});
