// Page runs (protocol 1.5): consecutive raw pages as PAGE_RUN frames, read by the destination
// straight into guest RAM. Real migrations through a proxy that re-chunks the stream at random
// (so heads split across reads, and direct reads start and stop anywhere) end with equal RAM
// digests; hostile PAGE_RUN frames get ABORT(protocol) with a clear reason and leave nothing held.
import assert from 'node:assert/strict';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { test } from 'node:test';
import { GuestRam } from '../../src/machine/memory/ram.js';
import {
  Capability,
  FrameType,
  PROTOCOL_VERSION,
  decodeAbort,
  encodeHello,
  encodePageRun,
  encodeRoundEnd,
  type Frame,
} from '../../src/migration/wire/index.js';
import { until } from '../helpers/images.js';
import { staticVm } from '../helpers/static-vm.js';
import { MiB, NullDestinationHost, exchangeFrames, migrate, startServer } from '../helpers/test-hosts.js';
import { cat, frame, le, pageOf, prng, randInt } from './wire/helpers.js';

const RAM = 8 * MiB;
const PAGES = RAM / 4096;

/** RAM with runs of every length the sender treats differently, zero pages between them. */
function patternedRam(): GuestRam {
  const ram = GuestRam.allocate(RAM);
  const rand = prng(0x5eed);
  let p = 0;
  while (p < PAGES) {
    const len = [1, 3, 7, 8, 9, 255, 256, 257, 600][randInt(rand, 0, 8)]!;
    for (let q = p; q < Math.min(PAGES, p + len); q++) ram.u8.fill((q * 7 + 1) & 0xff, q * 4096, q * 4096 + 4096);
    p += len + randInt(rand, 0, 3); // 0..3 zero pages between runs
  }
  return ram;
}

/** Forwards source → destination in random chunks (1 byte .. 70 KB, a turn of the loop between), the answers as they come. */
async function chunkingProxy(port: number, seed: number): Promise<{ proxy: Server; port: number }> {
  const rand = prng(seed);
  const proxy = createServer((client: Socket) => {
    const upstream = connect(port, '127.0.0.1');
    const queue: Buffer[] = [];
    let pumping = false;
    const pump = (): void => {
      if (pumping) return;
      pumping = true;
      const step = (): void => {
        const c = queue[0];
        if (c === undefined) {
          pumping = false;
          return;
        }
        const n = Math.min(c.length, rand() < 0.3 ? randInt(rand, 1, 24) : randInt(rand, 1, 70_000));
        upstream.write(c.subarray(0, n));
        if (n === c.length) queue.shift();
        else queue[0] = c.subarray(n);
        setImmediate(step);
      };
      step();
    };
    client.on('data', (c: Buffer) => {
      queue.push(c);
      pump();
    });
    upstream.on('data', (c: Buffer) => client.write(c));
    client.on('end', () => {
      const t = setInterval(() => {
        if (queue.length === 0) {
          clearInterval(t);
          upstream.end();
        }
      }, 5);
    });
    upstream.on('end', () => client.end());
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
  });
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
  return { proxy, port: (proxy.address() as { port: number }).port };
}

test('page runs: RAM arrives whole through a re-chunking proxy (digests equal); short runs and --no-page-runs go as PAGES', async () => {
  const host = new NullDestinationHost();
  const { server, port } = await startServer(host);
  try {
    const ram = patternedRam();
    for (const seed of [1, 2, 3]) {
      const { proxy, port: via } = await chunkingProxy(port, seed);
      try {
        const r = await migrate(staticVm(ram, `runs-${seed}`, { stateBytes: 100 }), via, { verifyRam: true }).report;
        assert.equal(r.status, 'completed', r.error?.message);
        assert.equal(r.ramDigestMatch, true, 'the destination RAM equals the source RAM');
        assert.ok(r.pageRuns !== undefined && r.pageRuns.frames > 0, JSON.stringify(r.pageRuns));
        // Runs shorter than 8 pages went in PAGES batches: fewer run pages than non-zero pages.
        const nonZero = r.pagesTransferred - r.zeroPages;
        assert.ok(r.pageRuns.pages < nonZero && r.pageRuns.pages > nonZero / 2, `${r.pageRuns.pages} run pages of ${nonZero} non-zero`);
        assert.ok(r.pageRuns.frames >= r.pageRuns.pages / 256);
      } finally {
        proxy.close();
      }
    }
    const off = await migrate(staticVm(ram, 'no-runs', { stateBytes: 100 }), port, { verifyRam: true, pageRuns: false }).report;
    assert.equal(off.status, 'completed', off.error?.message);
    assert.equal(off.ramDigestMatch, true);
    assert.equal(off.pageRuns, undefined, 'not offered, not granted, not reported');
    assert.ok(await until(() => server.sessions === 0 && host.reservations === 0, 10_000));
    assert.equal(host.doubleDrops, 0);
  } finally {
    await server.close();
  }
});

