// Protocol robustness of the destination: a live MigrationServer fed thousands of seeded
// mutations and truncations of a recorded valid migration stream, and hand-made hostile
// streams. It must never crash, never keep a reservation, and still take a proper migration.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { connect, createServer, type Socket } from 'node:net';
import { test } from 'node:test';
import { GuestRam } from '../../src/machine/memory/ram.js';
import type { MigrationServer } from '../../src/migration/destination.js';
import type { MigratableVm } from '../../src/migration/vm-port.js';
import {
  Capability,
  FrameReader,
  FrameType,
  PROTOCOL_VERSION,
  PageBatchBuilder,
  decodeAbort,
  decodeRefuse,
  encodeHello,
  encodeImage,
  encodeWarmTraffic,
  encodeConsole,
  encodeWritten,
  pageRunsFromList,
  encodePausedAt,
  encodeRoundEnd,
  encodeState,
  type Frame,
} from '../../src/migration/wire/index.js';
import { monotonicUs } from '../../src/util/host-clock.js';
import { until } from '../helpers/images.js';
import { MiB, NullDestinationHost, migrate, startServer } from '../helpers/test-hosts.js';
import { cat, prng, randInt } from './wire/helpers.js';

/** What fakeVm says it booted from: its config names this image's digest. */
const IMAGE = Uint8Array.from({ length: 5000 }, (_, i) => (i * 7 + 3) & 0xff);
const IMAGE_DIGEST = 'sha256:' + createHash('sha256').update(IMAGE).digest('hex');
const SAMPLES = [{ vmPort: 6379, bytes: new TextEncoder().encode('*1\r\n$4\r\nPING\r\n') }, { vmPort: 7777, bytes: new Uint8Array(0) }];
/** fakeVm's console history: bytes [HISTORY_END − HISTORY.length, HISTORY_END) of its output (the start was dropped). */
const HISTORY = new TextEncoder().encode(Array.from({ length: 200 }, (_, i) => `console line ${i}\n`).join(''));
const HISTORY_END = HISTORY.length + 777;

/** A small VM that never changes: 1 MiB of RAM, a few pages of pattern, the rest zero. */
function fakeVm(name = 'fuzz-vm'): MigratableVm {
  const ram = GuestRam.allocate(1 * MiB);
  for (let p = 0; p < 12; p++) ram.u8.fill(p + 1, p * 7 * 4096, p * 7 * 4096 + 4096);
  const state = Uint8Array.from({ length: 300 }, (_, i) => (i * 31) & 0xff);
  return {
    uuid: Uint8Array.from({ length: 16 }, (_, i) => 0x40 + i),
    name,
    ram,
    config: { imageDigest: IMAGE_DIGEST, bootArgs: 'x=1', devices: [] },
    image: IMAGE,
    trafficSamples: () => SAMPLES,
    pause: async () => {},
    resume: () => {},
    setThrottle: () => {},
    setDirtyLogging: async (on) => {
      if (on) ram.dirty.clear();
    },
    saveState: async () => state,
    pauseAndSave: () => ({ paused: Promise.resolve(), state: Promise.resolve(state) }),
    consoleSince: (from) => ({ end: HISTORY_END, bytes: HISTORY.subarray(Math.max(0, from - (HISTORY_END - HISTORY.length))) }),
  };
}

/** Runs a real migration through a proxy that records what the source sends. */
async function recordSourceStream(port: number): Promise<Uint8Array> {
  const chunks: Buffer[] = [];
  const proxy = createServer((client) => {
    const upstream = connect(port, '127.0.0.1');
    client.on('data', (c: Buffer) => {
      chunks.push(Buffer.from(c));
      upstream.write(c);
    });
    upstream.on('data', (c: Buffer) => client.write(c));
    client.on('end', () => upstream.end());
    upstream.on('end', () => client.end());
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
  });
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
  const r = await migrate(fakeVm(), (proxy.address() as { port: number }).port, { verifyRam: true }).report;
  proxy.close();
  assert.equal(r.status, 'completed', r.error?.message);
  return new Uint8Array(Buffer.concat(chunks));
}

function frameStarts(stream: Uint8Array): number[] {
  const reader = new FrameReader();
  const starts: number[] = [];
  let o = 0;
  for (const f of reader.feed(stream)) {
    starts.push(o);
    o += 8 + f.payload.length;
  }
  return starts;
}

