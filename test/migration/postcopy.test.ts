// Post-copy, hybrid and recovery between real `tern host serve` processes, driven by `tern migrate`.
// The connection is cut with `ss -K` (the kernel resets the TCP connection; both daemons live on).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import type { MigrationInfo } from '../../src/host/api-types.js';
import type { MigrationReport } from '../../src/migration/report.js';
import { imagePath, munchLines } from '../helpers/images.js';
import { HAS_ENGINE, count, http, killAll, sleep, startDaemon, tern, ternBackground, ternJson, waitFor, type Daemon } from '../host/helpers.js';

const VERIFY = imagePath('verify');
const MUNCH = imagePath('munch');
const skip = HAS_ENGINE ? false : 'this build has no migration engine';

after(() => killAll());

async function consoleOf(d: Daemon, vm: string): Promise<string> {
  const r = await tern(['vm', 'console', vm, '--host', d.api]);
  assert.equal(r.code, 0, `console of ${vm} on ${d.name}: ${r.stderr}`);
  return r.stdout;
}

async function migrateJson(args: string[]): Promise<MigrationReport> {
  const r = await ternJson<MigrationReport>(['migrate', ...args], 120_000);
  assert.equal(r.code, 0, `tern migrate ${args.join(' ')}: ${r.stderr} ${JSON.stringify(r.value.error)}`);
  return r.value;
}

async function migration(d: Daemon, id: string): Promise<MigrationInfo> {
  const r = await http(d.api, 'GET', `/v1/migrations/${id}`);
  assert.equal(r.status, 200, r.text);
  return r.json<MigrationInfo>();
}

async function incomingOf(d: Daemon, vm: string): Promise<MigrationInfo | undefined> {
  const r = await http(d.api, 'GET', '/v1/migrations');
  return r.json<{ migrations: MigrationInfo[] }>().migrations.filter((m) => m.direction === 'incoming' && m.vm === vm).pop();
}

/** Resets every TCP connection to `addr` (host:port) from this machine: the kernel's RST, not a kill. */
function cutConnectionsTo(addr: string): void {
  const i = addr.lastIndexOf(':');
  execFileSync('ss', ['-K', 'dst', addr.slice(0, i), 'dport', '=', addr.slice(i + 1)], { stdio: 'ignore' });
}

function ssKillWorks(): boolean {
  try {
    execFileSync('ss', ['-K', 'dst', '127.0.0.1', 'dport', '=', '1'], { stdio: 'ignore' });
    return process.getuid?.() === 0;
  } catch {
    return false;
  }
}