function hello(capabilities: number, mode: 'precopy' | 'postcopy' = 'precopy'): Uint8Array {
  return encodeHello({
    version: PROTOCOL_VERSION,
    vmId: Uint8Array.from({ length: 16 }, (_, i) => 0x30 + i),
    vmName: 'hostile-runs',
    ramBytes: 1 * MiB,
    pageSize: 4096,
    config: { imageDigest: 'sha256:x', bootArgs: '', devices: [] },
    mode,
    capabilities,
    streamIndex: 0,
    streamCount: 1,
    sessionId: new Uint8Array(16),
  });
}

function abortText(frames: Frame[]): string {
  const last = frames.at(-1);
  if (last === undefined) return 'closed';
  if (last.type !== FrameType.Abort) return `type ${last.type}`;
  const a = decodeAbort(last.payload);
  return `ABORT(${a.reason}): ${a.text}`;
}

test('hostile PAGE_RUN frames: ABORT(protocol) with the reason, nothing held, the server still serves', async () => {
  const host = new NullDestinationHost();
  const { server, port } = await startServer(host, { maxSessions: 4 });
  const OK = Capability.ZeroPages | Capability.PageRuns;
  const run = (round: number, first: number, count: number): Uint8Array => encodePageRun({ round, first, count, data: cat(...Array.from({ length: count }, (_, i) => pageOf(first + i))) });
  try {
    const cases: [string, Uint8Array, RegExp][] = [
      ['not offered', cat(hello(Capability.ZeroPages), run(1, 0, 8)), /ABORT\(protocol\): .*PAGE_RUN without the page-runs capability/],
      ['post-copy', cat(hello(OK | Capability.PostcopyRecovery, 'postcopy'), run(1, 0, 8)), /ABORT\(protocol\): .*PAGE_RUN without the page-runs capability/],
      ['wrong round', cat(hello(OK), run(2, 0, 8)), /ABORT\(protocol\): .*PAGE_RUN of round 2 during round 1/],
      ['beyond RAM', cat(hello(OK), run(1, 250, 8)), /ABORT\(protocol\): .*pages 250\.\.257 are outside guest RAM \(256 pages\)/],
      ['count and length disagree', cat(hello(OK), frame(0x16, cat(le.u32(1), le.u32(0), le.u32(3), new Uint8Array(2 * 4096)))), /ABORT\(protocol\): .*a run of 3 pages needs a 12300-byte payload, the frame has 8204/],
      ['count 0', cat(hello(OK), frame(0x16, cat(le.u32(1), le.u32(0), le.u32(0)))), /ABORT\(protocol\): .*count 0 is outside 1\.\.256/],
      ['cut inside the data', cat(hello(OK), run(1, 0, 64).subarray(0, 20 + 100_000)), /ABORT\(protocol\): .*stream ended inside a PAGE_RUN frame: 162144 bytes of page data missing/],
      ['after the run, a ROUND_END that miscounts', cat(hello(OK), run(1, 0, 16), encodeRoundEnd({ round: 1, pagesSent: 15, pagesDirtied: 0, durationUs: 1, bytes: 1 })), /ABORT\(protocol\): .*round 1 claims 15 pages, 16 arrived/],
    ];
    for (const [name, bytes, want] of cases) {
      const got = abortText(await exchangeFrames(port, bytes, 600));
      assert.match(got, want, name);
    }
    assert.ok(await until(() => server.sessions === 0 && host.reservations === 0, 10_000), `sessions ${server.sessions}, reservations ${host.reservations}`);
    assert.equal(host.doubleDrops, 0);
    // Still serving, with runs.
    const ram = GuestRam.allocate(1 * MiB);
    ram.u8.fill(9, 0, 512 * 1024);
    const r = await migrate(staticVm(ram, 'after-hostile-runs', { stateBytes: 100 }), port).report;
    assert.equal(r.status, 'completed', r.error?.message);
    assert.equal(r.ramDigestMatch, true);
    assert.equal(r.pageRuns?.pages, 128);
  } finally {
    await server.close();
  }
});
