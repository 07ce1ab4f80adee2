// Every message: round trip through encode/decode, and a buffer built by hand from the tables in
// docs/migration-protocol.md that must equal the encoder's bytes and decode to the same value.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  PROTOCOL_MINOR,
  Capability,
  FrameType,
  PROTOCOL_VERSION,
  PageBatchBuilder,
  PageEncoding,
  decodeAbort,
  decodeAccept,
  decodeActivated,
  decodeResumedAt,
  decodePausedAt,
  decodeCommitted,
  decodeComplete,
  decodeDiscard,
  decodeWritten,
  decodeFrameHeader,
  decodeHello,
  decodeMessage,
  decodePageRequest,
  decodePages,
  decodePing,
  decodePong,
  decodeRefuse,
  decodeResume,
  decodeRoundEnd,
  decodeState,
  encodeAbort,
  encodeAccept,
  encodeActivated,
  encodeResumedAt,
  encodePausedAt,
  encodeCommitted,
  encodeComplete,
  encodeDiscard,
  encodeWritten,
  encodeHello,
  encodeMessage,
  encodePageRequest,
  encodePing,
  encodePong,
  encodeRefuse,
  encodeResume,
  encodeRoundEnd,
  encodeState,
  encodeStateParts,
  pageRunsFromList,
  pageRunsFromMap,
  forEachRunPage,
  runsContain,
  sha256,
  FrameReader,
  WireError,
  MAX_IMAGE_BYTES,
  capabilityNames,
  decodeImage,
  encodeImage,
  decodePageRun,
  decodePageRunHead,
  encodePageRun,
  writePageRunHead,
  PAGE_RUN_HEAD_BYTES,
  MAX_RUN_PAGES,
  MAX_WARM_SAMPLES,
  MAX_WARM_SAMPLE_BYTES,
  encodeWarmTraffic,
  decodeWarmTraffic,
  encodeConsole,
  decodeConsole,
  MAX_CONSOLE_BYTES,
  maxPayloadFor,
  senderOf,
  type Message,
  type PageBatch,
} from '../../../src/migration/wire/index.js';
import { CONFIG, SESSION_ID, VM_ID, cat, frame, le, pageOf, sampleHello } from './helpers.js';

const payloadOf = (f: Uint8Array): Uint8Array => f.subarray(8);

function roundTrip(m: Message): Message {
  const bytes = encodeMessage(m);
  const h = decodeFrameHeader(bytes);
  assert.equal(h.type, m.type);
  assert.equal(h.length, bytes.length - 8);
  return decodeMessage({ type: h.type, flags: h.flags, payload: bytes.subarray(8) });
}

function entries(b: PageBatch): Array<{ page: number; encoding: number; data: number[] }> {
  return [...b].map((e) => ({ page: e.page, encoding: e.encoding, data: Array.from(e.data) }));
}

test('HELLO: hand-made bytes match the documented layout', () => {
  const name = le.utf8('redis-1');
  const cfg = le.utf8(JSON.stringify(CONFIG));
  const payload = cat(
    le.ascii('TERNMIGR'), le.u16(1), le.u16(PROTOCOL_MINOR), // 0 magic, 8 major, 10 minor
    VM_ID, // 12 vm uuid
    le.fill(16, 0), // 28 session id (new session)
    [0, 0, 1, 0], // 44 mode precopy, 45 stream index, 46 stream count, 47 reserved
    le.u32(Capability.ZeroPages | Capability.Xbzrle), // 48 capabilities = 0x03
    le.u32(4096), // 52 page size
    le.u32(128 * 1024 * 1024), le.u32(0), // 56 ram bytes lo, hi
    le.u16(name.length), name, // 64 name length, 66 name
    le.u32(cfg.length), cfg, // 66+N config length, 70+N config JSON
  );
  assert.equal(payload.length, 70 + name.length + cfg.length);
  assert.deepEqual(encodeHello(sampleHello()), frame(0x01, payload));
  const h = decodeHello(payload);
  assert.deepEqual(h, sampleHello());
});

