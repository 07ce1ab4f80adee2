// Parallel streams (migration-protocol.md §5.5): real vCPU threads and TCP on 127.0.0.1. A munch
// moves over 4 streams (and 3 with XBZRLE and lz4) with matching RAM digests and keeps running;
// the destination refuses joins that do not fit a session, and a dead data stream fails the
// migration with the VM running on at the source and nothing kept at the destination.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect } from 'node:net';
import { after, test } from 'node:test';
import { StreamSplitter } from '../../src/migration/streams.js';
import {
  Capability,
  FrameReader,
  FrameType,
  PROTOCOL_VERSION,
  decodeRefuse,
  encodeHello,
  type Body,
  type Hello,
} from '../../src/migration/wire/index.js';
import { until } from '../helpers/images.js';
import { MiB, TestDestinationHost, bootTestVm, migrate, startServer, stopAllVcpus } from '../helpers/test-hosts.js';

after(stopAllVcpus);

test('the splitter sends page p to stream p mod n, in order, reusing its buffers', () => {
  const s = new StreamSplitter(3, 20);
  const list = Uint32Array.from([0, 1, 2, 3, 4, 5, 7, 11, 19]);
  const parts = s.split(list);
  assert.deepEqual(parts.map((p) => [...p]), [[0, 3], [1, 4, 7, 19], [2, 5, 11]]);
  const again = s.split(Uint32Array.from([5]));
  assert.deepEqual(again.map((p) => [...p]), [[], [], [5]]);
  assert.equal(again[2]!.buffer, parts[2]!.buffer, 'no new buffers per round');
});

// XBZRLE over streams: its counters show pages went through the encoder. Whether any page hits
// the cache depends on where the rounds fall against munch's sweep (pages are cached from round 2
// on), and fresh-clone CI runs had 0 hits with two guest settings; the cache's hits
// are checked between daemons with a capped link (encodings.test.ts).
for (const [streams, extra] of [[4, {}], [3, { xbzrleCacheBytes: 8 * MiB, compression: 'lz4' as const }]] as const) {
  test(`munch over ${streams} streams${'compression' in extra ? ' with XBZRLE and lz4' : ''}: digests match, it runs on at the destination`, async () => {
    const ram = 32 * MiB;
    const host = new TestDestinationHost();
    const { server, port } = await startServer(host, { name: 'B' });
    try {
      const vm = await bootTestVm('munch', 'wws=4M stride=64 rate=2M rss=2M report=200ms', ram, `munch-s${streams}`);
      assert.ok(await until(() => /t=0\.[2-9]/.test(vm.console()), 30_000), 'munch is running');
      const activated = once(server, 'activated');
      const { report } = migrate(vm, port, { streams, downtimeLimitMs: 1, maxRounds: 4, ...extra });
      const r = await report;
      assert.equal(r.status, 'completed', JSON.stringify(r.error));
      assert.equal(r.ramDigestMatch, true);
      assert.ok(r.rounds >= 2, `rounds ${r.rounds}`);
      assert.equal(r.pagesTransferred, r.perRound.reduce((n, s) => n + s.pages, 0), 'the report totals every stream');
      assert.equal(r.perRound[0]!.pages + r.perRound[0]!.skippedPages!, ram / 4096, 'round 1 covers every page across the streams');
      if ('compression' in extra) assert.ok(r.xbzrle!.hits + r.xbzrle!.misses > 0 && r.compression!.ratio > 1, JSON.stringify([r.xbzrle, r.compression]));
      await activated;
      await vm.stop();
      const moved = host.vms.get(`munch-s${streams}`)!;
      const seen = moved.console().length;
      assert.ok(await until(() => moved.console().length > seen + 40, 30_000), 'munch runs on at the destination');
      assert.doesNotMatch(moved.console(), /BAD/);
      assert.equal(host.reservations, 0);
      await host.remove(`munch-s${streams}`);
    } finally {
      await server.close();
    }
  });
}

