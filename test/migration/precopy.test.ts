// Pre-copy end to end: real vCPU threads, real TCP on 127.0.0.1, the verify and munch guests.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, test } from 'node:test';
import type { MigrationProgress, MigrationReport } from '../../src/migration/report.js';
import { until } from '../helpers/images.js';
import { MiB, TestDestinationHost, bootTestVm, count, migrate, startServer, stopAllVcpus, type TestVm } from '../helpers/test-hosts.js';

after(stopAllVcpus);

const REASONS = ['downtime-limit', 'small-remainder', 'not-converging', 'max-rounds'];

function checkReport(r: MigrationReport, ramBytes: number): void {
  assert.equal(r.status, 'completed', JSON.stringify(r.error));
  assert.equal(r.error, undefined);
  assert.equal(r.mode, 'precopy');
  assert.equal(r.ramBytes, ramBytes);
  assert.ok(r.rounds >= 1);
  assert.equal(r.perRound.length, r.rounds);
  r.perRound.forEach((s, i) => assert.equal(s.round, i + 1));
  assert.equal(r.perRound[0]!.pages + r.perRound[0]!.skippedPages!, ramBytes / 4096, 'round 1 covers every page');
  assert.equal(r.pagesTransferred, r.perRound.reduce((n, s) => n + s.pages, 0));
  assert.ok(r.zeroPages > 0, 'most of RAM is zero and goes as zero markers');
  // Raw pages are 4 KiB each on the wire; pages sent as XBZRLE deltas (after the XBZRLE fallback
  // of a pre-copy that stopped converging) are not.
  const deltas = r.xbzrle?.hits ?? 0;
  if (r.xbzrle !== undefined) assert.ok(r.xbzrle.fallbackRound !== undefined, 'XBZRLE only through the fallback here');
  assert.ok(r.bytesTransferred >= (r.pagesTransferred - r.zeroPages - deltas) * 4096, 'raw pages are 4 KiB each on the wire');
  assert.ok(r.bytesTransferred < r.pagesTransferred * 4096, 'zero pages cost far less than a page');
  assert.ok(r.bytesTransferred >= r.perRound.reduce((n, s) => n + s.bytes, 0) + r.stateBytes);
  assert.ok(r.stateBytes > 0);
  assert.ok(REASONS.includes(r.switchoverReason), r.switchoverReason);
  assert.ok(r.downtimeMs > 0);
  assert.ok(r.expectedDowntimeMs > 0);
  assert.ok(r.totalTimeMs >= r.downtimeMs);
  assert.ok(r.setupTimeMs > 0 && r.setupTimeMs < r.totalTimeMs);
  assert.equal(r.perRound.at(-1)!.dirtyPages, 0, 'nothing is dirtied in stop-and-copy');
}

