// A live destination fed hostile encoded pages: garbage XBZRLE deltas, garbage and lying
// PAGES_COMPRESSED blocks (seeded), encodings the session did not grant, a compressed batch that
// hides a page beyond RAM. Every session ends with ABORT(protocol) or a close, the server keeps
// serving, nothing stays reserved, and a real migration with the encodings still completes.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { GuestRam } from '../../src/machine/memory/ram.js';
import { compressor } from '../../src/migration/encoding/compress.js';
import {
  Capability,
  CompressionCode,
  FrameType,
  PROTOCOL_VERSION,
  PageBatchBuilder,
  decodeAbort,
  encodeHello,
  encodePagesCompressed,
  type Frame,
} from '../../src/migration/wire/index.js';
import { until } from '../helpers/images.js';
import { staticVm } from '../helpers/static-vm.js';
import { MiB, NullDestinationHost, exchangeFrames, migrate, startServer } from '../helpers/test-hosts.js';
import { cat, prng, randInt } from './wire/helpers.js';

const RAM = 1 * MiB;

function hello(capabilities: number): Uint8Array {
  return encodeHello({
    version: PROTOCOL_VERSION,
    vmId: Uint8Array.from({ length: 16 }, (_, i) => 0x70 + i),
    vmName: 'hostile',
    ramBytes: RAM,
    pageSize: 4096,
    config: { imageDigest: 'sha256:x', bootArgs: '', devices: [] },
    mode: 'precopy',
    capabilities,
    streamIndex: 0,
    streamCount: 1,
    sessionId: new Uint8Array(16),
  });
}

const ALL = Capability.ZeroPages | Capability.Xbzrle | Capability.Compression | Capability.Lz4 | Capability.Zstd;

function lastAnswer(frames: Frame[]): string {
  const last = frames.at(-1);
  // Only ACCEPT: the pages were taken (a random delta can be valid) and the session ended with our close.
  if (last === undefined || last.type === FrameType.Accept) return 'closed';
  if (last.type === FrameType.Abort) return `ABORT(${decodeAbort(last.payload).reason})`;
  return `type ${last.type}`;
}

function deltaBatch(delta: Uint8Array, page = 3): Uint8Array {
  return new PageBatchBuilder(4).begin(1).addDelta(page, delta).finish().slice();
}

test('garbage deltas and compressed blocks, ungranted encodings: ABORT(protocol) or a close, nothing kept', async () => {
  const host = new NullDestinationHost();
  const { server, port } = await startServer(host, { maxSessions: 8 });
  try {
    const rand = prng(0xe1c0de);
    const answers = new Map<string, number>();
    const count = (k: string): void => void answers.set(k, (answers.get(k) ?? 0) + 1);
    for (let t = 0; t < 400; t++) {
      let body: Uint8Array;
      if (t % 2 === 0) {
        const d = new Uint8Array(randInt(rand, 1, 48));
        for (let i = 0; i < d.length; i++) d[i] = randInt(rand, 0, 255);
        body = deltaBatch(d, randInt(rand, 0, RAM / 4096 - 1));
      } else {
        const d = new Uint8Array(randInt(rand, 4, 300));
        for (let i = 0; i < d.length; i++) d[i] = randInt(rand, 0, 255);
        if (t % 4 === 1) d.set([randInt(rand, 17, 4000) & 0xff, 0x10, 0, 0]); // lz4 size header of a plausible length
        const algorithm = t % 4 === 1 ? CompressionCode.Lz4 : CompressionCode.Zstd;
        if (algorithm === CompressionCode.Zstd && t % 8 === 3) d.set([0x28, 0xb5, 0x2f, 0xfd]);
        body = encodePagesCompressed({ demand: false, algorithm, rawLength: randInt(rand, 17, 8000), data: d });
      }
      count(lastAnswer(await exchangeFrames(port, cat(hello(ALL), body))));
    }
    // Encodings the session did not grant.
    const noXbzrle = await exchangeFrames(port, cat(hello(Capability.ZeroPages), deltaBatch(Uint8Array.from([0, 1, 7]))));
    assert.equal(lastAnswer(noXbzrle), 'ABORT(protocol)');
    assert.match(new TextDecoder().decode(noXbzrle.at(-1)!.payload), /XBZRLE was not granted/);
    const raw = new PageBatchBuilder(4).begin(1).addZero(1).finish().slice(8);
    const z = await compressor('zstd').compress(raw);
    const onlyLz4 = await exchangeFrames(port, cat(hello(Capability.ZeroPages | Capability.Compression | Capability.Lz4), encodePagesCompressed({ demand: false, algorithm: CompressionCode.Zstd, rawLength: raw.length, data: z })));
    assert.equal(lastAnswer(onlyLz4), 'ABORT(protocol)');
    assert.match(new TextDecoder().decode(onlyLz4.at(-1)!.payload), /did not grant/);
    // A well-formed compressed batch whose page lies beyond RAM is checked like any PAGES.
    const beyond = new Uint8Array(8 + 12 + 5);
    beyond.set(new PageBatchBuilder(4).begin(1).addZero(RAM / 4096).finish());
    const inner = beyond.subarray(8);
    const zb = await compressor('lz4').compress(inner);
    const far = await exchangeFrames(port, cat(hello(ALL), encodePagesCompressed({ demand: false, algorithm: CompressionCode.Lz4, rawLength: inner.length, data: zb })));
    assert.equal(lastAnswer(far), 'ABORT(protocol)');
    assert.match(new TextDecoder().decode(far.at(-1)!.payload), /beyond guest RAM/);

    const protocol = answers.get('ABORT(protocol)') ?? 0;
    assert.ok(protocol > 300, JSON.stringify([...answers]));
    for (const k of answers.keys()) assert.ok(k === 'ABORT(protocol)' || k === 'closed', `unexpected answer ${k}: ${JSON.stringify([...answers])}`);
    assert.ok(await until(() => server.sessions === 0 && host.reservations === 0, 10_000), `sessions ${server.sessions}, reservations ${host.reservations}`);
    assert.equal(host.doubleDrops, 0);

    // Still serving: a migration with every encoding on completes with matching digests.
    const ram = GuestRam.allocate(RAM);
    for (let p = 0; p < 40; p++) ram.u8.fill(p + 1, p * 4096, p * 4096 + 2048);
    const vm = staticVm(ram, 'after-hostile', { stateBytes: 100 });
    const r = await migrate(vm, port, { xbzrleCacheBytes: 1 * MiB, compression: 'zstd', autoConverge: true }).report;
    assert.equal(r.status, 'completed', r.error?.message);
    assert.equal(r.ramDigestMatch, true);
    assert.equal(r.compression?.algorithm, 'zstd');
    assert.ok(r.compression!.ratio > 1);
  } finally {
    await server.close();
  }
});
