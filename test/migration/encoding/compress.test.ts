// Page-stream compression: lz4 and zstd round trips of real PAGES payloads, the PAGES_COMPRESSED
// envelope byte by byte, and corrupt or hostile blocks (clear WireError, never a crash or a
// buffer sized from the block's own header).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PAGE_SIZE } from '../../../src/machine/memory/layout.js';
import { COMPRESSION_ALGORITHMS, CompressionBackoff, compressor, compressorForCode } from '../../../src/migration/encoding/compress.js';
import {
  CompressionCode,
  FrameReader,
  FrameType,
  MAX_PAGES_PAYLOAD,
  PageBatchBuilder,
  PageBatchReader,
  WireError,
  decodeMessage,
  decodePagesCompressed,
  encodePagesCompressed,
  encodePagesCompressedHead,
} from '../../../src/migration/wire/index.js';
import { prng, randInt } from '../wire/helpers.js';

/** A PAGES payload of `n` pages: text-like pages (compressible), some random, some zero. */
function batchPayload(seed: number, n: number): Uint8Array {
  const rand = prng(seed);
  const page = new Uint8Array(PAGE_SIZE);
  const b = new PageBatchBuilder(n).begin(3);
  for (let i = 0; i < n; i++) {
    if (i % 10 === 9) {
      b.addZero(i);
      continue;
    }
    for (let j = 0; j < PAGE_SIZE; j++) page[j] = i % 4 === 3 ? randInt(rand, 0, 255) : 0x61 + ((j * 7 + i) % 13);
    b.addRaw(i, page);
  }
  return b.finish().slice(8);
}

for (const alg of COMPRESSION_ALGORITHMS) {
  test(`${alg}: a PAGES payload round-trips exactly and shrinks`, async () => {
    const c = compressor(alg);
    assert.equal(c.algorithm, alg);
    assert.equal(compressorForCode(c.code), c);
    const raw = batchPayload(5, 200);
    const z = await c.compress(raw);
    assert.ok(z.length < raw.length / 2, `${alg}: ${z.length} of ${raw.length}`);
    const back = c.decompress(z, raw.length);
    assert.deepEqual(new Uint8Array(back.buffer, back.byteOffset, back.length), raw);
    const r = new PageBatchReader().decode(back);
    assert.equal(r.count, 200);
    assert.equal(r.round, 3);
  });

  test(`${alg}: a wrong declared length, truncation and seeded corruption are WireErrors`, async () => {
    const c = compressor(alg);
    const raw = batchPayload(9, 40);
    const z = await c.compress(raw);
    // zstd blocks need not declare their size (and @mongodb-js/zstd's do not): checked for lz4 only.
    if (alg === 'lz4') {
      assert.throws(() => c.decompress(z, raw.length - 1), WireError);
      assert.throws(() => c.decompress(z, raw.length + 1), WireError);
    }
    assert.throws(() => c.decompress(z.subarray(0, 3), raw.length), WireError);
    assert.throws(() => c.decompress(z.subarray(0, z.length >> 1), raw.length), WireError);
    const rand = prng(77);
    let ok = 0;
    for (let t = 0; t < 1500; t++) {
      const g = Uint8Array.from(z);
      for (let k = randInt(rand, 1, 6); k > 0; k--) g[randInt(rand, 0, g.length - 1)] = randInt(rand, 0, 255);
      try {
        const out = c.decompress(g, raw.length);
        assert.equal(out.length, raw.length);
        ok++;
      } catch (e) {
        assert.ok(e instanceof WireError, `${alg}: ${String(e)}`);
        assert.match(e.message, /PAGES_COMPRESSED/);
      }
    }
    assert.ok(ok < 1500);
  });
}

test('a block whose header claims 4 GiB is refused before the library sees it', () => {
  const lz4 = Uint8Array.from([0xff, 0xff, 0xff, 0xff, 0x10, 0x41]);
  assert.throws(() => compressor('lz4').decompress(lz4, 1000), (e: unknown) => e instanceof WireError && /declares 4294967295/.test(e.message));
  // zstd frame: magic, FCS flag 2 (4 bytes), single segment, content size 0xffffffff.
  const zstd = Uint8Array.from([0x28, 0xb5, 0x2f, 0xfd, 0xa0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0]);
  assert.throws(() => compressor('zstd').decompress(zstd, 1000), (e: unknown) => e instanceof WireError && /declares 4294967295/.test(e.message));
  const window = Uint8Array.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, 0xf8, 0, 0, 0]); // 2 GiB window, no content size
  assert.throws(() => compressor('zstd').decompress(window, 1000), WireError);
});