function mutate(stream: Uint8Array, starts: number[], rand: () => number): Uint8Array {
  let s: Uint8Array = stream.slice();
  const k = randInt(rand, 1, 3);
  for (let j = 0; j < k; j++) {
    // Aim most mutations at structure (headers and the first bytes of payloads), not page data.
    const start = starts[randInt(rand, 0, starts.length - 1)]!;
    const pos = rand() < 0.7 ? Math.min(s.length - 1, start + randInt(rand, 0, 24)) : randInt(rand, 0, s.length - 1);
    switch (randInt(rand, 0, 7)) {
      case 0:
        s[pos] ^= 1 << randInt(rand, 0, 7);
        break;
      case 1:
        s[pos] = randInt(rand, 0, 255);
        break;
      case 2:
        s = s.subarray(0, pos);
        break;
      case 3:
        s = cat(s.subarray(0, pos), Uint8Array.from({ length: randInt(rand, 1, 16) }, () => randInt(rand, 0, 255)), s.subarray(pos));
        break;
      case 4:
        s = cat(s.subarray(0, pos), s.subarray(Math.min(s.length, pos + randInt(rand, 1, 64))));
        break;
      case 5: {
        const v = rand() < 0.5 ? randInt(rand, 0, 300) : Math.floor(rand() * 2 ** 32);
        if (pos + 4 <= s.length) new DataView(s.buffer, s.byteOffset).setUint32(pos, v >>> 0, true);
        break;
      }
      case 6: {
        // Duplicate or drop a whole frame.
        const i = randInt(rand, 0, starts.length - 1);
        const a = starts[i]!;
        const b = starts[i + 1] ?? stream.length;
        s = rand() < 0.5 ? cat(s.subarray(0, b), stream.subarray(a, b), s.subarray(b)) : cat(s.subarray(0, a), s.subarray(b));
        break;
      }
      default:
        s = s.subarray(0, randInt(rand, 0, s.length));
    }
    if (s.length === 0) break;
  }
  return s;
}

/** Sends `bytes` in random chunks, half-closes, and collects what the server answers until it closes. */
async function exchange(port: number, bytes: Uint8Array, rand: () => number): Promise<Frame[]> {
  const sock: Socket = connect(port, '127.0.0.1');
  const answers: Buffer[] = [];
  sock.on('data', (c: Buffer) => answers.push(c));
  sock.on('error', () => {});
  const closed = once(sock, 'close');
  await once(sock, 'connect');
  let o = 0;
  while (o < bytes.length && !sock.destroyed) {
    const n = rand() < 0.3 ? randInt(rand, 1, 64) : randInt(rand, 1, 70_000);
    sock.write(bytes.subarray(o, o + n));
    o += n;
  }
  if (!sock.destroyed) sock.end();
  await closed;
  const reader = new FrameReader();
  const frames: Frame[] = [];
  try {
    for (const f of reader.feed(Buffer.concat(answers))) frames.push(f);
  } catch {
    assert.fail('the server sent bytes that are not tern frames');
  }
  return frames;
}

async function checkClean(server: MigrationServer, host: NullDestinationHost): Promise<void> {
  assert.ok(await until(() => server.sessions === 0 && host.reservations === 0, 10_000), `sessions ${server.sessions}, reservations ${host.reservations}`);
  assert.equal(host.doubleDrops, 0);
}

