// The gateway link codec from hand-made byte buffers: every message round-trips, frames split at
// any byte boundary reassemble, and garbage only ever raises LinkError.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  LinkError,
  LinkReader,
  LinkType,
  MAX_DATA_BYTES,
  ResetReason,
  decodeLinkMessage,
  encodeAck,
  encodeAttach,
  encodeAttached,
  encodeData,
  encodeDetach,
  encodeError,
  encodeFin,
  encodeHello,
  encodeOpen,
  encodeOpened,
  encodePing,
  encodePong,
  encodeReset,
  encodeWelcome,
  type LinkMessage,
} from '../../src/net/link-protocol.js';

const uuid = Uint8Array.from({ length: 16 }, (_, i) => i + 1);

function decodeAll(bytes: Uint8Array): LinkMessage[] {
  const out: LinkMessage[] = [];
  new LinkReader().push(bytes, (m) => out.push(m));
  return out;
}

test('DATA is {len u32, type 8, connId u32, seq u64, bytes}, byte for byte', () => {
  const f = encodeData(0x01020304, 2 ** 32 + 5, Uint8Array.of(0xaa, 0xbb));
  assert.deepEqual([...f], [
    15, 0, 0, 0, // length: type + 12 + 2
    8, // DATA
    4, 3, 2, 1, // connId
    5, 0, 0, 0, 1, 0, 0, 0, // seq = 2^32 + 5
    0xaa, 0xbb,
  ]);
  const [m] = decodeAll(f);
  assert.equal(m!.type, LinkType.Data);
  if (m!.type !== LinkType.Data) return;
  assert.equal(m.connId, 0x01020304);
  assert.equal(m.seq, 2 ** 32 + 5);
  assert.deepEqual([...m.bytes], [0xaa, 0xbb]);
});

test('HELLO starts with the magic TGWL and version 1.0', () => {
  const f = encodeHello('a');
  assert.deepEqual([...f], [10, 0, 0, 0, 1, 0x54, 0x47, 0x57, 0x4c, 1, 0, 1, 0, 0x61]);
});

test('every message round-trips', () => {
  const frames = [
    encodeHello('host-a'),
    encodeWelcome(new Uint8Array(8).fill(7), 'gw'),
    encodeAttach(uuid, 3, 'kv1', [{ hostPort: 6379, vmPort: 6379 }, { hostPort: 8080, vmPort: 80 }], [{ connId: 9, vmPort: 6379, opened: true, inAcked: 12345 }]),
    encodeAttached(uuid, true, '', [{ connId: 9, known: true, outReceived: 77 }, { connId: 10, known: false, outReceived: 0 }]),
    encodeDetach(uuid),
    encodeOpen(1, uuid, 6379),
    encodeOpened(1),
    encodeData(1, 0, new Uint8Array(MAX_DATA_BYTES).fill(3)),
    encodeAck(1, 99),
    encodeFin(1, 100),
    encodeReset(1, ResetReason.Refused),
    encodePing(5),
    encodePong(5),
    encodeError('bad'),
  ];
  const all = Buffer.concat(frames);
  const msgs = decodeAll(all);
  assert.deepEqual(msgs.map((m) => m.type), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]);
  const attach = msgs[2]!;
  assert.ok(attach.type === LinkType.Attach);
  assert.equal(attach.epoch, 3);
  assert.equal(attach.name, 'kv1');
  assert.deepEqual(attach.exposures, [{ hostPort: 6379, vmPort: 6379 }, { hostPort: 8080, vmPort: 80 }]);
  assert.deepEqual(attach.conns, [{ connId: 9, vmPort: 6379, opened: true, inAcked: 12345 }]);
  const attached = msgs[3]!;
  assert.ok(attached.type === LinkType.Attached);
  assert.deepEqual(attached.conns, [{ connId: 9, known: true, outReceived: 77 }, { connId: 10, known: false, outReceived: 0 }]);
});

test('frames split at every byte boundary reassemble', () => {
  const all = Buffer.concat([encodeOpen(1, uuid, 80), encodeData(1, 0, Buffer.from('hello')), encodeFin(1, 5)]);
  for (let cut = 0; cut <= all.length; cut++) {
    const r = new LinkReader();
    const got: LinkMessage[] = [];
    r.push(all.subarray(0, cut), (m) => got.push(m));
    r.push(all.subarray(cut), (m) => got.push(m));
    assert.deepEqual(got.map((m) => m.type), [LinkType.Open, LinkType.Data, LinkType.Fin], `cut at ${cut}`);
    assert.equal(r.buffered, 0);
  }
});

test('malformed frames are LinkErrors naming the problem', () => {
  const reject = (b: number[], re: RegExp): void => assert.throws(() => decodeAll(Uint8Array.from(b)), (e: unknown) => e instanceof LinkError && re.test(e.message));
  reject([0, 0, 0, 0, 1], /length 0/);
  reject([0xff, 0xff, 0xff, 0x7f, 1], /outside/);
  reject([1, 0, 0, 0, 99], /unknown frame type/);
  reject([6, 0, 0, 0, 7, 1, 0, 0, 0, 9], /trailing|unexpected/); // OPENED with an extra byte
  reject([3, 0, 0, 0, 9, 1, 0], /truncated|needs/); // ACK cut short
  reject([6, 0, 0, 0, 11, 1, 0, 0, 0, 9], /reset reason/);
  reject([10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 1, 0, 0x61], /magic/);
  assert.throws(() => decodeLinkMessage(LinkType.Attach, new Uint8Array(30)), LinkError);
});

test('random garbage never raises anything but LinkError', () => {
  let seed = 12345;
  const rnd = (): number => {
    seed = (seed * 1103515245 + 12345) >>> 0;
    return seed >>> 16;
  };
  let errors = 0;
  for (let i = 0; i < 3000; i++) {
    const n = 1 + (rnd() % 64);
    const b = Uint8Array.from({ length: n }, () => rnd() & 0xff);
    // Plausible lengths and types half the time, so decoders are reached.
    if (i % 2 === 0 && n >= 5) {
      b[0] = n - 4;
      b[1] = b[2] = b[3] = 0;
      b[4] = 1 + (rnd() % 14);
    }
    try {
      decodeAll(b);
    } catch (e) {
      assert.ok(e instanceof LinkError, `unexpected ${String(e)}`);
      errors++;
    }
  }
  assert.ok(errors > 100);
});