test('verify migrates A -> B -> A ... six times: no page lost, console whole, digests equal', async () => {
  const ram = 32 * MiB;
  const hosts = [new TestDestinationHost(), new TestDestinationHost()];
  const servers = [await startServer(hosts[0]!, { name: 'A' }), await startServer(hosts[1]!, { name: 'B' })];
  try {
    let vm: TestVm = await bootTestVm('verify', 'region=8M', ram, 'verify-1');
    assert.ok(await until(() => vm.count('B') >= 3, 30_000), 'verify is running');
    let at = 0; // index of the host the VM runs on (A = the booting host)
    for (let hop = 0; hop < 6; hop++) {
      const to = 1 - at;
      const progress: MigrationProgress[] = [];
      const activated = once(servers[to]!.server, 'activated');
      const { migration, report } = migrate(vm, servers[to]!.port, { sourceName: at === 0 ? 'A' : 'B', destinationName: to === 0 ? 'A' : 'B' });
      migration.on('progress', (p) => progress.push(p));
      const r = await report;
      checkReport(r, ram);
      assert.equal(migration.committed, true);
      assert.equal(r.ramDigestMatch, true, 'both sides hashed the same RAM');
      const [incoming, info] = (await activated) as [{ name: string }, { downtimeMs: number; migrationId: string }];
      assert.equal(incoming.name, 'verify-1');
      assert.equal(info.migrationId, migration.progress().id);
      // Both ends in one process: RESUMED_AT names this boot, so the downtime is read off one clock,
      // and it holds the destination's own share (COMPLETE received to resume).
      assert.equal(r.downtimeExact, true);
      assert.ok(r.downtimeMs >= info.downtimeMs, `downtime ${r.downtimeMs} ms >= the destination's share ${info.downtimeMs} ms`);
      assert.ok(r.downtimeMs >= r.sourceDowntimeMs!, `downtime ${r.downtimeMs} ms >= the source's share ${r.sourceDowntimeMs} ms`);
      assert.ok(info.downtimeMs > 0 && info.downtimeMs <= r.downtimeMs);
      assert.ok(progress.some((p) => p.stage === 'precopy') && progress.some((p) => p.stage === 'stop-and-copy'));
      assert.equal(progress.at(-1)!.status, 'completed');

      // The old side is paused for good; its console is the prefix of the new side's.
      assert.equal(vm.resumes, 0, 'the source never resumed the VM');
      const old = vm.console();
      const moved = hosts[to]!.vms.get('verify-1');
      assert.ok(moved !== undefined, 'the destination activated the VM');
      assert.ok(moved.console().startsWith(old), 'console history carried over whole');
      const before = count(old, 'B');
      assert.ok(await until(() => moved.count('B') > before + 2, 30_000), 'verify keeps running at the destination');
      assert.doesNotMatch(moved.console(), /X/, 'no page was lost or rolled back');
      assert.equal(hosts[to]!.reservations, 0);
      assert.equal(hosts[to]!.doubleDrops, 0);
      // Round 1's arrival is announced once per migration, before the state is loaded (warm-ups end there).
      assert.equal(hosts[to]!.bulkArrivals, Math.floor(hop / 2) + 1);
      assert.equal(hosts[to]!.bulkArrivalsBeforeLoad, hosts[to]!.bulkArrivals);

      // The source host lets go of its copy.
      if (hop === 0) await vm.stop();
      else await hosts[at]!.remove('verify-1');
      vm = moved;
      at = to;
    }
  } finally {
    for (const s of servers) await s.server.close();
  }
});

test('a destination that cannot load a state yet (its standby thread still starting) holds the pause back', async () => {
  const ram = 16 * MiB;
  const host = new TestDestinationHost();
  let open!: () => void;
  let openedAt = 0;
  host.readyGate = new Promise<void>((resolve) => (open = resolve)).then(() => {
    openedAt = performance.now();
  });
  const { server, port } = await startServer(host, { name: 'B' });
  try {
    const vm = await bootTestVm('verify', 'region=4M', ram, 'gated-1');
    assert.ok(await until(() => vm.count('B') >= 2, 30_000), 'verify is running');
    const { migration, report } = migrate(vm, port);
    let pausedAt = 0;
    migration.on('progress', (p) => {
      if (p.stage === 'stop-and-copy' && pausedAt === 0) pausedAt = performance.now();
    });
    // Round 1 of 16 MiB on loopback takes well under 400 ms: the switchover waits for the gate.
    setTimeout(open, 400);
    const r = await report;
    checkReport(r, ram);
    assert.equal(r.ramDigestMatch, true);
    assert.ok(openedAt > 0 && pausedAt >= openedAt, `paused ${(pausedAt - openedAt).toFixed(1)} ms after the destination became ready`);
    await vm.stop();
    assert.doesNotMatch(host.vms.get('gated-1')!.console(), /X/);
  } finally {
    await server.close();
  }
});