test('HELLO: large RAM uses the high word; joining stream carries the session id', () => {
  const ram = 6 * 2 ** 32; // 24 GiB: high word 6
  const m = sampleHello({ ramBytes: ram, mode: 'hybrid', streamIndex: 2, streamCount: 4, sessionId: SESSION_ID, capabilities: Capability.MultiStream | Capability.PostcopyRecovery | (1 << 20) });
  const bytes = encodeHello(m);
  const p = payloadOf(bytes);
  assert.deepEqual(Array.from(p.subarray(44, 48)), [2, 2, 4, 0]);
  assert.deepEqual(Array.from(p.subarray(56, 64)), [0, 0, 0, 0, 6, 0, 0, 0]);
  assert.deepEqual(Array.from(p.subarray(48, 52)), le.u32(0x100018)); // unknown bit 20 travels
  assert.deepEqual(decodeHello(p), m);
});

test('HELLO: unknown config keys survive; a UTF-8 name with a BOM round-trips', () => {
  const m = sampleHello({ vmName: '\ufeffwebserver-ü-日本', config: { ...CONFIG, future: { x: [1, 2] } } });
  assert.deepEqual(roundTrip(m), m);
});

test('ACCEPT: hand-made bytes', () => {
  const payload = cat(le.ascii('TERNMIGR'), le.u16(1), le.u16(PROTOCOL_MINOR), SESSION_ID, le.u32(0x11));
  assert.equal(payload.length, 32);
  const m = { version: PROTOCOL_VERSION, sessionId: SESSION_ID, capabilities: 0x11 };
  assert.deepEqual(encodeAccept(m), frame(0x02, payload));
  assert.deepEqual(decodeAccept(payload), { type: FrameType.Accept, ...m });
});

test('REFUSE: hand-made bytes; reason codes 1..9', () => {
  const text = le.utf8('VM redis-1 already exists here');
  const payload = cat(le.ascii('TERNMIGR'), le.u16(1), le.u16(PROTOCOL_MINOR), [2, 0], le.u16(text.length), text);
  const m = { version: PROTOCOL_VERSION, reason: 'exists' as const, text: 'VM redis-1 already exists here' };
  assert.deepEqual(encodeRefuse(m), frame(0x03, payload));
  assert.deepEqual(decodeRefuse(payload), { type: FrameType.Refuse, ...m });
  const reasons = ['busy', 'exists', 'too-big', 'config-mismatch', 'version', 'bad-request', 'unknown-session', 'capability', 'internal'] as const;
  reasons.forEach((reason, i) => {
    const p = payloadOf(encodeRefuse({ version: PROTOCOL_VERSION, reason, text: '' }));
    assert.equal(p[12], i + 1);
    assert.equal(decodeRefuse(p).reason, reason);
  });
});

test('REFUSE/ABORT: long text is cut at a character boundary to 1024 bytes', () => {
  const long = 'é'.repeat(600); // 1200 bytes
  const r = decodeRefuse(payloadOf(encodeRefuse({ version: PROTOCOL_VERSION, reason: 'busy', text: long })));
  assert.equal(r.text, 'é'.repeat(512));
  const a = decodeAbort(payloadOf(encodeAbort({ reason: 'internal', text: 'x' + long })));
  assert.equal(a.text, 'x' + 'é'.repeat(511));
});

test('ABORT: hand-made bytes; reason codes 1..8', () => {
  const text = le.utf8('operator cancelled');
  const payload = cat([1, 0], le.u16(text.length), text);
  assert.deepEqual(encodeAbort({ reason: 'cancelled', text: 'operator cancelled' }), frame(0x04, payload));
  assert.deepEqual(decodeAbort(payload), { type: FrameType.Abort, reason: 'cancelled', text: 'operator cancelled' });
  const reasons = ['cancelled', 'timeout', 'protocol', 'io', 'digest-mismatch', 'state-rejected', 'resources', 'internal'] as const;
  reasons.forEach((reason, i) => assert.equal(payloadOf(encodeAbort({ reason, text: '' }))[0], i + 1));
});

