// The framer: arbitrary chunkings give the same frames; headers are validated before buffering;
// the handshake and direction checks; zero-copy for frames inside one chunk.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  PROTOCOL_MINOR,
  FrameReader,
  FrameType,
  MAX_STATE_BYTES,
  PROTOCOL_VERSION,
  WireError,
  decodeFrameHeader,
  decodeHello,
  encodeAbort,
  encodeAccept,
  encodeActivated,
  encodeFrame,
  encodeFrameHeader,
  encodeHello,
  encodePing,
  encodeRoundEnd,
  encodeState,
  type Frame,
} from '../../../src/migration/wire/index.js';
import { SESSION_ID, cat, frame, le, prng, randInt, sampleHello } from './helpers.js';

function sourceStream(): Uint8Array[] {
  return [
    encodeHello(sampleHello()),
    encodeRoundEnd({ round: 1, pagesSent: 10, pagesDirtied: 2, durationUs: 5, bytes: 40000 }),
    encodeFrame(FrameType.Ping, new Uint8Array(8)),
    encodeState({ state: Uint8Array.from({ length: 10_000 }, (_, i) => i * 13) }),
    encodeFrame(FrameType.Activated, new Uint8Array(8)), // zero payload type is fine without direction checks
    encodeAbort({ reason: 'cancelled', text: '' }),
  ];
}

function collect(reader: FrameReader, chunks: Uint8Array[]): Frame[] {
  const out: Frame[] = [];
  for (const c of chunks) for (const f of reader.feed(c)) out.push({ type: f.type, flags: f.flags, payload: f.payload.slice() });
  reader.end();
  return out;
}

function expected(frames: Uint8Array[]): Frame[] {
  return frames.map((b) => ({ type: b[0]! as FrameType, flags: b[1]!, payload: b.slice(8) }));
}

test('frame header: 8 bytes, type, flags, reserved, length LE', () => {
  assert.deepEqual(encodeFrameHeader(FrameType.Pages, 0x01020304, 1), Uint8Array.from([0x10, 0x01, 0, 0, 4, 3, 2, 1]));
  assert.deepEqual(decodeFrameHeader(Uint8Array.from([0x41, 0, 0, 0, 8, 0, 0, 0])), { type: FrameType.Pong, flags: 0, length: 8 });
});

test('many frames in one chunk', () => {
  const frames = sourceStream();
  const reader = new FrameReader();
  assert.deepEqual(collect(reader, [cat(...frames)]), expected(frames));
  assert.equal(reader.frameCount, frames.length);
  assert.equal(reader.buffered, 0);
});

test('one byte at a time', () => {
  const frames = sourceStream();
  const all = cat(...frames);
  const chunks = Array.from(all, (b) => Uint8Array.of(b));
  assert.deepEqual(collect(new FrameReader(), chunks), expected(frames));
});

test('random chunkings (seeded) give the same frames', () => {
  const frames = sourceStream();
  const all = cat(...frames);
  const want = expected(frames);
  for (let seed = 1; seed <= 300; seed++) {
    const rand = prng(seed);
    const chunks: Uint8Array[] = [];
    for (let o = 0; o < all.length; ) {
      const n = rand() < 0.3 ? randInt(rand, 0, 9) : randInt(rand, 1, 3000);
      chunks.push(all.subarray(o, o + n));
      o += n;
    }
    assert.deepEqual(collect(new FrameReader(), chunks), want, `seed ${seed}`);
  }
});

test('a frame inside one chunk is a view; a frame split across chunks is assembled once', () => {
  const a = encodePing({ nonce: 1n });
  const b = encodePing({ nonce: 2n });
  const chunk = cat(a, b.subarray(0, 10));
  const reader = new FrameReader();
  const [f1] = [...reader.feed(chunk)];
  assert.equal(f1!.payload.buffer, chunk.buffer);
  const tail = b.slice(10);
  const [f2] = [...reader.feed(tail)];
  assert.notEqual(f2!.payload.buffer, chunk.buffer);
  assert.deepEqual(f2!.payload, b.subarray(8));
});