test('thousands of mutated and truncated migration streams: the server survives, leaks nothing, and still migrates', async () => {
  const host = new NullDestinationHost();
  const { server, port } = await startServer(host, { maxSessions: 16 });
  const failures: Error[] = [];
  server.on('failed', (_vm, e) => failures.push(e));
  try {
    const stream = await recordSourceStream(port);
    const starts = frameStarts(stream);
    assert.ok(starts.length >= 10, 'HELLO, IMAGE, WARM_TRAFFIC, WRITTEN, CONSOLE, PAGES, ROUND_END..., STATE, PING, COMPLETE');
    assert.equal(host.warmImages.length, 1, 'the recorded migration carried the image');
    assert.deepEqual(host.warmImages[0], IMAGE);
    assert.deepEqual(host.warmTraffics, [SAMPLES], 'and the traffic samples');
    assert.deepEqual(host.consoles, [{ end: HISTORY_END, bytes: HISTORY }], 'and the console history (CONSOLE), given to load()');
    // Its RAM does not track writes, so every page may hold data: one run of all 256 (WRITTEN).
    assert.deepEqual(host.writtens.map((w) => ({ ramPages: w.ramPages, pageCount: w.pageCount, runs: Array.from(w.runs) })), [{ ramPages: 256, pageCount: 256, runs: [0, 256] }], 'and the written pages');
    await checkClean(server, host);
    const activationsBefore = host.activations;

    const rand = prng(0x7e57);
    const N = 3000;
    const answers = new Map<string, number>();
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < N) {
        next++;
        const frames = await exchange(port, mutate(stream, starts, rand), rand);
        const last = frames.at(-1);
        let key = last === undefined ? 'closed' : String(last.type);
        if (last?.type === FrameType.Abort) key = `ABORT(${decodeAbort(last.payload).reason})`;
        if (last?.type === FrameType.Refuse) key = `REFUSE(${decodeRefuse(last.payload).reason})`;
        answers.set(key, (answers.get(key) ?? 0) + 1);
      }
    };
    await Promise.all([worker(), worker(), worker(), worker()]);
    if (process.env.FUZZ_VERBOSE !== undefined) console.log(JSON.stringify([...answers]), failures.length, host.activations);
    await checkClean(server, host);
    assert.ok(failures.length > N / 2, `most streams fail (${failures.length})`);
    assert.ok((answers.get('ABORT(protocol)') ?? 0) > 0 && (answers.get('REFUSE(bad-request)') ?? 0) > 0, JSON.stringify([...answers]));

    // And it still does its job.
    const r = await migrate(fakeVm('after-fuzz'), port).report;
    assert.equal(r.status, 'completed', r.error?.message);
    assert.equal(r.ramDigestMatch, true);
    assert.ok(host.activations > activationsBefore);
    await checkClean(server, host);
  } finally {
    await server.close();
  }
});

test('PAUSED_AT claiming a pause an hour old moves the guest clock by no more than the session age', async () => {
  const host = new NullDestinationHost();
  const { server, port } = await startServer(host);
  const rand = prng(7);
  try {
    const stream = await recordSourceStream(port);
    assert.equal(host.resumedPausedSince.length, 1);
    const honest = host.resumedPausedSince[0]!;
    assert.ok(honest !== undefined && honest <= monotonicUs(), 'the recorded migration carried PAUSED_AT');
    const at = frameStarts(stream).find((o) => stream[o] === FrameType.PausedAt);
    assert.ok(at !== undefined, 'the source sent PAUSED_AT');
    const forged = stream.slice();
    const view = new DataView(forged.buffer);
    const pausedUs = Number(view.getBigUint64(at + 8 + 16, true));
    // An hour earlier, same boot id (on a machine up for less than an hour: the boot itself).
    view.setBigUint64(at + 8 + 16, BigInt(Math.max(0, pausedUs - 3_600_000_000)), true);
    const before = monotonicUs();
    const frames = await exchange(port, forged, rand);
    assert.ok(frames.some((f) => f.type === FrameType.Activated), 'the forged stream still migrates');
    const since = host.resumedPausedSince.at(-1)!;
    assert.ok(since >= before, `the pause is taken to begin ${((before - since) / 1e6).toFixed(1)} s before the session did`);
    await checkClean(server, host);
  } finally {
    await server.close();
  }
});