test('PAGES: hand-made batch with every encoding decodes to views', () => {
  const raw = pageOf(1);
  const delta = [9, 8, 7];
  const comp = [1, 2, 3, 4, 5];
  const payload = cat(
    le.u32(7), le.u32(0), le.u16(4), le.u16(0), // round 7, request 0, count 4, reserved
    le.u32(100), [0], raw, // raw
    le.u32(101), [1], // zero
    le.u32(102), [2], le.u32(delta.length), delta, // delta
    le.u32(0xfffffffe), [3], le.u32(comp.length), comp, // compressed
  );
  const b = decodePages(payload, 0);
  assert.equal(b.round, 7);
  assert.equal(b.count, 4);
  assert.equal(b.demand, false);
  assert.deepEqual(entries(b), [
    { page: 100, encoding: PageEncoding.Raw, data: Array.from(raw) },
    { page: 101, encoding: PageEncoding.Zero, data: [] },
    { page: 102, encoding: PageEncoding.Delta, data: delta },
    { page: 0xfffffffe, encoding: PageEncoding.Compressed, data: comp },
  ]);
  // views, not copies
  assert.equal(b.data(0).buffer, payload.buffer);
  assert.equal(b.dataOffset(0), 12 + 5);
  assert.equal(b.dataOffset(2), 12 + 5 + 4096 + 5 + 5 + 4);
  // the builder produces the same bytes
  const builder = new PageBatchBuilder(4);
  builder.begin(7).addRaw(100, raw).addZero(101).addDelta(102, Uint8Array.from(delta)).addCompressed(0xfffffffe, Uint8Array.from(comp));
  assert.deepEqual(builder.finish(), frame(0x10, payload));
});

test('PAGES: demand batch sets flag bit 0 and the request id', () => {
  const payload = cat(le.u32(3), le.u32(42), le.u16(1), le.u16(0), le.u32(5), [1]);
  const b = new PageBatchBuilder(1);
  assert.deepEqual(b.begin(3, 42).addZero(5).finish(), frame(0x10, payload, 0x01));
  const d = decodePages(payload, 0x01);
  assert.equal(d.demand, true);
  assert.equal(d.requestId, 42);
  const m = roundTrip({ type: FrameType.Pages, batch: d });
  assert.ok(m.type === FrameType.Pages);
  assert.equal(m.batch.requestId, 42);
  assert.deepEqual(entries(m.batch), entries(d));
});

test('ROUND_END: hand-made bytes', () => {
  const m = { round: 3, pagesSent: 1200, pagesDirtied: 310, durationUs: 2 ** 33 + 5, bytes: 4_900_000 };
  const payload = cat(le.u32(3), le.u32(1200), le.u32(310), le.u32(5), le.u32(2), le.u32(4_900_000), le.u32(0));
  assert.equal(payload.length, 28);
  assert.deepEqual(encodeRoundEnd(m), frame(0x11, payload));
  assert.deepEqual(decodeRoundEnd(payload), { type: FrameType.RoundEnd, ...m });
});

test('STATE: hand-made bytes, digest verified, blob is a view', () => {
  const blob = Uint8Array.from({ length: 300 }, (_, i) => i & 0xff);
  const digest = sha256(blob);
  const payload = cat(digest, le.u32(blob.length), blob);
  assert.deepEqual(encodeState({ state: blob }), frame(0x12, payload));
  const s = decodeState(payload);
  assert.deepEqual(s.state, blob);
  assert.deepEqual(s.digest, digest);
  assert.equal(s.state.buffer, payload.buffer);
  const [head, body] = encodeStateParts(blob);
  assert.equal(head.length, 44);
  assert.equal(body, blob); // not copied
  assert.deepEqual(cat(head, body), encodeState({ state: blob }));
});

test('IMAGE (1.2): hand-made bytes, digest verified, bounds', () => {
  const image = Uint8Array.from({ length: 777 }, (_, i) => (i * 13) & 0xff);
  const digest = sha256(image);
  const payload = cat(digest, le.u32(image.length), image);
  assert.deepEqual(encodeImage({ image }), frame(0x15, payload));
  const m = decodeImage(payload);
  assert.deepEqual(m.image, image);
  assert.deepEqual(m.digest, digest);
  const bad = payload.slice();
  bad[40] ^= 0xff;
  assert.throws(() => decodeImage(bad), (e: unknown) => e instanceof WireError && e.code === 'bad-digest' && /image was corrupted in transit/.test(e.message));
  assert.throws(() => decodeImage(cat(digest, le.u32(0))), (e: unknown) => e instanceof WireError && e.code === 'bad-value');
  assert.throws(() => decodeImage(cat(digest, le.u32(MAX_IMAGE_BYTES + 1))), (e: unknown) => e instanceof WireError && e.code === 'oversized');
  assert.throws(() => decodeImage(cat(digest, le.u32(778), image)), (e: unknown) => e instanceof WireError);
  assert.throws(() => encodeImage({ image: new Uint8Array(0) }), (e: unknown) => e instanceof WireError && e.code === 'bad-value');
  assert.equal(maxPayloadFor(FrameType.Image), 36 + MAX_IMAGE_BYTES);
  assert.equal(senderOf(FrameType.Image), 'source');
  assert.deepEqual(capabilityNames(Capability.WarmImage), ['warm-image']);
});