describe('post-copy and hybrid between two daemons', { skip, timeout: 900_000 }, () => {
  let a: Daemon;
  let b: Daemon;
  before(async () => {
    [a, b] = await Promise.all([startDaemon('pc-a'), startDaemon('pc-b')]);
  });

  test('verify moves back and forth by post-copy, hybrid and auto: completed, RAM digests match, passes keep rising, no X', { timeout: 300_000 }, async () => {
    const start = await tern(['vm', 'start', VERIFY, '--host', a.api, '--name', 'pv', '--mem', '64M', '--append', 'region=16M mark=16']);
    assert.equal(start.code, 0, start.stderr);
    await waitFor(async () => count(await consoleOf(a, 'pv'), 'B') > 2, 20_000, 100);
    const plan: [string, string[]][] = [
      ['postcopy', ['--mode', 'postcopy']],
      ['hybrid', ['--mode', 'hybrid', '--precopy-rounds', '1']],
      ['postcopy', ['--mode', 'postcopy', '--prepaging', 'linear']],
      ['hybrid', ['--mode', 'hybrid', '--precopy-rounds', '2']],
      ['postcopy', ['--mode', 'postcopy']],
      ['auto', ['--mode', 'auto', '--max-rounds', '1']],
    ];
    let from = a;
    let to = b;
    let passes = 0;
    for (const [i, [mode, args]] of plan.entries()) {
      const rep = await migrateJson(['pv', '--from', from.api, '--to', to.api, '--verify', ...args]);
      assert.equal(rep.status, 'completed');
      if (mode === 'auto') {
        // auto switches to post-copy only when pre-copy did not converge.
        const switched = rep.switchoverReason === 'max-rounds' || rep.switchoverReason === 'not-converging';
        assert.equal(rep.mode, switched ? 'hybrid' : 'precopy', `auto after ${rep.switchoverReason}`);
      } else {
        assert.equal(rep.mode, mode, `migration ${i + 1}`);
      }
      assert.equal(rep.ramDigestMatch, true, `migration ${i + 1}: digest of the pages as they were at the switch`);
      assert.ok(rep.downtimeMs > 0 && rep.totalTimeMs >= rep.downtimeMs);
      const pc = rep.postcopy;
      if (rep.mode !== 'precopy') {
        assert.ok(pc !== undefined, 'post-copy figures in the report');
        assert.equal(pc.pagesRequested + pc.pagesPushed + rep.perRound.reduce((n, r) => n + r.pages, 0), rep.pagesTransferred);
        if (rep.mode === 'postcopy') assert.equal(pc.pagesRequested + pc.pagesPushed, 64 * 256, 'every page crosses once in pure post-copy');
        if (rep.mode === 'hybrid') assert.ok(pc.precopyRounds >= 1 && rep.perRound.length === pc.precopyRounds);
        assert.ok(pc.faultLatencyMs.max >= pc.faultLatencyMs.p99 && pc.faultLatencyMs.p99 >= pc.faultLatencyMs.p50);
      }
      // The VM left the source and keeps running at the destination.
      assert.equal((await http(from.api, 'GET', '/v1/vms/pv')).status, 404);
      const n = await waitFor(async () => {
        const c = await consoleOf(to, 'pv');
        assert.equal(count(c, 'X'), 0, `no X after migration ${i + 1}`);
        const k = count(c, 'B');
        return k > passes + 1 ? k : 0;
      }, 30_000, 200);
      assert.ok(n > passes, `passes rise after migration ${i + 1}`);
      passes = n;
      [from, to] = [to, from];
    }
    await tern(['vm', 'stop', 'pv', '--host', from.api]);
  });

  test('fault storm: munch writes random pages over most of RAM right after the switch; its resident set checks out', { timeout: 300_000 }, async () => {
    const start = await tern(['vm', 'start', MUNCH, '--host', a.api, '--name', 'storm', '--mem', '64M', '--append', 'wws=40M pattern=random rss=8M report=200ms']);
    assert.equal(start.code, 0, start.stderr);
    await waitFor(async () => munchLines(await consoleOf(a, 'storm')).length >= 2, 20_000, 100);
    let from = a;
    let to = b;
    let faults = 0;
    for (const prepaging of ['bubbling', 'linear', 'bubbling', 'linear']) {
      const before = munchLines(await consoleOf(from, 'storm')).length;
      const rep = await migrateJson(['storm', '--from', from.api, '--to', to.api, '--mode', 'postcopy', '--prepaging', prepaging, '--verify']);
      assert.equal(rep.status, 'completed');
      assert.equal(rep.ramDigestMatch, true);
      const pc = rep.postcopy!;
      assert.equal(pc.prepaging, prepaging);
      assert.equal(pc.pagesRequested + pc.pagesPushed, 64 * 256);
      assert.ok(rep.bytesTransferred <= 64 * 1024 * 1024 + 4 * 1024 * 1024, `post-copy bytes ${rep.bytesTransferred} stay within RAM + framing`);
      faults += pc.networkFaults;
      const lines = await waitFor(async () => {
        const l = munchLines(await consoleOf(to, 'storm'));
        return l.length > before + 2 ? l : undefined;
      }, 30_000, 200);
      assert.ok(lines !== undefined, 'munch keeps reporting at the destination');
      for (const l of lines) assert.match(l, /rss=ok$/, `munch's resident set intact: ${l}`);
      [from, to] = [to, from];
    }
    assert.ok(faults > 0, 'a guest touching random pages right after the switch takes network faults');
    // Hybrid: one pre-copy round, then the pages dirtied since go by post-copy.
    for (let i = 0; i < 2; i++) {
      const before = munchLines(await consoleOf(from, 'storm')).length;
      const rep = await migrateJson(['storm', '--from', from.api, '--to', to.api, '--mode', 'hybrid', '--precopy-rounds', '1', '--verify']);
      assert.equal(rep.mode, 'hybrid');
      assert.equal(rep.ramDigestMatch, true);
      assert.equal(rep.postcopy!.precopyRounds, 1);
      assert.ok(rep.postcopy!.pagesPushed + rep.postcopy!.pagesRequested < 64 * 256, 'post-copy sends only what the pre-copy round left dirty');
      const lines = await waitFor(async () => {
        const l = munchLines(await consoleOf(to, 'storm'));
        return l.length > before + 2 ? l : undefined;
      }, 30_000, 200);
      for (const l of lines!) assert.match(l, /rss=ok$/, `munch's resident set intact: ${l}`);
      [from, to] = [to, from];
    }
    await tern(['vm', 'stop', 'storm', '--host', from.api]);
  });

  test('the connection cut twice mid-post-copy: both sides pause, --resume finishes, nothing lost', { timeout: 300_000, skip: ssKillWorks() ? false : 'needs root and ss -K' }, async () => {
    const start = await tern(['vm', 'start', MUNCH, '--host', a.api, '--name', 'cut', '--mem', '64M', '--append', 'wws=8M pattern=seq rate=2M rss=24M report=200ms']);
    assert.equal(start.code, 0, start.stderr);
    await waitFor(async () => munchLines(await consoleOf(a, 'cut')).length >= 2, 20_000, 100);
    // 16 MB/s: the ~32 MiB of non-zero pages take about two seconds to push, time enough to cut.
    const r = await ternJson<{ id: string }>(['migrate', 'cut', '--from', a.api, '--to', b.api, '--mode', 'postcopy', '--max-bandwidth', '16MB/s', '--verify', '--detach']);
    assert.equal(r.code, 0, r.stderr);
    const id = r.value.id;
    for (let cut = 1; cut <= 2; cut++) {
      await waitFor(async () => (await migration(a, id)).status === 'postcopy-active', 30_000, 20);
      await sleep(150);
      cutConnectionsTo(b.migration!);
      const paused = await waitFor(async () => (await migration(a, id)).status === 'postcopy-paused', 10_000, 50);
      assert.ok(paused, `the source pauses after cut ${cut}`);
      const inc = await waitFor(async () => {
        const m = await incomingOf(b, 'cut');
        return m?.status === 'postcopy-paused' ? m : undefined;
      }, 10_000, 50);
      assert.ok(inc !== undefined && (inc.missingPages ?? 0) > 0, `the destination pauses with pages missing after cut ${cut}`);
      // Paused, not failed: the VM is at the destination and stays there.
      assert.equal((await http(b.api, 'GET', '/v1/vms/cut')).status, 200);
      const res = await ternJson<MigrationReport | { id: string }>(['migrate', '--resume', 'cut', '--from', a.api, '--to', b.api, ...(cut === 1 ? ['--detach'] : [])], 120_000);
      assert.equal(res.code, 0, res.stderr);
      if (cut === 2) {
        const rep = res.value as MigrationReport;
        assert.equal(rep.status, 'completed');
        assert.equal(rep.id, id);
        assert.equal(rep.ramDigestMatch, true);
        assert.equal(rep.postcopy!.resumes, 2);
        assert.ok(rep.postcopy!.pausedMs > 0);
      }
    }
    assert.equal((await http(a.api, 'GET', '/v1/vms/cut')).status, 404);
    const lines = await waitFor(async () => {
      const l = munchLines(await consoleOf(b, 'cut'));
      return l.length > 10 ? l : undefined;
    }, 30_000, 200);
    for (const l of lines!) assert.match(l, /rss=ok$/);
    await tern(['vm', 'stop', 'cut', '--host', b.api]);
  });

  test('auto: pre-copy that cannot converge (dirtying faster than the cap) switches to post-copy', { timeout: 120_000 }, async () => {
    const start = await tern(['vm', 'start', MUNCH, '--host', a.api, '--name', 'auto', '--mem', '64M', '--append', 'wws=8M pattern=seq rate=64M rss=4M report=200ms rsscheck=64K']); // 16x the cap. rsscheck: checking all 4 MiB of rss each report took a busy machine's guest longer than 200 ms, so it only checked and never wrote (small-remainder)
    assert.equal(start.code, 0, start.stderr);
    await waitFor(async () => munchLines(await consoleOf(a, 'auto')).length >= 2, 20_000, 100);
    const rep = await migrateJson(['auto', '--from', a.api, '--to', b.api, '--mode', 'auto', '--max-bandwidth', '4MB/s', '--max-rounds', '3', '--downtime-limit', '10ms', '--verify']);
    assert.equal(rep.status, 'completed');
    assert.equal(rep.mode, 'hybrid', `auto switched to post-copy (${rep.switchoverReason})`);
    assert.ok(rep.switchoverReason === 'max-rounds' || rep.switchoverReason === 'not-converging', rep.switchoverReason);
    assert.equal(rep.postcopy!.precopyRounds, rep.perRound.length);
    assert.ok(rep.perRound.length >= 1 && rep.perRound.length <= 3);
    assert.equal(rep.ramDigestMatch, true);
    for (const l of munchLines(await consoleOf(b, 'auto'))) assert.match(l, /rss=ok$/);
    await tern(['vm', 'stop', 'auto', '--host', b.api]);
  });

  test('a resume with nothing paused is refused; bad modes are usage errors', async () => {
    const r = await tern(['migrate', '--resume', 'nope', '--from', a.api, '--to', b.api]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /no migration of VM 'nope'/);
    const u = await tern(['migrate', 'x', '--from', a.api, '--to', b.api, '--mode', 'sideways']);
    assert.equal(u.code, 2);
    assert.match(u.stderr, /--mode/);
    const bad = await http(a.api, 'POST', '/v1/migrations', { vm: 'x', to: b.api, mode: 'sideways' });
    assert.equal(bad.status, 400);
  });

  test('the source daemon killed mid-post-copy: --resume reports the VM lost, and why', { timeout: 120_000 }, async () => {
    const c = await startDaemon('pc-c');
    const start = await tern(['vm', 'start', MUNCH, '--host', c.api, '--name', 'doomed', '--mem', '64M', '--append', 'wws=8M pattern=seq rate=2M rss=24M report=200ms']);
    assert.equal(start.code, 0, start.stderr);
    await waitFor(async () => munchLines(await consoleOf(c, 'doomed')).length >= 1, 20_000, 100);
    // The `tern migrate` that started it keeps following the source.
    const following = ternBackground(['migrate', 'doomed', '--from', c.api, '--to', b.api, '--mode', 'postcopy', '--max-bandwidth', '8MB/s', '--json'], 120_000);
    const id = await waitFor(async () => {
      const l = (await http(c.api, 'GET', '/v1/migrations')).json<{ migrations: MigrationInfo[] }>().migrations;
      return l.find((m) => m.vm === 'doomed' && m.direction === 'outgoing')?.id;
    }, 20_000, 20);
    assert.ok(id !== undefined);
    await waitFor(async () => (await migration(c, id)).status === 'postcopy-active', 30_000, 20);
    process.kill(c.pid, 'SIGKILL');
    await c.exited;
    const inc = await waitFor(async () => {
      const m = await incomingOf(b, 'doomed');
      return m?.status === 'postcopy-paused' ? m : undefined;
    }, 10_000, 50);
    assert.ok(inc !== undefined, 'the destination pauses');
    const res = await ternJson<MigrationReport>(['migrate', '--resume', 'doomed', '--from', c.api, '--to', b.api], 60_000);
    assert.equal(res.code, 1);
    assert.equal(res.value.status, 'lost');
    assert.match(res.value.error!.message, /lacks \d+ pages .* VM is lost/);
    assert.equal(res.value.error!.stage, 'postcopy');
    // The follower, once the source stops answering, asks the destination and says the same.
    const f = await following.result;
    assert.equal(f.code, 1, f.stderr);
    const rep = JSON.parse(f.stdout) as MigrationReport;
    assert.equal(rep.status, 'lost');
    assert.equal(rep.id, id);
  });
});