test('pull interface: next() returns undefined until a frame is complete', () => {
  const f = encodeActivated({ switchoverUs: 7 });
  const r = new FrameReader();
  r.push(f.subarray(0, 12));
  assert.equal(r.next(), undefined);
  r.push(f.subarray(12));
  assert.equal(r.next()!.type, FrameType.Activated);
  assert.equal(r.next(), undefined);
  r.end();
});

test('a large frame in small chunks is linear, not quadratic', () => {
  const state = new Uint8Array(8 * 1024 * 1024);
  state[123] = 7;
  const f = encodeState({ state });
  const r = new FrameReader();
  const t0 = performance.now();
  let got: Frame | undefined;
  for (let o = 0; o < f.length; o += 64) for (const x of r.feed(f.subarray(o, o + 64))) got = x;
  const ms = performance.now() - t0;
  assert.equal(got!.payload.length, f.length - 8);
  assert.equal(got!.payload[36 + 123], 7);
  assert.ok(ms < 5000, `took ${ms} ms for 131072 chunks`);
});

test('the length bound is checked from the header, before any payload is buffered', () => {
  const r = new FrameReader();
  r.push(Uint8Array.from([0x12, 0, 0, 0, ...le.u32(MAX_STATE_BYTES)])); // STATE within bound
  assert.equal(r.next(), undefined);
  r.push(new Uint8Array(100));
  assert.equal(r.next(), undefined);
  assert.equal(r.buffered, 100); // only what arrived, nothing allocated for the announced size
  const r2 = new FrameReader();
  r2.push(Uint8Array.from([0x12, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]));
  assert.throws(() => r2.next(), (e: unknown) => e instanceof WireError && e.code === 'oversized' && /STATE/.test(e.message));
});

test('after an error the reader stays failed', () => {
  const r = new FrameReader();
  r.push(Uint8Array.from([0x7f, 0, 0, 0, 0, 0, 0, 0]));
  assert.throws(() => r.next(), { code: 'unknown-type' });
  assert.throws(() => r.next(), { code: 'unknown-type' });
  assert.throws(() => r.push(new Uint8Array(1)), { code: 'unknown-type' });
});

test('handshake: a wrong peer is detected from its first 8 bytes', () => {
  const r = new FrameReader({ from: 'destination' });
  r.push(new TextEncoder().encode('HTTP/1.1 400 Bad Request\r\n\r\n'));
  assert.throws(() => r.next(), (e: unknown) => e instanceof WireError && e.code === 'bad-magic' && e.message.includes('"HTTP/1.1"'));
});

test('handshake: bad magic is detected before the rest of the HELLO arrives', () => {
  const hello = encodeHello(sampleHello());
  hello[8 + 7] = 0x58; // "TERNMIGX"
  const r = new FrameReader({ from: 'source' });
  r.push(hello.subarray(0, 16));
  assert.throws(() => r.next(), (e: unknown) => e instanceof WireError && e.code === 'bad-magic' && e.field === 'magic');
});

test('handshake: a peer of another major version is reported clearly', () => {
  const hello = encodeHello(sampleHello({ version: { major: 2, minor: 0 } }));
  const r = new FrameReader({ from: 'source' });
  const [f] = [...r.feed(hello)];
  assert.throws(() => decodeHello(f!.payload), (e: unknown) =>
    e instanceof WireError && e.code === 'bad-version' && e.message.includes(`peer speaks tern migration protocol 2.0; this host speaks 1.${PROTOCOL_MINOR}`) &&
    e.peerVersion?.major === 2);
});

test('handshake: a newer minor is accepted', () => {
  const h = decodeHello(encodeHello(sampleHello({ version: { major: 1, minor: 7 } })).subarray(8));
  assert.deepEqual(h.version, { major: 1, minor: 7 });
});