test('DISCARD: hand-made bytes', () => {
  const runs = pageRunsFromList([5, 6, 7, 20], 64);
  const payload = cat(le.u32(64), le.u32(4), le.u32(2), le.u32(5), le.u32(3), le.u32(20), le.u32(1));
  assert.deepEqual(encodeDiscard({ runs }), frame(0x13, payload));
  assert.deepEqual(decodeDiscard(payload), { type: FrameType.Discard, runs });
});

test('COMPLETE: hand-made bytes with and without a RAM digest', () => {
  const d = sha256(new Uint8Array([1]));
  assert.deepEqual(encodeComplete({ round: 9, ramDigest: undefined }), frame(0x20, cat(le.u32(9), [0, 0, 0, 0])));
  assert.deepEqual(encodeComplete({ round: 9, ramDigest: d }), frame(0x20, cat(le.u32(9), [1, 0, 0, 0], d)));
  assert.deepEqual(decodeComplete(cat(le.u32(9), [1, 0, 0, 0], d)), { type: FrameType.Complete, round: 9, ramDigest: d });
  assert.deepEqual(decodeComplete(cat(le.u32(9), [0, 0, 0, 0])), { type: FrameType.Complete, round: 9, ramDigest: undefined });
});

test('COMMITTED: hand-made bytes with and without a RAM digest', () => {
  const d = sha256(new Uint8Array([2]));
  assert.deepEqual(encodeCommitted({ ramDigest: undefined }), frame(0x21, [0, 0, 0, 0]));
  assert.deepEqual(encodeCommitted({ ramDigest: d }), frame(0x21, cat([1, 0, 0, 0], d)));
  assert.deepEqual(decodeCommitted(cat([1, 0, 0, 0], d)).ramDigest, d);
  assert.equal(decodeCommitted(new Uint8Array(4)).ramDigest, undefined);
});

test('ACTIVATED: hand-made bytes', () => {
  assert.deepEqual(encodeActivated({ switchoverUs: 1234 }), frame(0x22, le.u64(1234)));
  assert.deepEqual(decodeActivated(Uint8Array.from(le.u64(1234))), { type: FrameType.Activated, switchoverUs: 1234 });
});

test('RESUMED_AT (1.3): hand-made bytes; exactly 24 bytes; a boot id of 16 bytes', () => {
  const id = Uint8Array.from({ length: 16 }, (_, i) => i + 1);
  const payload = cat(id, le.u64(123_456_789));
  assert.deepEqual(encodeResumedAt({ bootId: id, resumedUs: 123_456_789 }), frame(0x24, payload));
  assert.deepEqual(decodeResumedAt(payload), { type: FrameType.ResumedAt, bootId: id, resumedUs: 123_456_789 });
  assert.throws(() => decodeResumedAt(payload.subarray(0, 23)), WireError);
  assert.throws(() => decodeResumedAt(cat(payload, [0])), WireError);
  assert.throws(() => encodeResumedAt({ bootId: id.subarray(0, 15), resumedUs: 1 }), WireError);
});