test('hostile streams get a clear answer: a page beyond RAM, a non-tern peer, a stream cut inside a frame', async () => {
  const host = new NullDestinationHost();
  const { server, port } = await startServer(host);
  const rand = prng(1);
  try {
    const vm = fakeVm();
    const hello = encodeHello({
      version: PROTOCOL_VERSION, vmId: vm.uuid, vmName: 'hostile', ramBytes: 1 * MiB, pageSize: 4096, config: vm.config,
      mode: 'precopy', capabilities: 1, streamIndex: 0, streamCount: 1, sessionId: new Uint8Array(16),
    });
    // Page 256 of a 256-page VM.
    const pages = new PageBatchBuilder(4).begin(1).addZero(3).addZero(256).finish().slice();
    let frames = await exchange(port, cat(hello, pages), rand);
    assert.deepEqual(frames.map((f) => f.type), [FrameType.Accept, FrameType.Abort]);
    const abort = decodeAbort(frames[1]!.payload);
    assert.equal(abort.reason, 'protocol');
    assert.match(abort.text, /entry\[1\]\.page: 256 is beyond guest RAM \(256 pages\)/);

    frames = await exchange(port, new TextEncoder().encode('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), rand);
    assert.deepEqual(frames.map((f) => f.type), [FrameType.Refuse]);
    assert.equal(decodeRefuse(frames[0]!.payload).reason, 'bad-request');
    assert.match(decodeRefuse(frames[0]!.payload).text, /does not speak the tern migration protocol.*"GET \/ HT"/);

    // Cut inside a PAGES frame: the session ends, the reservation goes back.
    const ok = new PageBatchBuilder(4).begin(1).addZero(1).finish().slice();
    frames = await exchange(port, cat(hello, ok, pages.subarray(0, 10)), rand);
    assert.equal(frames.at(-1)!.type, FrameType.Abort);
    assert.match(decodeAbort(frames.at(-1)!.payload).text, /truncated|ended inside/);

    // IMAGE (protocol 1.2): only with the warm-image capability, once, before any page, and
    // only the image the config names.
    const image = encodeImage({ image: IMAGE });
    const withImage = encodeHello({
      version: PROTOCOL_VERSION, vmId: vm.uuid, vmName: 'hostile', ramBytes: 1 * MiB, pageSize: 4096, config: vm.config,
      mode: 'precopy', capabilities: Capability.ZeroPages | Capability.WarmImage, streamIndex: 0, streamCount: 1, sessionId: new Uint8Array(16),
    });
    const imageAbort = async (bytes: Uint8Array, text: RegExp): Promise<void> => {
      const got = await exchange(port, bytes, rand);
      assert.equal(got.at(-1)!.type, FrameType.Abort);
      const a = decodeAbort(got.at(-1)!.payload);
      assert.equal(a.reason, 'protocol');
      assert.match(a.text, text);
    };
    await imageAbort(cat(hello, image), /IMAGE without the warm-image capability/);
    await imageAbort(cat(withImage, image, image), /a second IMAGE/);
    await imageAbort(cat(withImage, ok, image), /IMAGE after pages/);
    await imageAbort(cat(withImage, encodeImage({ image: IMAGE.subarray(1) })), /IMAGE is sha256:[0-9a-f]{64}, but the VM's config names sha256:/);
    const corrupt = image.slice();
    corrupt[corrupt.length - 1]! ^= 1;
    await imageAbort(cat(withImage, corrupt), /SHA-256 of the 5000-byte image does not match/);
    assert.equal(host.warmImages.length, 1, 'only the well-formed IMAGE reached the host');

    // WARM_TRAFFIC (protocol 1.6): only with warm-traffic (granted with warm-image), once, right
    // after IMAGE, before any page.
    const traffic = encodeWarmTraffic({ samples: SAMPLES });
    const trafficsBefore = host.warmTraffics.length;
    const withTraffic = encodeHello({
      version: PROTOCOL_VERSION, vmId: vm.uuid, vmName: 'hostile', ramBytes: 1 * MiB, pageSize: 4096, config: vm.config,
      mode: 'precopy', capabilities: Capability.ZeroPages | Capability.WarmImage | Capability.WarmTraffic, streamIndex: 0, streamCount: 1, sessionId: new Uint8Array(16),
    });
    const trafficOnly = encodeHello({
      version: PROTOCOL_VERSION, vmId: vm.uuid, vmName: 'hostile', ramBytes: 1 * MiB, pageSize: 4096, config: vm.config,
      mode: 'precopy', capabilities: Capability.ZeroPages | Capability.WarmTraffic, streamIndex: 0, streamCount: 1, sessionId: new Uint8Array(16),
    });
    await imageAbort(cat(withImage, image, traffic), /WARM_TRAFFIC without the warm-traffic capability/);
    await imageAbort(cat(trafficOnly, traffic), /WARM_TRAFFIC without the warm-traffic capability/);
    await imageAbort(cat(withTraffic, traffic), /WARM_TRAFFIC before IMAGE/);
    await imageAbort(cat(withTraffic, image, traffic, traffic), /a second WARM_TRAFFIC/);
    await imageAbort(cat(withTraffic, image, ok, traffic), /WARM_TRAFFIC after pages/);
    const twice = cat(traffic.subarray(0, 8), traffic.subarray(8));
    twice[8 + 4 + 6 + 14] = 0xeb; // the second sample's port (7777) becomes the first's (6379 = 0x18eb)
    twice[8 + 4 + 6 + 14 + 1] = 0x18;
    await imageAbort(cat(withTraffic, image, twice), /port 6379 has two samples/);
    assert.equal(host.warmTraffics.length - trafficsBefore, 1, 'only the first of the two well-formed WARM_TRAFFIC frames reached the host');

    // PAUSED_AT (protocol 1.4): only with the paused-at capability, once, on stream 0, before STATE.
    const withClock = encodeHello({
      version: PROTOCOL_VERSION, vmId: vm.uuid, vmName: 'hostile', ramBytes: 1 * MiB, pageSize: 4096, config: vm.config,
      mode: 'precopy', capabilities: Capability.ZeroPages | Capability.PausedAt, streamIndex: 0, streamCount: 1, sessionId: new Uint8Array(16),
    });
    const pausedAt = encodePausedAt({ bootId: new Uint8Array(16), pausedUs: 1_000, sentUs: 2_000 });
    const round1 = cat(ok, encodeRoundEnd({ round: 1, pagesSent: 1, pagesDirtied: 0, durationUs: 1, bytes: ok.length }));
    await imageAbort(cat(hello, round1, pausedAt), /PAUSED_AT without the paused-at capability/);
    await imageAbort(cat(withClock, round1, pausedAt, pausedAt), /a second PAUSED_AT/);
    await imageAbort(cat(withClock, round1, encodeState({ state: Uint8Array.of(1, 2, 3) }), pausedAt), /PAUSED_AT after STATE/);
    const backwards = pausedAt.slice();
    backwards[8 + 16 + 2] = 0xff; // pausedUs (little-endian) now beyond sentUs
    await imageAbort(cat(withClock, round1, backwards), /sentUs 2000 is before pausedUs/);

    // CONSOLE (protocol 1.7): only with console-precopy, before STATE, each continuing the history so far.
    const withConsole = encodeHello({
      version: PROTOCOL_VERSION, vmId: vm.uuid, vmName: 'hostile', ramBytes: 1 * MiB, pageSize: 4096, config: vm.config,
      mode: 'precopy', capabilities: Capability.ZeroPages | Capability.ConsolePrecopy, streamIndex: 0, streamCount: 1, sessionId: new Uint8Array(16),
    });
    const consoleFrame = encodeConsole({ end: 100, bytes: HISTORY.subarray(0, 60) });
    await imageAbort(cat(hello, consoleFrame), /CONSOLE without the console-precopy capability/);
    await imageAbort(cat(withConsole, consoleFrame, encodeConsole({ end: 120, bytes: HISTORY.subarray(0, 30) })), /CONSOLE history \[90, 120\) goes back before the end of the history received \(100\)/);
    await imageAbort(cat(withConsole, round1, encodeState({ state: Uint8Array.of(1, 2, 3) }), consoleFrame), /CONSOLE after STATE/);
    // WRITTEN (protocol 1.8): only with written-pages, once, before any page, over the VM's pages.
    const withWritten = encodeHello({
      version: PROTOCOL_VERSION, vmId: vm.uuid, vmName: 'hostile', ramBytes: 1 * MiB, pageSize: 4096, config: vm.config,
      mode: 'precopy', capabilities: Capability.ZeroPages | Capability.WrittenPages, streamIndex: 0, streamCount: 1, sessionId: new Uint8Array(16),
    });
    const writtenFrame = encodeWritten({ runs: pageRunsFromList([0, 1, 2, 9], 256) });
    await imageAbort(cat(hello, writtenFrame), /WRITTEN without the written-pages capability/);
    await imageAbort(cat(withWritten, writtenFrame, writtenFrame), /a second WRITTEN/);
    await imageAbort(cat(withWritten, ok, writtenFrame), /WRITTEN after pages/);
    await imageAbort(cat(withWritten, encodeWritten({ runs: pageRunsFromList([0], 512) })), /WRITTEN covers 512 pages, but the VM has 256/);
    const overlapping = writtenFrame.slice();
    overlapping[8 + 12 + 8] = 1; // the second run (page 9) now starts at page 1, inside the first
    await imageAbort(cat(withWritten, overlapping), /WRITTEN.*runs\[1\]\.first|overlaps/);

    const early = consoleFrame.slice();
    early[8] = 10; // end 10, before the start of its 60 bytes
    await imageAbort(cat(withConsole, early), /end 10 is before the start of 60 bytes/);

    // A round that lies about its page count.
    frames = await exchange(port, cat(hello, ok, encodeRoundEnd({ round: 1, pagesSent: 5, pagesDirtied: 0, durationUs: 1, bytes: 1 })), rand);
    assert.match(decodeAbort(frames.at(-1)!.payload).text, /claims 5 pages, 1 arrived/);
    await checkClean(server, host);
  } finally {
    await server.close();
  }
});
