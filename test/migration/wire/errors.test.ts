// Every WireError code, each produced by a hand-made bad buffer, with the message naming the
// message type and the offending field.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  PROTOCOL_MINOR,
  FrameReader,
  MAX_PAGES_PAYLOAD,
  PageBatchReader,
  WireError,
  decodeAbort,
  decodeAccept,
  decodeComplete,
  decodeDiscard,
  decodeFrameHeader,
  decodeHello,
  decodeMessage,
  decodePageRequest,
  decodePages,
  decodePing,
  decodeRefuse,
  decodeResume,
  decodeRoundEnd,
  decodeState,
  encodeHello,
  sha256,
  FrameType,
  type WireErrorCode,
} from '../../../src/migration/wire/index.js';
import { CONFIG, SESSION_ID, VM_ID, cat, le, sampleHello } from './helpers.js';

function fails(fn: () => unknown, code: WireErrorCode, ...mentions: string[]): WireError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof WireError, `expected WireError ${code}, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  for (const m of mentions) assert.ok(caught.message.includes(m), `"${caught.message}" should mention "${m}"`);
  return caught;
}

/** A HELLO payload by hand, with overridable pieces. */
function hello(o: { magic?: string; major?: number; mode?: number; reserved?: number; count?: number; index?: number; pageSize?: number; ram?: number; name?: number[]; nameLength?: number; config?: number[]; configLength?: number; tail?: number[] } = {}): Uint8Array {
  const name = o.name ?? le.utf8('vm');
  const cfg = o.config ?? le.utf8(JSON.stringify(CONFIG));
  return cat(
    le.ascii(o.magic ?? 'TERNMIGR'), le.u16(o.major ?? 1), le.u16(0), VM_ID, le.fill(16, 0),
    [o.mode ?? 0, o.index ?? 0, o.count ?? 1, o.reserved ?? 0], le.u32(0), le.u32(o.pageSize ?? 4096), le.u64(o.ram ?? 1 << 20),
    le.u16(o.nameLength ?? name.length), name, le.u32(o.configLength ?? cfg.length), cfg, o.tail ?? [],
  );
}

test('hand-made HELLO helper is valid', () => {
  assert.equal(decodeHello(hello()).vmName, 'vm');
});

test('bad-magic', () => {
  fails(() => decodeHello(hello({ magic: 'TERNMIGX' })), 'bad-magic', 'HELLO', 'magic');
  fails(() => decodeAccept(cat(le.ascii('GET / HT'), le.fill(24, 0))), 'bad-magic', 'ACCEPT');
  const r = new FrameReader({ from: 'source' });
  r.push(Uint8Array.from(le.ascii('SSH-2.0-OpenSSH_9.6\r\n')));
  fails(() => r.next(), 'bad-magic', 'SSH-2.0-');
});

test('bad-version', () => {
  const e = fails(() => decodeHello(hello({ major: 2 })), 'bad-version', 'HELLO', `peer speaks tern migration protocol 2.0; this host speaks 1.${PROTOCOL_MINOR}`);
  assert.deepEqual(e.peerVersion, { major: 2, minor: 0 });
  fails(() => decodeRefuse(cat(le.ascii('TERNMIGR'), le.u16(0), le.u16(9), [5, 0], le.u16(0))), 'bad-version', 'REFUSE', '0.9');
});

test('oversized', () => {
  fails(() => decodeFrameHeader(Uint8Array.from([0x10, 0, 0, 0, ...le.u32(MAX_PAGES_PAYLOAD + 1)])), 'oversized', 'PAGES', 'length');
  fails(() => decodeFrameHeader(Uint8Array.from([0x40, 0, 0, 0, ...le.u32(9)])), 'oversized', 'PING');
  fails(() => decodeHello(hello({ nameLength: 300 })), 'oversized', 'HELLO', 'nameLength');
  fails(() => decodeHello(hello({ configLength: 70000 })), 'oversized', 'HELLO', 'configLength');
  fails(() => decodeState(cat(le.fill(32, 0), le.u32(16 * 1024 * 1024 + 1))), 'oversized', 'STATE', 'stateLength');
  fails(() => decodeAbort(cat([1, 0], le.u16(2000))), 'oversized', 'ABORT', 'textLength');
  fails(() => encodeHello(sampleHello({ vmName: 'x'.repeat(256) })), 'oversized', 'vmName');
});

test('unknown-type', () => {
  fails(() => decodeFrameHeader(Uint8Array.from([0x7f, 0, 0, 0, 0, 0, 0, 0])), 'unknown-type', '0x7f');
  fails(() => decodeMessage({ type: 0x05 as FrameType, flags: 0, payload: new Uint8Array(0) }), 'unknown-type', '0x05');
});

test('unexpected-type', () => {
  const r = new FrameReader({ from: 'destination' });
  r.push(Uint8Array.from([0x01, 0, 0, 0, 0, 0, 0, 0])); // a HELLO from the destination
  fails(() => r.next(), 'unexpected-type', 'HELLO');
});

test('reserved-bits', () => {
  fails(() => decodeFrameHeader(Uint8Array.from([0x40, 0, 1, 0, 8, 0, 0, 0])), 'reserved-bits', 'PING', 'reserved');
  fails(() => decodeFrameHeader(Uint8Array.from([0x40, 0x01, 0, 0, 8, 0, 0, 0])), 'reserved-bits', 'PING', 'flags');
  fails(() => decodeFrameHeader(Uint8Array.from([0x10, 0x02, 0, 0, 8, 0, 0, 0])), 'reserved-bits', 'PAGES', 'flags');
  fails(() => decodeMessage({ type: FrameType.Ping, flags: 0x80, payload: new Uint8Array(8) }), 'reserved-bits', 'PING');
  fails(() => decodeHello(hello({ reserved: 4 })), 'reserved-bits', 'HELLO', 'reserved');
  fails(() => decodePages(cat(le.u32(1), le.u32(0), le.u16(1), le.u16(1), le.u32(0), [1])), 'reserved-bits', 'PAGES', 'reserved');
  fails(() => decodeComplete(cat(le.u32(1), [0, 0, 9, 0])), 'reserved-bits', 'COMPLETE');
  fails(() => decodePageRequest(cat(le.u32(1), le.u16(1), le.u16(3), le.u32(0))), 'reserved-bits', 'PAGE_REQUEST');
});

test('truncated', () => {
  fails(() => decodeRoundEnd(new Uint8Array(27)), 'truncated', 'ROUND_END', 'bytes');
  fails(() => decodePing(new Uint8Array(7)), 'truncated', 'PING', 'nonce');
  fails(() => decodePages(new Uint8Array(11)), 'truncated', 'PAGES');
  fails(() => decodeHello(hello().subarray(0, 40)), 'truncated', 'HELLO', 'sessionId');
  fails(() => decodeComplete(cat(le.u32(1), [1, 0, 0, 0], le.fill(31, 0))), 'truncated', 'COMPLETE', 'ramDigest');
  const r = new FrameReader();
  r.push(Uint8Array.from([0x11, 0, 0, 0, 28, 0, 0, 0, 1, 2, 3]));
  assert.equal(r.next(), undefined);
  fails(() => r.end(), 'truncated', 'ROUND_END', '3 of 28');
});

test('trailing-bytes', () => {
  fails(() => decodePing(new Uint8Array(9)), 'trailing-bytes', 'PING');
  fails(() => decodeRoundEnd(new Uint8Array(29)), 'trailing-bytes', 'ROUND_END');
  fails(() => decodeHello(hello({ tail: [0] })), 'trailing-bytes', 'HELLO');
  fails(() => decodeAccept(cat(le.ascii('TERNMIGR'), le.u16(1), le.u16(0), SESSION_ID, le.u32(0), [0])), 'trailing-bytes', 'ACCEPT');
  fails(() => decodeComplete(cat(le.u32(1), [0, 0, 0, 0], le.fill(32, 1))), 'trailing-bytes', 'COMPLETE');
  fails(() => decodePages(cat(le.u32(1), le.u32(0), le.u16(1), le.u16(0), le.u32(0), [1], [0xaa])), 'trailing-bytes', 'PAGES', '1 bytes after the last of 1 entries');
  fails(() => decodeState(cat(sha256(Uint8Array.of(1)), le.u32(1), [1, 2])), 'trailing-bytes', 'STATE');
});

test('bad-count', () => {
  // count 2, one entry present
  fails(() => decodePages(cat(le.u32(1), le.u32(0), le.u16(2), le.u16(0), le.u32(0), [1])), 'bad-count', 'PAGES', 'entry[1]');
  // raw entry whose data is short
  fails(() => decodePages(cat(le.u32(1), le.u32(0), le.u16(1), le.u16(0), le.u32(0), [0], le.fill(100, 0))), 'bad-count', 'PAGES', 'entry[0].data');
  // delta entry that declares more bytes than remain
  fails(() => decodePages(cat(le.u32(1), le.u32(0), le.u16(1), le.u16(0), le.u32(0), [2], le.u32(50), [1, 2])), 'bad-count', 'PAGES', 'entry[0].data');
  fails(() => decodePages(cat(le.u32(1), le.u32(0), le.u16(0), le.u16(0))), 'bad-count', 'PAGES', 'count', '0 is outside');
  fails(() => decodePages(cat(le.u32(1), le.u32(0), le.u16(1025), le.u16(0))), 'bad-count', 'PAGES', 'count');
  fails(() => decodeState(cat(sha256(Uint8Array.of(1)), le.u32(5), [1])), 'bad-count', 'STATE', 'state');
  fails(() => decodeHello(hello({ nameLength: 200 }).subarray(0, 100)), 'bad-count', 'HELLO', 'vmName');
  fails(() => decodePageRequest(cat(le.u32(1), le.u16(3), le.u16(0), le.u32(7))), 'bad-count', 'PAGE_REQUEST', 'pages');
  fails(() => decodePageRequest(cat(le.u32(1), le.u16(65), le.u16(0))), 'bad-count', 'PAGE_REQUEST', 'count');
  fails(() => decodeResume(cat(SESSION_ID, le.u32(8), le.u32(3), le.u32(1), le.u32(0), le.u32(2))), 'bad-count', 'RESUME', 'pageCount');
  fails(() => decodeDiscard(cat(le.u32(8), le.u32(1), le.u32(2), le.u32(0), le.u32(1))), 'bad-count', 'DISCARD', 'runs');
  fails(() => decodeDiscard(cat(le.u32(8), le.u32(1), le.u32(0xffffffff))), 'bad-count', 'DISCARD', 'runCount');
});

test('bad-value', () => {
  fails(() => decodePages(cat(le.u32(1), le.u32(0), le.u16(1), le.u16(0), le.u32(0), [7])), 'bad-value', 'PAGES', 'entry[0].encoding', '7');
  fails(() => decodePages(cat(le.u32(1), le.u32(0), le.u16(1), le.u16(0), le.u32(0), [2], le.u32(0))), 'bad-value', 'PAGES', 'entry[0].length');
  fails(() => decodePages(cat(le.u32(1), le.u32(0), le.u16(1), le.u16(0), le.u32(0), [3], le.u32(4097))), 'bad-value', 'PAGES', 'entry[0].length');
  fails(() => decodePages(cat(le.u32(1), le.u32(0), le.u16(1), le.u16(0), le.u32(0), [1]), 0x01), 'bad-value', 'PAGES', 'requestId');
  fails(() => decodePages(cat(le.u32(1), le.u32(4), le.u16(1), le.u16(0), le.u32(0), [1]), 0), 'bad-value', 'PAGES', 'requestId');
  fails(() => new PageBatchReader({ ramPages: 16 }).decode(cat(le.u32(1), le.u32(0), le.u16(1), le.u16(0), le.u32(16), [1])), 'bad-value', 'PAGES', 'entry[0].page', '16');
  fails(() => decodeHello(hello({ mode: 3 })), 'bad-value', 'HELLO', 'mode');
  fails(() => decodeHello(hello({ pageSize: 8192 })), 'bad-value', 'HELLO', 'pageSize', '8192');
  fails(() => decodeHello(hello({ ram: 4097 })), 'bad-value', 'HELLO', 'ramBytes');
  fails(() => decodeHello(hello({ ram: 2 ** 53 + 2 ** 40 })), 'bad-value', 'HELLO', 'ramBytes');
  fails(() => decodeHello(hello({ count: 0 })), 'bad-value', 'HELLO', 'streamCount');
  fails(() => decodeHello(hello({ count: 2, index: 1 })), 'bad-value', 'HELLO', 'streamCount', 'multi-stream');
  fails(() => decodeHello(hello({ nameLength: 0, name: [] })), 'bad-value', 'HELLO', 'nameLength');
  fails(() => decodeRefuse(cat(le.ascii('TERNMIGR'), le.u16(1), le.u16(0), [0, 0], le.u16(0))), 'bad-value', 'REFUSE', 'reason');
  fails(() => decodeAbort(cat([9, 0], le.u16(0))), 'bad-value', 'ABORT', 'reason', '9');
  fails(() => decodeAccept(cat(le.ascii('TERNMIGR'), le.u16(1), le.u16(0), le.fill(16, 0), le.u32(0))), 'bad-value', 'ACCEPT', 'sessionId');
  fails(() => decodeComplete(cat(le.u32(1), [2, 0, 0, 0])), 'bad-value', 'COMPLETE', 'hasDigest');
  fails(() => decodePageRequest(cat(le.u32(0), le.u16(1), le.u16(0), le.u32(7))), 'bad-value', 'PAGE_REQUEST', 'requestId');
  // runs: overlapping, adjacent, past the end, empty
  fails(() => decodeDiscard(cat(le.u32(8), le.u32(4), le.u32(2), le.u32(0), le.u32(2), le.u32(1), le.u32(2))), 'bad-value', 'DISCARD', 'runs[1].first');
  fails(() => decodeDiscard(cat(le.u32(8), le.u32(3), le.u32(2), le.u32(0), le.u32(2), le.u32(2), le.u32(1))), 'bad-value', 'DISCARD', 'runs[1].first');
  fails(() => decodeDiscard(cat(le.u32(8), le.u32(2), le.u32(1), le.u32(7), le.u32(2))), 'bad-value', 'DISCARD', 'runs[0]', 'past ramPages');
  fails(() => decodeDiscard(cat(le.u32(8), le.u32(0), le.u32(1), le.u32(3), le.u32(0))), 'bad-value', 'DISCARD', 'runs[0].length');
  fails(() => decodeResume(cat(SESSION_ID, le.u32(0), le.u32(0), le.u32(0))), 'bad-value', 'RESUME', 'ramPages');
});

test('bad-text', () => {
  fails(() => decodeHello(hello({ name: [0x76, 0xff, 0x6d] })), 'bad-text', 'HELLO', 'vmName');
  fails(() => decodeAbort(cat([1, 0], le.u16(2), [0xc3, 0x28])), 'bad-text', 'ABORT', 'text');
});

test('bad-digest', () => {
  const blob = Uint8Array.from([1, 2, 3, 4]);
  const payload = cat(sha256(blob), le.u32(4), blob);
  payload[34 + 2 + 1] ^= 0x10; // corrupt one state byte
  fails(() => decodeState(payload), 'bad-digest', 'STATE', 'digest');
});

test('malformed', () => {
  fails(() => decodeHello(hello({ config: le.utf8('{"imageDigest": ') })), 'malformed', 'HELLO', 'config', 'not JSON');
  fails(() => decodeHello(hello({ config: le.utf8('[1,2]') })), 'malformed', 'HELLO', 'config');
  fails(() => decodeHello(hello({ config: le.utf8('{"bootArgs":"","devices":[]}') })), 'malformed', 'HELLO', 'config.imageDigest');
  fails(() => decodeHello(hello({ config: le.utf8('{"imageDigest":"x","bootArgs":"","devices":[{"slot":1}]}') })), 'malformed', 'HELLO', 'config.devices[0].kind');
  // deeply nested JSON is refused as a WireError, not a stack overflow
  const deep = '['.repeat(30000) + ']'.repeat(30000);
  fails(() => decodeHello(hello({ config: le.utf8(deep) })), 'malformed', 'HELLO', 'config');
});