test('PAUSED_AT (1.4): hand-made bytes; exactly 32 bytes; sentUs not before pausedUs', () => {
  const id = Uint8Array.from({ length: 16 }, (_, i) => 0xf0 - i);
  const payload = cat(id, le.u64(5_000_000), le.u64(5_001_250));
  assert.deepEqual(encodePausedAt({ bootId: id, pausedUs: 5_000_000, sentUs: 5_001_250 }), frame(0x25, payload));
  assert.deepEqual(decodePausedAt(payload), { type: FrameType.PausedAt, bootId: id, pausedUs: 5_000_000, sentUs: 5_001_250 });
  assert.throws(() => decodePausedAt(payload.subarray(0, 31)), WireError);
  assert.throws(() => decodePausedAt(cat(payload, [0])), WireError);
  assert.throws(() => decodePausedAt(cat(id, le.u64(5_000_001), le.u64(5_000_000))), /sentUs 5000000 is before pausedUs 5000001/);
  assert.throws(() => encodePausedAt({ bootId: id, pausedUs: 2, sentUs: 1 }), WireError);
  assert.throws(() => encodePausedAt({ bootId: id.subarray(0, 15), pausedUs: 1, sentUs: 1 }), WireError);
});

test('PAGE_RUN (1.5): hand-made bytes; count 1..256 and the length agree; pages inside RAM', () => {
  const data = cat(pageOf(1), pageOf(2));
  const payload = cat(le.u32(3), le.u32(40), le.u32(2), data);
  const bytes = frame(0x16, payload);
  assert.deepEqual(encodePageRun({ round: 3, first: 40, count: 2, data }), bytes);
  const m = decodePageRun(payload, 42);
  assert.deepEqual({ ...m, data: Array.from(m.data) }, { type: FrameType.PageRun, round: 3, first: 40, count: 2, data: Array.from(data) });
  assert.equal(m.data.buffer, payload.buffer, 'the data is a view');
  // The head alone (what a receiver has before the data): the same fields, checked against the frame length.
  const head = new Uint8Array(PAGE_RUN_HEAD_BYTES);
  writePageRunHead(head, 0, 3, 40, 2);
  assert.deepEqual(head, bytes.subarray(0, PAGE_RUN_HEAD_BYTES));
  assert.deepEqual(decodePageRunHead(head.subarray(8), 12 + 2 * 4096, 42), { round: 3, first: 40, count: 2 });
  assert.throws(() => decodePageRunHead(head.subarray(8, 19), 12 + 2 * 4096), (e: unknown) => e instanceof WireError && e.code === 'truncated');
  assert.throws(() => decodePageRunHead(head.subarray(8), 12 + 3 * 4096), (e: unknown) => e instanceof WireError && e.code === 'bad-count' && /needs a 8204-byte payload, the frame has 12300/.test(e.message));
  assert.throws(() => decodePageRun(payload, 41), (e: unknown) => e instanceof WireError && e.code === 'bad-value' && /pages 40\.\.41 are outside guest RAM \(41 pages\)/.test(e.message));
  assert.throws(() => decodePageRun(cat(le.u32(3), le.u32(40), le.u32(0)), 42), (e: unknown) => e instanceof WireError && e.code === 'bad-count');
  assert.throws(() => writePageRunHead(head, 0, 1, 0, MAX_RUN_PAGES + 1), (e: unknown) => e instanceof WireError && e.code === 'bad-count');
  assert.throws(() => writePageRunHead(head, 0, 1, 0xffff_ffff, 2), (e: unknown) => e instanceof WireError && e.code === 'bad-value');
  assert.throws(() => encodePageRun({ round: 1, first: 0, count: 2, data: pageOf(1) }), WireError);
  // The frame bound is a full run: one byte more is refused from the header.
  assert.equal(maxPayloadFor(FrameType.PageRun), 12 + MAX_RUN_PAGES * 4096);
  assert.equal(senderOf(FrameType.PageRun), 'source');
  assert.deepEqual(capabilityNames(Capability.PageRuns), ['page-runs']);
});

