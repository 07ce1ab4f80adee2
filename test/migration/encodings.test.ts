// Encodings and auto-converge end to end: real `tern host serve` daemons, `munch` migrated by
// `tern migrate` with --xbzrle, --compress lz4|zstd and --auto-converge, each checked with the
// --verify RAM digest and the guest's own check of its resident set (rss=ok, no BAD).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { MigrationReport } from '../../src/migration/report.js';
import { imagePath } from '../helpers/images.js';
import { HAS_ENGINE, killAll, tern, ternJson, waitFor, type Daemon, startDaemon } from '../host/helpers.js';

const MUNCH = imagePath('munch');
const skip = HAS_ENGINE ? false : 'this build has no migration engine';

after(() => killAll());

async function consoleOf(d: Daemon, vm: string): Promise<string> {
  const r = await tern(['vm', 'console', vm, '--host', d.api]);
  assert.equal(r.code, 0, `console of ${vm} on ${d.name}: ${r.stderr}`);
  return r.stdout;
}

/** Status lines munch printed so far. */
async function reports(d: Daemon, vm: string): Promise<number> {
  return (await consoleOf(d, vm)).split('\n').filter((l) => l.startsWith('munch: t=')).length;
}

/** Starts munch on `d`, waits for its first status line. */
async function startMunch(d: Daemon, vm: string, args: string, mem = '32M'): Promise<void> {
  const r = await tern(['vm', 'start', MUNCH, '--host', d.api, '--name', vm, '--mem', mem, '--append', `${args} report=200ms`]);
  assert.equal(r.code, 0, r.stderr);
  await waitFor(async () => (await reports(d, vm)) >= 1, 20_000, 100);
}

/** Migrates, checks the common promises, and that munch keeps running and checking at the destination. */
async function migrateOk(vm: string, from: Daemon, to: Daemon, flags: string[]): Promise<MigrationReport> {
  const r = await ternJson<MigrationReport>(['migrate', vm, '--from', from.api, '--to', to.api, '--verify', ...flags], 240_000);
  assert.equal(r.code, 0, `${flags.join(' ')}: ${r.stderr} ${JSON.stringify(r.value.error)}`);
  const rep = r.value;
  assert.equal(rep.status, 'completed');
  assert.equal(rep.ramDigestMatch, true, 'the RAM digests match at switchover');
  const seen = await reports(to, vm);
  await waitFor(async () => (await reports(to, vm)) > seen + 1, 20_000, 100);
  const out = await consoleOf(to, vm);
  assert.doesNotMatch(out, /BAD/, 'munch found no corrupted page');
  // The last complete line: the console may be read while munch is half-way through printing one.
  const lines = out.split('\n');
  assert.match(lines[lines.length - 2] ?? '', /rss=ok$/);
  return rep;
}

