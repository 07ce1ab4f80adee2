// Fuzz: seeded random mutations and truncations of valid streams, fed in random chunkings to the
// framer and every decoder, must only ever yield frames or WireError: never another exception,
// never a hang.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  FrameReader,
  FrameType,
  PROTOCOL_VERSION,
  PageBatchBuilder,
  PageBatchReader,
  WireError,
  decodeMessage,
  encodeAbort,
  encodeAccept,
  encodeActivated,
  encodeResumedAt,
  encodePausedAt,
  encodeCommitted,
  encodeComplete,
  encodeDiscard,
  encodeHello,
  encodePageRequest,
  encodePing,
  encodePong,
  encodeResume,
  encodeRoundEnd,
  encodeState,
  pageRunsFromList,
  sha256,
} from '../../../src/migration/wire/index.js';
import { SESSION_ID, cat, pageOf, prng, randInt, sampleHello } from './helpers.js';

const RAM_PAGES = 32768;

function sourceFrames(): Uint8Array[] {
  const b = new PageBatchBuilder(8);
  const pages1 = b.begin(1).addRaw(1, pageOf(1)).addZero(2).addDelta(3, Uint8Array.from([1, 2, 3])).addCompressed(4, Uint8Array.from([9, 9])).finish().slice();
  const pages2 = b.begin(2, 77).addZero(40).addRaw(41, pageOf(41)).finish().slice();
  return [
    encodeHello(sampleHello({ mode: 'hybrid' })),
    pages1,
    encodeRoundEnd({ round: 1, pagesSent: 4, pagesDirtied: 1, durationUs: 1000, bytes: 4200 }),
    pages2,
    encodeDiscard({ runs: pageRunsFromList([3, 4, 5, 100], RAM_PAGES) }),
    encodePausedAt({ bootId: new Uint8Array(16).fill(5), pausedUs: 4_000_000, sentUs: 4_000_900 }),
    encodeState({ state: Uint8Array.from({ length: 1500 }, (_, i) => (i * 7) & 0xff) }),
    encodeComplete({ round: 2, ramDigest: sha256(Uint8Array.of(1)) }),
    encodePing({ nonce: 123n }),
    encodePong({ nonce: 456n }),
    encodeAbort({ reason: 'io', text: 'connection reset' }),
  ];
}

function destinationFrames(): Uint8Array[] {
  return [
    encodeAccept({ version: PROTOCOL_VERSION, sessionId: SESSION_ID, capabilities: 3 }),
    encodePageRequest({ requestId: 5, pages: Uint32Array.from([1, 2, 3000]) }),
    encodeResume({ sessionId: SESSION_ID, runs: pageRunsFromList([0, 1, 2, 10, 12, 30000], RAM_PAGES) }),
    encodeResumedAt({ bootId: new Uint8Array(16).fill(3), resumedUs: 5_000_000 }),
    encodeActivated({ switchoverUs: 800 }),
    encodeCommitted({ ramDigest: undefined }),
    encodePing({ nonce: 1n }),
    encodeAbort({ reason: 'state-rejected', text: 'unknown state version 9' }),
  ];
}

interface Stats {
  frames: number;
  streamsClean: number;
  codes: Map<string, number>;
}

/** Feeds a stream in random chunks; returns normally or with a WireError; anything else escapes. */
function run(bytes: Uint8Array, rand: () => number, from: 'source' | 'destination' | undefined, stats: Stats): void {
  const reader = new FrameReader(from !== undefined ? { from } : {});
  const pages = new PageBatchReader({ ramPages: RAM_PAGES });
  try {
    let o = 0;
    let guard = 0;
    while (o < bytes.length) {
      if (++guard > bytes.length + 10) throw new Error('chunk loop did not progress');
      const n = rand() < 0.25 ? randInt(rand, 1, 8) : randInt(rand, 1, 5000);
      for (const f of reader.feed(bytes.subarray(o, o + n))) {
        const m = decodeMessage(f, { ramPages: RAM_PAGES });
        if (f.type === FrameType.Pages) {
          pages.decode(f.payload, f.flags);
          for (let i = 0; i < pages.count; i++) {
            const d = pages.data(i);
            assert.ok(d.byteOffset >= f.payload.byteOffset && d.byteOffset + d.length <= f.payload.byteOffset + f.payload.length);
          }
        }
        assert.equal(m.type, f.type);
        stats.frames++;
      }
      o += n;
    }
    reader.end();
    stats.streamsClean++;
  } catch (e) {
    if (!(e instanceof WireError)) throw e;
    stats.codes.set(e.code, (stats.codes.get(e.code) ?? 0) + 1);
  }
}

function boundaries(frames: Uint8Array[]): number[] {
  const out: number[] = [];
  let o = 0;
  for (const f of frames) {
    out.push(o);
    o += f.length;
  }
  return out;
}