test('WARM_TRAFFIC (1.6): hand-made bytes; count, lengths and ports checked', () => {
  const get = new TextEncoder().encode('GET / HTTP/1.1\r\n\r\n');
  const payload = cat(le.u16(2), le.u16(0), le.u32(8080), le.u16(get.length), get, le.u32(7777), le.u16(0));
  const samples = [{ vmPort: 8080, bytes: get }, { vmPort: 7777, bytes: new Uint8Array(0) }];
  assert.deepEqual(encodeWarmTraffic({ samples }), frame(0x17, payload));
  const m = decodeWarmTraffic(payload);
  assert.deepEqual({ type: m.type, samples: m.samples.map((x) => ({ vmPort: x.vmPort, bytes: Array.from(x.bytes) })) }, { type: FrameType.WarmTraffic, samples: samples.map((x) => ({ vmPort: x.vmPort, bytes: Array.from(x.bytes) })) });
  assert.deepEqual(decodeWarmTraffic(cat(le.u16(0), le.u16(0))), { type: FrameType.WarmTraffic, samples: [] });
  const bad = (p: Uint8Array, code: string, re: RegExp): void => {
    assert.throws(() => decodeWarmTraffic(p), (e: unknown) => e instanceof WireError && e.code === code && re.test(e.message), `${code} ${re}`);
  };
  bad(cat(le.u16(MAX_WARM_SAMPLES + 1), le.u16(0)), 'bad-count', /17 samples exceed 16/);
  bad(cat(le.u16(0), le.u16(1)), 'reserved-bits', /reserved/);
  bad(cat(le.u16(1), le.u16(0), le.u32(1), le.u16(MAX_WARM_SAMPLE_BYTES + 1), new Uint8Array(MAX_WARM_SAMPLE_BYTES + 1)), 'bad-value', /513 bytes exceeds 512/);
  bad(cat(le.u16(1), le.u16(0), le.u32(1), le.u16(10), new Uint8Array(9)), 'bad-count', /declares 10 bytes/);
  bad(cat(le.u16(2), le.u16(0), le.u32(5), le.u16(0), le.u32(5), le.u16(0)), 'bad-value', /port 5 has two samples/);
  bad(cat(le.u16(1), le.u16(0), le.u32(5)), 'truncated', /needs 2 bytes/);
  bad(cat(payload, [0]), 'trailing-bytes', /1 unexpected bytes/);
  assert.throws(() => encodeWarmTraffic({ samples: [{ vmPort: 1, bytes: new Uint8Array(MAX_WARM_SAMPLE_BYTES + 1) }] }), WireError);
  assert.throws(() => encodeWarmTraffic({ samples: Array.from({ length: MAX_WARM_SAMPLES + 1 }, (_, i) => ({ vmPort: i, bytes: new Uint8Array(0) })) }), WireError);
  assert.equal(maxPayloadFor(FrameType.WarmTraffic), 4 + MAX_WARM_SAMPLES * (6 + MAX_WARM_SAMPLE_BYTES));
  assert.equal(senderOf(FrameType.WarmTraffic), 'source');
  assert.deepEqual(capabilityNames(Capability.WarmTraffic), ['warm-traffic']);
});

test('CONSOLE (1.7): hand-made bytes; the end and the 1 MiB bound checked', () => {
  const text = new TextEncoder().encode('munch: t=1.000s\n');
  const payload = cat(le.u32(1000), le.u32(0), text);
  assert.deepEqual(encodeConsole({ end: 1000, bytes: text }), frame(0x18, payload));
  const m = decodeConsole(payload);
  assert.deepEqual({ type: m.type, end: m.end, bytes: Array.from(m.bytes) }, { type: FrameType.Console, end: 1000, bytes: Array.from(text) });
  assert.deepEqual(decodeConsole(cat(le.u32(0), le.u32(0))), { type: FrameType.Console, end: 0, bytes: new Uint8Array(0) });
  assert.equal(decodeConsole(cat(le.u32(5), le.u32(1), text)).end, 2 ** 32 + 5, 'end is a u64');
  const bad = (p: Uint8Array, code: string, re: RegExp): void => {
    assert.throws(() => decodeConsole(p), (e: unknown) => e instanceof WireError && e.code === code && re.test(e.message), `${code} ${re}`);
  };
  bad(cat(le.u32(3), le.u32(0), text), 'bad-value', /end 3 is before the start of 16 bytes/);
  bad(cat(le.u32(0), le.u32(0x0020_0000), text), 'bad-value', /exceeds 2\^53/);
  bad(cat(le.u32(0)), 'truncated', /needs/);
  bad(cat(le.u32(0), le.u32(1), new Uint8Array(MAX_CONSOLE_BYTES + 1)), 'oversized', /1048577 bytes of history exceed 1048576/);
  assert.throws(() => encodeConsole({ end: MAX_CONSOLE_BYTES + 1, bytes: new Uint8Array(MAX_CONSOLE_BYTES + 1) }), WireError);
  assert.throws(() => encodeConsole({ end: 2, bytes: text }), WireError);
  assert.throws(() => encodeConsole({ end: -1, bytes: new Uint8Array(0) }), WireError);
  assert.equal(maxPayloadFor(FrameType.Console), 8 + MAX_CONSOLE_BYTES);
  assert.equal(senderOf(FrameType.Console), 'source');
  assert.deepEqual(capabilityNames(Capability.ConsolePrecopy), ['console-precopy']);
});