test('--stop-copy-bandwidth: live rounds keep the cap, the stop-and-copy round runs at its own rate (0: unlimited, as QEMU\'s completion)', async () => {
  const ram = 32 * MiB;
  const max = 8_000_000;
  const host = new TestDestinationHost();
  const { server, port } = await startServer(host, { name: 'B' });
  try {
    const vm = await bootTestVm('munch', 'wws=4M rate=4M pattern=random rss=1M report=200ms', ram, 'munch-sc');
    assert.ok(await until(() => /t=0\.[2-9]/.test(vm.console()), 30_000), 'munch is running');
    const { report } = migrate(vm, port, { maxBandwidthBps: max, stopCopyBandwidthBps: 0, downtimeLimitMs: 50, maxRounds: 4 });
    const r = await report;
    checkReport(r, ram);
    assert.equal(r.ramDigestMatch, true);
    assert.equal(r.stopCopyBandwidthBps, 0);
    for (const s of r.perRound.slice(0, -1)) assert.ok(s.rateLimitBps > 0 && s.rateLimitBps <= max, `live round ${s.round} stays under the cap: ${s.rateLimitBps}`);
    assert.equal(r.perRound.at(-1)!.rateLimitBps, 0, 'stop-and-copy is not paced');
    await vm.stop();
    assert.doesNotMatch(host.vms.get('munch-sc')!.console(), /BAD/);
  } finally {
    await server.close();
  }
});

test('munch dirtying 16 MB/s under an 8 MB/s cap: several rounds, dirty pages per round, rates within [min, max]', async () => {
  const ram = 32 * MiB;
  const min = 4_000_000;
  const max = 8_000_000;
  const host = new TestDestinationHost();
  const { server, port } = await startServer(host, { name: 'B' });
  try {
    const vm = await bootTestVm('munch', 'wws=4M rate=16M pattern=random rss=1M report=200ms', ram, 'munch-1');
    assert.ok(await until(() => /t=0\.[2-9]/.test(vm.console()), 30_000), 'munch is running');
    const { migration, report } = migrate(vm, port, { maxBandwidthBps: max, minBandwidthBps: min, downtimeLimitMs: 50, maxRounds: 6 });
    const rounds: number[] = [];
    migration.on('progress', (p) => {
      if (p.stage === 'precopy' && !rounds.includes(p.round)) rounds.push(p.round);
    });
    const r = await report;
    checkReport(r, ram);
    assert.equal(r.ramDigestMatch, true);
    assert.ok(r.rounds >= 3, `several rounds: ${r.rounds}`);
    assert.ok(rounds.length >= 2, 'progress reported each round');
    const live = r.perRound.slice(0, -1);
    assert.ok(live[0]!.dirtyPages > 64 && live[0]!.dirtyRateBps > 0, 'munch dirtied pages during round 1');
    for (const s of live) {
      // munch writes in bursts every 10 ms of guest time, so only a round that left nothing
      // dirty (and so ended the iteration) may report none.
      assert.ok(s.dirtyPages > 0 || s === live.at(-1), `round ${s.round} reports the pages munch dirtied`);
      assert.ok(s.rateLimitBps >= min && s.rateLimitBps <= max, `round ${s.round} limit ${s.rateLimitBps}`);
    }
    assert.equal(live[0]!.rateLimitBps, min, 'round 1 starts at the floor (Clark)');
    assert.equal(r.perRound.at(-1)!.rateLimitBps, max, 'stop-and-copy runs at the maximum');
    assert.equal(r.stopCopyBandwidthBps, max, 'the report names the stop-and-copy cap');
    assert.ok(r.perRound[1]!.pages > 0 && r.perRound[1]!.pages <= r.perRound[0]!.dirtyPages, 'round 2 sends at most what round 1 left dirty');
    assert.ok(r.zeroPages > 0);
    await vm.stop();

    const moved = host.vms.get('munch-1')!;
    const lines = moved.console().split('\n').length;
    assert.ok(await until(() => moved.console().split('\n').length > lines + 2, 30_000), 'munch reports on at the destination');
    assert.match(moved.console().split('\n').slice(lines - 1).join('\n'), /rss=ok/);
    assert.doesNotMatch(moved.console(), /BAD/, 'the resident set arrived intact');
  } finally {
    await server.close();
  }
});