function mutate(stream: Uint8Array, starts: number[], rand: () => number): Uint8Array {
  let s: Uint8Array = stream.slice();
  const k = randInt(rand, 1, 3);
  for (let j = 0; j < k; j++) {
    const pos = randInt(rand, 0, Math.max(0, s.length - 1));
    switch (randInt(rand, 0, 8)) {
      case 0: // flip a bit
        if (s.length > 0) s[pos] ^= 1 << randInt(rand, 0, 7);
        break;
      case 1: // random byte
        if (s.length > 0) s[pos] = randInt(rand, 0, 255);
        break;
      case 2: // truncate
        s = s.subarray(0, pos);
        break;
      case 3: { // insert junk
        const junk = Uint8Array.from({ length: randInt(rand, 1, 16) }, () => randInt(rand, 0, 255));
        s = cat(s.subarray(0, pos), junk, s.subarray(pos));
        break;
      }
      case 4: // delete a range
        s = cat(s.subarray(0, pos), s.subarray(Math.min(s.length, pos + randInt(rand, 1, 64))));
        break;
      case 5: { // rewrite a frame's length field
        const at = starts[randInt(rand, 0, starts.length - 1)]! + 4;
        if (at + 4 <= s.length) {
          const v = rand() < 0.5 ? randInt(rand, 0, 64) : Math.floor(rand() * 2 ** 32);
          new DataView(s.buffer, s.byteOffset).setUint32(at, v >>> 0, true);
        }
        break;
      }
      case 6: { // rewrite a frame's type or flags
        const at = starts[randInt(rand, 0, starts.length - 1)]! + randInt(rand, 0, 1);
        if (at < s.length) s[at] = randInt(rand, 0, 255);
        break;
      }
      case 7: { // a small count/length field inside a payload
        const at = starts[randInt(rand, 0, starts.length - 1)]! + 8 + randInt(rand, 0, 40);
        if (at + 2 <= s.length) new DataView(s.buffer, s.byteOffset).setUint16(at, randInt(rand, 0, 0xffff), true);
        break;
      }
      case 8: { // duplicate a slice
        const end = Math.min(s.length, pos + randInt(rand, 1, 300));
        s = cat(s.subarray(0, end), s.subarray(pos, end), s.subarray(end));
        break;
      }
    }
  }
  return s;
}

test('fuzz: mutated streams yield frames or WireError only', { timeout: 120_000 }, () => {
  const src = sourceFrames();
  const dst = destinationFrames();
  const streams = [
    { bytes: cat(...src), starts: boundaries(src), from: 'source' as const },
    { bytes: cat(...dst), starts: boundaries(dst), from: 'destination' as const },
  ];
  // sanity: the unmutated streams are clean in every mode
  for (const s of streams) {
    const stats: Stats = { frames: 0, streamsClean: 0, codes: new Map() };
    run(s.bytes, prng(1), s.from, stats);
    run(s.bytes, prng(2), undefined, stats);
    assert.equal(stats.streamsClean, 2, JSON.stringify([...stats.codes]));
  }
  const stats: Stats = { frames: 0, streamsClean: 0, codes: new Map() };
  const ITER = 6000;
  for (let seed = 1; seed <= ITER; seed++) {
    const rand = prng(seed * 7919);
    const s = streams[seed % 2]!;
    const bytes = mutate(s.bytes, s.starts, rand);
    try {
      run(bytes, rand, rand() < 0.5 ? s.from : undefined, stats);
    } catch (e) {
      assert.fail(`seed ${seed}: non-WireError escaped: ${e instanceof Error ? e.stack : String(e)}`);
    }
  }
  const codes = [...stats.codes.keys()].sort();
  // the mutations reach deep into the decoders, not just the header checks
  for (const c of ['bad-count', 'bad-value', 'oversized', 'reserved-bits', 'trailing-bytes', 'truncated', 'unknown-type', 'bad-digest']) {
    assert.ok(stats.codes.has(c), `fuzz never produced ${c}; saw ${codes.join(', ')}`);
  }
  assert.ok(stats.frames > ITER, `only ${stats.frames} frames decoded`);
  assert.ok(stats.streamsClean > 0);
});

test('fuzz: random garbage yields WireError or waits for more bytes', { timeout: 60_000 }, () => {
  const stats: Stats = { frames: 0, streamsClean: 0, codes: new Map() };
  for (let seed = 1; seed <= 3000; seed++) {
    const rand = prng(seed);
    const n = randInt(rand, 0, 300);
    const bytes = Uint8Array.from({ length: n }, () => randInt(rand, 0, 255));
    // make some of it look like frames: valid type, zero reserved, small length
    if (n >= 8 && rand() < 0.7) {
      bytes[0] = [0x01, 0x02, 0x03, 0x04, 0x10, 0x11, 0x12, 0x13, 0x20, 0x21, 0x22, 0x30, 0x31, 0x40, 0x41][randInt(rand, 0, 14)]!;
      bytes[1] = rand() < 0.8 ? 0 : 1;
      bytes[2] = 0;
      bytes[3] = 0;
      new DataView(bytes.buffer).setUint32(4, randInt(rand, 0, n - 8), true);
    }
    const modes = [undefined, 'source', 'destination'] as const;
    try {
      run(bytes, rand, modes[seed % 3], stats);
    } catch (e) {
      assert.fail(`seed ${seed}: non-WireError escaped: ${e instanceof Error ? e.stack : String(e)}`);
    }
  }
  assert.ok(stats.codes.size >= 5, [...stats.codes.keys()].join(', '));
});