test('WRITTEN (1.8): hand-made bytes, the layout of DISCARD; canonical runs checked', () => {
  const runs = pageRunsFromList([0, 1, 2, 3, 40], 64);
  const payload = cat(le.u32(64), le.u32(5), le.u32(2), le.u32(0), le.u32(4), le.u32(40), le.u32(1));
  assert.deepEqual(encodeWritten({ runs }), frame(0x19, payload));
  assert.deepEqual(decodeWritten(payload), { type: FrameType.Written, runs });
  assert.deepEqual(decodeMessage({ type: FrameType.Written, flags: 0, payload }), { type: FrameType.Written, runs });
  const bad = (p: Uint8Array, code: string, re: RegExp): void => {
    assert.throws(() => decodeWritten(p), (e: unknown) => e instanceof WireError && e.code === code && e.messageType === 'WRITTEN' && re.test(e.message), `${code} ${re}`);
  };
  bad(cat(le.u32(64), le.u32(5), le.u32(2), le.u32(0), le.u32(4), le.u32(3), le.u32(1)), 'bad-value', /overlaps, touches or precedes/);
  bad(cat(le.u32(64), le.u32(6), le.u32(2), le.u32(0), le.u32(4), le.u32(40), le.u32(1)), 'bad-count', /the runs hold 5 pages/);
  bad(cat(le.u32(64), le.u32(1), le.u32(1), le.u32(63), le.u32(2)), 'bad-value', /past ramPages 64/);
  bad(cat(le.u32(64), le.u32(1), le.u32(0xffffffff)), 'bad-count', /exceeds/);
  bad(cat(le.u32(64), le.u32(1), le.u32(1), le.u32(0)), 'bad-count', /declares 8 bytes at offset 12, but the 16-byte payload has 4 left/);
  assert.equal(maxPayloadFor(FrameType.Written), maxPayloadFor(FrameType.Discard));
  assert.equal(senderOf(FrameType.Written), 'source');
  assert.deepEqual(capabilityNames(Capability.WrittenPages), ['written-pages']);
});

test('PAGE_REQUEST: hand-made bytes', () => {
  const payload = cat(le.u32(17), le.u16(3), le.u16(0), le.u32(10), le.u32(11), le.u32(4000));
  const m = { requestId: 17, pages: Uint32Array.from([10, 11, 4000]) };
  assert.deepEqual(encodePageRequest(m), frame(0x30, payload));
  assert.deepEqual(decodePageRequest(payload), { type: FrameType.PageRequest, ...m });
});

test('RESUME: hand-made bytes; runs from a presence map', () => {
  const presence = Uint8Array.from([1, 0, 0, 1, 1, 0, 1, 0]); // absent: 1,2,5,7
  const runs = pageRunsFromMap(presence, 8, 'zero');
  assert.deepEqual(Array.from(runs.runs), [1, 2, 5, 1, 7, 1]);
  assert.equal(runs.pageCount, 4);
  const payload = cat(SESSION_ID, le.u32(8), le.u32(4), le.u32(3), le.u32(1), le.u32(2), le.u32(5), le.u32(1), le.u32(7), le.u32(1));
  assert.deepEqual(encodeResume({ sessionId: SESSION_ID, runs }), frame(0x31, payload));
  const r = decodeResume(payload);
  assert.deepEqual(r, { type: FrameType.Resume, sessionId: SESSION_ID, runs });
  const pages: number[] = [];
  forEachRunPage(r.runs, (p) => pages.push(p));
  assert.deepEqual(pages, [1, 2, 5, 7]);
  assert.equal(runsContain(r.runs, 2), true);
  assert.equal(runsContain(r.runs, 3), false);
  assert.equal(runsContain(r.runs, 7), true);
});