test('direction: the first frame must be the handshake, later frames must be the sender\'s', () => {
  const fromSource = new FrameReader({ from: 'source' });
  fromSource.push(encodePing({ nonce: 1n }));
  assert.throws(() => fromSource.next(), { code: 'unexpected-type' });

  const ok = new FrameReader({ from: 'source' });
  const frames = [...ok.feed(cat(encodeHello(sampleHello()), encodePing({ nonce: 1n })))];
  assert.equal(frames.length, 2);
  ok.push(encodeActivated({ switchoverUs: 1 })); // ACTIVATED comes from the destination
  assert.throws(() => ok.next(), (e: unknown) => e instanceof WireError && e.code === 'unexpected-type' && /ACTIVATED/.test(e.message));

  const fromDest = new FrameReader({ from: 'destination' });
  const got = [...fromDest.feed(cat(encodeAccept({ version: PROTOCOL_VERSION, sessionId: SESSION_ID, capabilities: 0 }), encodeActivated({ switchoverUs: 1 })))];
  assert.equal(got.length, 2);
  fromDest.push(encodeAccept({ version: PROTOCOL_VERSION, sessionId: SESSION_ID, capabilities: 0 }));
  assert.throws(() => fromDest.next(), { code: 'unexpected-type' });
});

test('end(): a stream cut inside a frame is truncated', () => {
  const f = encodePing({ nonce: 3n });
  const r = new FrameReader();
  assert.equal([...r.feed(f.subarray(0, 11))].length, 0);
  assert.throws(() => r.end(), (e: unknown) => e instanceof WireError && e.code === 'truncated' && e.message.includes('PING') && e.message.includes('3 of 8'));
  const r2 = new FrameReader();
  r2.push(f.subarray(0, 5));
  assert.equal(r2.next(), undefined);
  assert.throws(() => r2.end(), (e: unknown) => e instanceof WireError && e.code === 'truncated' && e.message.includes('frame header'));
});

test('partial(): the header and buffered bytes of a frame still arriving; detachPartial() hands them over and goes on after the frame', () => {
  const run = cat(frame(0x16, cat(new Uint8Array(12), new Uint8Array(8192).fill(5))), encodePing({ nonce: 9n }));
  const r = new FrameReader();
  r.push(run.subarray(0, 6));
  assert.equal(r.partial(), undefined, 'no whole header yet');
  r.push(run.subarray(6, 30));
  assert.deepEqual(r.partial(), { type: FrameType.PageRun, flags: 0, length: 12 + 8192, buffered: 22 });
  assert.equal(r.next(), undefined);
  const d = r.detachPartial();
  assert.equal(d.type, FrameType.PageRun);
  assert.equal(d.length, 22);
  assert.deepEqual(cat(...d.pieces), run.subarray(8, 30));
  assert.equal(r.partial(), undefined, 'back at a frame boundary');
  assert.throws(() => r.detachPartial(), /no partly received frame/);
  // The rest of the run's payload went elsewhere; what follows it is framed as usual.
  const after = 8 + 12 + 8192;
  const f = r.feed(run.subarray(after)).next().value as Frame;
  assert.equal(f.type, FrameType.Ping);
  r.end();
  // A whole frame buffered is next()'s, not partial()'s.
  const r2 = new FrameReader();
  r2.push(encodePing({ nonce: 1n }));
  assert.equal(r2.partial(), undefined);
  assert.equal(r2.next()?.type, FrameType.Ping);
  // A bad header is a WireError from partial() too, and the reader stays failed.
  const r3 = new FrameReader();
  r3.push(frame(0x7f, [1]));
  assert.throws(() => r3.partial(), (e: unknown) => e instanceof WireError && e.code === 'unknown-type');
  assert.throws(() => r3.next(), WireError);
});

test('a zero-length payload is a frame too (header-only frames work back to back)', () => {
  const r = new FrameReader();
  // COMMITTED's minimum is 4 bytes, so use the framer only: a 0-length ABORT frame is framed fine
  const frames = [...r.feed(cat(frame(0x04, []), frame(0x04, [])))];
  assert.equal(frames.length, 2);
  assert.equal(frames[0]!.payload.length, 0);
});