test('PAGES_COMPRESSED envelope: bytes by hand, decode, bounds', () => {
  const data = Uint8Array.from([9, 8, 7]);
  const frame = encodePagesCompressed({ demand: false, algorithm: CompressionCode.Zstd, rawLength: 4113, data });
  assert.deepEqual(frame, Uint8Array.from([
    0x14, 0x00, 0x00, 0x00, 11, 0, 0, 0, // header: type, flags, reserved, length 11
    2, 0, 0, 0, // zstd, reserved
    0x11, 0x10, 0, 0, // rawLength 4113
    9, 8, 7,
  ]));
  const head = encodePagesCompressedHead(CompressionCode.Lz4, 4113, 3, true);
  assert.equal(head.length, 16);
  assert.equal(head[1], 1, 'demand flag');
  const m = decodeMessage({ type: FrameType.PagesCompressed, flags: 1, payload: frame.subarray(8) });
  assert.equal(m.type, FrameType.PagesCompressed);
  if (m.type === FrameType.PagesCompressed) {
    assert.equal(m.demand, true);
    assert.equal(m.rawLength, 4113);
    assert.deepEqual(m.data, data);
  }
  const bad = (bytes: number[], code: string): void => {
    assert.throws(() => decodePagesCompressed(Uint8Array.from(bytes)), (e: unknown) => e instanceof WireError && e.code === code, bytes.join(','));
  };
  bad([3, 0, 0, 0, 0x11, 0x10, 0, 0, 1], 'bad-value'); // algorithm 3
  bad([1, 1, 0, 0, 0x11, 0x10, 0, 0, 1], 'reserved-bits');
  bad([1, 0, 0, 0, 4, 0, 0, 0, 1], 'bad-value'); // rawLength below a one-entry batch
  bad([1, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f, 1], 'bad-value'); // rawLength above the PAGES bound
  bad([1, 0, 0, 0, 0x11, 0x10, 0, 0], 'truncated'); // no data
  bad([1, 0, 0], 'truncated');
  assert.throws(() => encodePagesCompressedHead(CompressionCode.Lz4, MAX_PAGES_PAYLOAD + 1, 1), WireError);
});

test('the frame reader knows type 0x14 (protocol 1.1) and bounds it', () => {
  const frame = encodePagesCompressed({ demand: false, algorithm: CompressionCode.Lz4, rawLength: 4113, data: Uint8Array.from([1]) });
  const r = new FrameReader();
  r.push(frame);
  assert.equal(r.next()?.type, FrameType.PagesCompressed);
  const huge = Uint8Array.from([0x14, 0, 0, 0, 0xff, 0xff, 0xff, 0x00]);
  const r2 = new FrameReader();
  assert.throws(() => {
    r2.push(huge);
    r2.next();
  }, (e: unknown) => e instanceof WireError && e.code === 'oversized');
});

test('backoff: after a batch that does not shrink, 1, 2, 4, then 8 batches go plain; a shrinking batch resets it', () => {
  const b = new CompressionBackoff();
  // Every try fails to shrink: tries come after gaps of 1, 2, 4, 8, 8, ...
  const gaps: number[] = [];
  let gap = 0;
  for (let i = 0; i < 400; i++) {
    if (b.shouldTry()) {
      gaps.push(gap);
      gap = 0;
      b.record(1000, 990);
    } else gap++;
  }
  assert.deepEqual(gaps.slice(0, 7), [0, 1, 2, 4, 8, 8, 8]);
  assert.equal(b.skipped, 400 - gaps.length);
  // A batch that shrinks by 1/32 or more resets the backoff.
  while (!b.shouldTry());
  b.record(1000, 968);
  for (let i = 0; i < 5; i++) {
    assert.equal(b.shouldTry(), true, 'shrinking batches are all tried');
    b.record(1000, 500);
  }
});