test('RESUME: empty set (nothing missing) and the whole of RAM', () => {
  const none = pageRunsFromMap(new Uint8Array(16).fill(1), 16, 'zero');
  assert.deepEqual(roundTrip({ type: FrameType.Resume, sessionId: SESSION_ID, runs: none }), { type: FrameType.Resume, sessionId: SESSION_ID, runs: none });
  const all = pageRunsFromMap(new Uint8Array(32768), 32768, 'zero');
  assert.deepEqual(Array.from(all.runs), [0, 32768]);
  assert.equal(encodeResume({ sessionId: SESSION_ID, runs: all }).length, 8 + 28 + 8);
});

test('PING/PONG: hand-made bytes, full u64 range', () => {
  assert.deepEqual(encodePing({ nonce: 0x0102030405060708n }), frame(0x40, [8, 7, 6, 5, 4, 3, 2, 1]));
  assert.deepEqual(encodePong({ nonce: 0xffffffffffffffffn }), frame(0x41, le.fill(8, 0xff)));
  assert.deepEqual(decodePing(Uint8Array.from([8, 7, 6, 5, 4, 3, 2, 1])), { type: FrameType.Ping, nonce: 0x0102030405060708n });
  assert.deepEqual(decodePong(new Uint8Array(8).fill(0xff)), { type: FrameType.Pong, nonce: 0xffffffffffffffffn });
});

test('every message round-trips through encodeMessage/decodeMessage and the framer', () => {
  const builder = new PageBatchBuilder(3);
  builder.begin(2).addRaw(1, pageOf(3)).addZero(2).addDelta(3, Uint8Array.from([1, 2]));
  const pages = decodePages(builder.finish().slice(8), 0);
  const msgs: Message[] = [
    sampleHello(),
    { type: FrameType.Accept, version: PROTOCOL_VERSION, sessionId: SESSION_ID, capabilities: 1 },
    { type: FrameType.Refuse, version: PROTOCOL_VERSION, reason: 'too-big', text: 'needs 4 GiB, 1 GiB free' },
    { type: FrameType.Abort, reason: 'timeout', text: 'no PONG for 10 s' },
    { type: FrameType.Pages, batch: pages },
    { type: FrameType.RoundEnd, round: 2, pagesSent: 3, pagesDirtied: 0, durationUs: 99, bytes: 4200 },
    { type: FrameType.State, state: Uint8Array.from([1, 2, 3]), digest: sha256(Uint8Array.from([1, 2, 3])) },
    { type: FrameType.Discard, runs: pageRunsFromList([3, 1, 2, 9], 10) },
    { type: FrameType.Complete, round: 3, ramDigest: sha256(new Uint8Array(0)) },
    { type: FrameType.Committed, ramDigest: undefined },
    { type: FrameType.Activated, switchoverUs: 0 },
    { type: FrameType.ResumedAt, bootId: new Uint8Array(16).fill(9), resumedUs: 2 ** 40 },
    { type: FrameType.PageRequest, requestId: 1, pages: Uint32Array.from([9]) },
    { type: FrameType.Resume, sessionId: SESSION_ID, runs: pageRunsFromList([0], 1) },
    { type: FrameType.Ping, nonce: 5n },
    { type: FrameType.Pong, nonce: 5n },
    { type: FrameType.Image, image: Uint8Array.from([7, 8, 9]), digest: sha256(Uint8Array.from([7, 8, 9])) },
    { type: FrameType.PageRun, round: 1, first: 7, count: 1, data: pageOf(7) },
  ];
  const stream = cat(...msgs.map(encodeMessage));
  const reader = new FrameReader();
  const got = [...reader.feed(stream)].map((f) => decodeMessage(f));
  reader.end();
  assert.equal(got.length, msgs.length);
  for (let i = 0; i < msgs.length; i++) {
    const a = msgs[i]!;
    const b = got[i]!;
    if (a.type === FrameType.Pages && b.type === FrameType.Pages) assert.deepEqual(entries(b.batch), entries(a.batch));
    else assert.deepEqual(b, a);
    if (a.type !== FrameType.Pages) assert.deepEqual(roundTrip(a), a);
  }
});