/** Sends one HELLO on a fresh connection and returns the destination's first frame. */
async function helloAnswer(port: number, hello: Body<Hello>, patch?: (bytes: Uint8Array) => void): Promise<{ type: FrameType; payload: Uint8Array }> {
  const s = connect({ host: '127.0.0.1', port });
  try {
    await once(s, 'connect');
    const bytes = encodeHello(hello);
    patch?.(bytes);
    s.write(bytes);
    const reader = new FrameReader({ from: 'destination' });
    for await (const chunk of s) {
      reader.push(chunk as Buffer);
      const f = reader.next();
      if (f !== undefined) return f;
    }
    throw new Error('closed without an answer');
  } finally {
    s.destroy();
  }
}

test('the destination refuses joins that fit no session, streams without the capability, and streams for post-copy', async () => {
  const host = new TestDestinationHost();
  const { server, port } = await startServer(host, { name: 'B' });
  try {
    const base: Body<Hello> = {
      version: PROTOCOL_VERSION,
      vmId: Uint8Array.from({ length: 16 }, (_, i) => i + 1),
      vmName: 'joiner',
      ramBytes: 1 * MiB,
      pageSize: 4096,
      config: { imageDigest: 'sha256:x', bootArgs: '', devices: [] },
      mode: 'precopy',
      capabilities: Capability.ZeroPages | Capability.MultiStream,
      streamIndex: 1,
      streamCount: 2,
      sessionId: Uint8Array.from({ length: 16 }, () => 7),
    };
    const unknown = await helloAnswer(port, base);
    assert.equal(unknown.type, FrameType.Refuse);
    assert.equal(decodeRefuse(unknown.payload).reason, 'unknown-session');
    // Two streams without the multi-stream bit: the HELLO itself is invalid (bad-request).
    const nocap = await helloAnswer(port, { ...base, streamIndex: 0, sessionId: new Uint8Array(16) }, (b) => (b[8 + 48] = Capability.ZeroPages));
    assert.equal(nocap.type, FrameType.Refuse);
    assert.equal(decodeRefuse(nocap.payload).reason, 'bad-request');
    const postcopy = await helloAnswer(port, { ...base, streamIndex: 0, sessionId: new Uint8Array(16), mode: 'postcopy' });
    assert.equal(decodeRefuse(postcopy.payload).reason, 'capability');
    assert.equal(host.reservations, 0);
  } finally {
    await server.close();
  }
});

test('a data stream that dies fails the migration: the VM runs on at the source, the destination keeps nothing', async () => {
  const ram = 32 * MiB;
  const host = new TestDestinationHost();
  const { server, port } = await startServer(host, { name: 'B' });
  try {
    const vm = await bootTestVm('munch', 'wws=8M stride=4096 rss=1M report=200ms', ram, 'munch-cut');
    assert.ok(await until(() => /t=0\.[2-9]/.test(vm.console()), 30_000), 'munch is running');
    const failed = once(server, 'failed');
    // A slow migration (cap) so there is time to cut a data stream while pages flow.
    const { migration, report } = migrate(vm, port, { streams: 3, maxBandwidthBps: 4 * MiB, downtimeLimitMs: 1, maxRounds: 30 });
    assert.ok(await until(() => migration.progress().round >= 2, 30_000), 'pre-copy is in round 2');
    // Kill the source's data streams from the outside: destroy every socket but stream 0.
    const streams = (migration as unknown as { streams: { destroy(): void } | undefined }).streams;
    assert.ok(streams !== undefined, 'the migration holds its data streams');
    streams.destroy();
    const r = await report;
    assert.equal(r.status, 'failed');
    assert.equal(r.error!.stage, 'precopy');
    await failed;
    assert.ok(await until(() => host.reservations === 0, 10_000), 'the destination dropped its partial copy');
    const seen = vm.console().length;
    assert.ok(await until(() => vm.console().length > seen + 40, 30_000), 'munch runs on at the source');
    await vm.stop();
  } finally {
    await server.close();
  }
});