describe('encodings and auto-converge between two daemons', { skip, timeout: 900_000 }, () => {
  let a: Daemon;
  let b: Daemon;
  before(async () => {
    [a, b] = await Promise.all([startDaemon('enc-a'), startDaemon('enc-b')]);
  });

  test('--xbzrle: re-sent pages go as deltas (munch rewriting 8 bytes per page), digest matches', { timeout: 300_000 }, async () => {
    // The whole wws is dirty every round, with a few bytes changed per page: deltas, and a
    // downtime limit it cannot meet keeps it iterating until the rounds stop shrinking.
    // 4 MB/s of 8-byte writes touches the whole 1024-page wws every 2 ms: every round re-sends it.
    // The cap keeps round 1 (2 MiB of data in 32 MiB) longer than those 2 ms: uncapped, on huge
    // pages, it once took so little that under 256 KiB were dirty after it (small-remainder).
    await startMunch(a, 'x1', 'wws=4M stride=8 rate=4M rss=2M');
    const rep = await migrateOk('x1', a, b, ['--xbzrle', '--xbzrle-cache', '16M', '--downtime-limit', '1ms', '--max-rounds', '6', '--max-bandwidth', '200Mbit']);
    const x = rep.xbzrle;
    assert.ok(x !== undefined, 'the report has xbzrle counters');
    assert.equal(x.cacheBytes, 16 * 1024 * 1024);
    assert.ok(rep.rounds >= 3, `rounds ${rep.rounds}`);
    assert.ok(x.hits > 100, `hits ${x.hits}`);
    assert.ok(x.misses > 0, `misses ${x.misses}`);
    assert.ok(x.deltaBytes < x.hits * 1024, `delta bytes ${x.deltaBytes} for ${x.hits} hits`);
    // Back again with a cache too small for the wws (64 pages): evictions, still exact. Pages enter
    // the cache in the live rounds after the first (stop-and-copy leaves it alone), and munch
    // dirties in bursts, so a move may switch over (small remainder) before any such round holds
    // more than 64 pages: up to three moves for one that does. Capped like the first move, so
    // round 1 outlasts a sweep of the wws (uncapped, a CI run's three moves all switched over
    // after a round 1 too short to leave 64 pages dirty).
    let here = b;
    let there = a;
    let evicting: MigrationReport | undefined;
    for (let i = 0; i < 3 && evicting === undefined; i++) {
      const rep = await migrateOk('x1', here, there, ['--xbzrle', '--xbzrle-cache', '256K', '--downtime-limit', '1ms', '--max-rounds', '5', '--max-bandwidth', '200Mbit']);
      [here, there] = [there, here];
      if (rep.perRound.slice(1, -1).some((r) => r.pages > 64)) evicting = rep;
    }
    assert.ok(evicting !== undefined, 'a move with a live round larger than the cache');
    assert.ok(evicting.xbzrle!.evictions > 0, `evictions ${evicting.xbzrle!.evictions}`);
    assert.equal((await tern(['vm', 'stop', 'x1', '--host', here.api])).code, 0);
  });

  for (const alg of ['lz4', 'zstd'] as const) {
    test(`--compress ${alg}: batches shrink, digest matches`, { timeout: 300_000 }, async () => {
      const vm = `z-${alg}`;
      await startMunch(a, vm, 'wws=4M stride=64 rate=1M rss=4M');
      const rep = await migrateOk(vm, a, b, ['--compress', alg]);
      const z = rep.compression;
      assert.ok(z !== undefined, 'the report has compression figures');
      assert.equal(z.algorithm, alg);
      assert.ok(z.inputBytes > 4 * 1024 * 1024, `input ${z.inputBytes}`);
      assert.ok(z.outputBytes < z.inputBytes && z.ratio > 1, `ratio ${z.ratio}`);
      assert.equal((await tern(['vm', 'stop', vm, '--host', b.api])).code, 0);
    });
  }

  test('--xbzrle with --compress lz4 together', { timeout: 300_000 }, async () => {
    await startMunch(a, 'xz', 'wws=2M stride=8 rate=200K rss=1M');
    // Capped, as above: a round 1 too short to dirty 256 KiB ends pre-copy before any round caches a page.
    const rep = await migrateOk('xz', a, b, ['--xbzrle', '--compress', 'lz4', '--downtime-limit', '1ms', '--max-rounds', '4', '--max-bandwidth', '50Mbit']);
    assert.ok(rep.xbzrle!.hits > 0 && rep.compression!.ratio > 1);
    assert.equal((await tern(['vm', 'stop', 'xz', '--host', b.api])).code, 0);
  });

  test('--streams 4: pages over four connections, digest matches', { timeout: 300_000 }, async () => {
    await startMunch(a, 's4', 'wws=4M stride=64 rate=1M rss=2M');
    const rep = await migrateOk('s4', a, b, ['--streams', '4', '--downtime-limit', '1ms', '--max-rounds', '4']);
    assert.ok(rep.rounds >= 2, `rounds ${rep.rounds}`);
    assert.equal(rep.pagesTransferred, rep.perRound.reduce((n, r) => n + r.pages, 0));
    const bad = await tern(['migrate', 's4', '--from', b.api, '--to', a.api, '--streams', '17']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--streams/);
    assert.equal((await tern(['vm', 'stop', 's4', '--host', b.api])).code, 0);
  });

  test('--auto-converge: a guest dirtying faster than --max-bandwidth gets throttled, reported per round', { timeout: 300_000 }, async () => {
    // munch rewrites a 4 MiB wws as fast as it can; 4 MB/s cannot keep up.
    await startMunch(a, 'ac', 'wws=4M stride=4096 rss=1M');
    const rep = await migrateOk('ac', a, b, ['--auto-converge', '--max-bandwidth', '4MB/s', '--downtime-limit', '1ms', '--max-rounds', '8']);
    const throttles = rep.perRound.map((r) => r.throttlePercent);
    assert.ok(throttles.some((t) => t > 0), `throttle per round: ${throttles.join(',')}`);
    assert.ok(rep.autoConverge !== undefined && rep.autoConverge.maxThrottlePercent >= 20, JSON.stringify(rep.autoConverge));
    for (let i = 1; i < throttles.length; i++) assert.ok(throttles[i]! >= throttles[i - 1]!, 'the throttle only steps up');
    assert.equal(throttles[0], 0, 'round 1 runs unthrottled');
    assert.equal((await tern(['vm', 'stop', 'ac', '--host', b.api])).code, 0);
  });

  test('without --auto-converge every round reports throttle 0; xbzrleCacheBytes alone is refused', async () => {
    await startMunch(a, 'n0', 'wws=1M stride=4096 rate=1M rss=1M');
    const rep = await migrateOk('n0', a, b, []);
    assert.ok(rep.perRound.every((r) => r.throttlePercent === 0));
    assert.equal(rep.xbzrle, undefined);
    assert.equal(rep.compression, undefined);
    const bad = await tern(['migrate', 'n0', '--from', b.api, '--to', a.api, '--xbzrle-cache', '1M']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--xbzrle-cache needs --xbzrle/);
    const badAlg = await tern(['migrate', 'n0', '--from', b.api, '--to', a.api, '--compress', 'gzip']);
    assert.equal(badAlg.code, 2);
    assert.match(badAlg.stderr, /lz4 or zstd/);
    assert.equal((await tern(['vm', 'stop', 'n0', '--host', b.api])).code, 0);
  });
});
