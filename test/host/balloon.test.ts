// The balloon through real `tern host serve` daemons: the API and `tern vm balloon` inflate and
// deflate a running munch guest; migrations never send ballooned pages (pre-copy, post-copy)
// and, with free page hinting, skip the pages the guest reports free in round 1; --verify
// compares all RAM on both sides each time.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { VmInfo } from '../../src/host/api-types.js';
import type { MigrationReport } from '../../src/migration/report.js';
import { imagePath, munchLines } from '../helpers/images.js';
import { HAS_ENGINE, http, killAll, tern, ternJson, waitFor, type Daemon, startDaemon } from './helpers.js';

const MUNCH = imagePath('munch');
const VERIFY = imagePath('verify');
const MiB = 1024 * 1024;
const PAGE = 4096;
const skip = HAS_ENGINE ? false : 'this build has no migration engine';

after(() => killAll());

async function info(d: Daemon, vm: string): Promise<VmInfo> {
  const r = await http(d.api, 'GET', `/v1/vms/${vm}`);
  assert.equal(r.status, 200, r.text);
  return r.json<VmInfo>();
}

async function consoleOf(d: Daemon, vm: string): Promise<string> {
  const r = await tern(['vm', 'console', vm, '--host', d.api]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout;
}

/** Until munch on `d` has printed `more` status lines beyond `than`; returns the console. */
async function moreStatus(d: Daemon, vm: string, than: number, more = 2): Promise<string> {
  let c = '';
  await waitFor(async () => munchLines((c = await consoleOf(d, vm))).length >= than + more, 30_000, 100);
  assert.ok(munchLines(c).length >= than + more, `munch on ${d.name} keeps reporting: ${c.slice(-400)}`);
  return c;
}

/** munch checks its rss and heap: no BAD, no failed allocation, last line rss=ok. */
function assertHealthy(c: string, where: string): void {
  assert.doesNotMatch(c, /BAD|failed/, `${where}: ${c.slice(-600)}`);
  const lines = munchLines(c);
  assert.match(lines[lines.length - 1]!, / rss=ok$/, where);
}

async function start(d: Daemon, name: string, mem: string, args: string): Promise<void> {
  const r = await tern(['vm', 'start', MUNCH, '--host', d.api, '--name', name, '--mem', mem, '--append', args]);
  assert.equal(r.code, 0, r.stderr);
  await waitFor(async () => (await info(d, name)).balloon?.driver === true, 20_000);
  assert.equal((await info(d, name)).balloon?.driver, true, `${name}: the balloon driver started`);
}

async function migrate(from: Daemon, to: Daemon, vm: string, extra: string[] = []): Promise<MigrationReport> {
  const r = await ternJson<MigrationReport>(['migrate', vm, '--from', from.api, '--to', to.api, '--verify', ...extra], 180_000);
  assert.equal(r.code, 0, `${vm} ${from.name} -> ${to.name}: ${r.stderr} ${JSON.stringify(r.value.error)}`);
  assert.equal(r.value.status, 'completed');
  assert.equal(r.value.ramDigestMatch, true, 'RAM digests match at switchover');
  return r.value;
}

describe('balloon through the host', { skip, timeout: 600_000 }, () => {
  let a: Daemon;
  let b: Daemon;
  before(async () => {
    [a, b] = await Promise.all([startDaemon('bal-a'), startDaemon('bal-b')]);
  });

  test('inflate then deflate a running guest through the API and the CLI; bad targets refused', async () => {
    await start(a, 'm0', '64M', 'wws=1M rate=1M rss=4M report=200ms balloon=on');
    const fresh = await info(a, 'm0');
    assert.deepEqual(fresh.balloon, { targetBytes: 64 * MiB, actualBytes: 64 * MiB, balloonedBytes: 0, driver: true, freePageHint: true });

    for (const [body, status] of [[{ targetBytes: 1000 }, 400], [{ targetBytes: 128 * MiB }, 400], [{ targetBytes: 0 }, 400], [{}, 400], [{ targetBytes: 16 * MiB, x: 1 }, 400], ['nope', 400]] as const) {
      const r = await http(a.api, 'POST', '/v1/vms/m0/balloon', body);
      assert.equal(r.status, status, `${JSON.stringify(body)}: ${r.text}`);
      assert.match(r.json<{ error: { message: string } }>().error.message, /targetBytes|field|JSON|object/);
    }
    assert.equal((await http(a.api, 'POST', '/v1/vms/nobody/balloon', { targetBytes: 16 * MiB })).status, 404);

    // A guest without a balloon driver: 409, the target is not set.
    const v = await tern(['vm', 'start', VERIFY, '--host', a.api, '--name', 'nodriver', '--mem', '16M', '--append', 'region=1M']);
    assert.equal(v.code, 0, v.stderr);
    const nd = await http(a.api, 'POST', '/v1/vms/nodriver/balloon', { targetBytes: 8 * MiB });
    assert.equal(nd.status, 409, nd.text);
    assert.match(nd.text, /no balloon driver/);
    assert.equal((await info(a, 'nodriver')).balloon?.targetBytes, 16 * MiB);
    assert.equal((await tern(['vm', 'stop', 'nodriver', '--host', a.api])).code, 0);

    const before = munchLines(await consoleOf(a, 'm0')).length;
    const inflated = await ternJson<VmInfo>(['vm', 'balloon', 'm0', '16M', '--wait', '--host', a.api]);
    assert.equal(inflated.code, 0, inflated.stderr);
    assert.deepEqual(inflated.value.balloon, { targetBytes: 16 * MiB, actualBytes: 16 * MiB, balloonedBytes: 48 * MiB, driver: true, freePageHint: true });
    let c = await moreStatus(a, 'm0', before);
    assert.match(munchLines(c).pop()!, / balloon=12288p target=12288p /);
    assertHealthy(c, 'inflated');

    const human = await tern(['vm', 'balloon', 'm0', '64M', '--wait', '--host', a.api]);
    assert.equal(human.code, 0, human.stderr);
    assert.match(human.stdout, /^VM m0 on host bal-a: guest keeps 64\.0 MiB of 64\.0 MiB, 0 B in the balloon/);
    const deflated = await info(a, 'm0');
    assert.equal(deflated.balloon?.actualBytes, 64 * MiB);
    assert.equal(deflated.balloon?.balloonedBytes, 0);
    c = await moreStatus(a, 'm0', munchLines(c).length);
    assert.match(munchLines(c).pop()!, / balloon=0p target=0p /);
    assertHealthy(c, 'deflated');
    assert.equal(deflated.status, 'running');

    // Not while it migrates (a slow migration, cancelled afterwards).
    const mig = await ternJson<{ id: string }>(['migrate', 'm0', '--from', a.api, '--to', b.api, '--max-bandwidth', '4MB/s', '--detach']);
    assert.equal(mig.code, 0, mig.stderr);
    const during = await http(a.api, 'POST', '/v1/vms/m0/balloon', { targetBytes: 32 * MiB });
    assert.equal(during.status, 409, during.text);
    assert.match(during.text, /migrating/);
    assert.equal((await tern(['migrate', 'cancel', mig.value.id, '--host', a.api])).code, 0);
    await waitFor(async () => (await info(a, 'm0')).status === 'running', 20_000);
    assert.equal((await tern(['vm', 'stop', 'm0', '--host', a.api])).code, 0);
  });

  test('an inflated balloon is never sent: pre-copy there and back with --verify', async () => {
    await start(a, 'm1', '64M', 'wws=1M rate=1M rss=4M report=200ms balloon=on');
    const set = await ternJson<VmInfo>(['vm', 'balloon', 'm1', '16M', '--wait', '--host', a.api]);
    assert.equal(set.value.balloon?.balloonedBytes, 48 * MiB);
    let from = a;
    let to = b;
    for (let i = 0; i < 2; i++) {
      const c0 = await consoleOf(from, 'm1');
      const rep = await migrate(from, to, 'm1');
      // What the guest keeps (16 MiB: image, rss, wws, free pages) at most, plus 1 MiB for frames, state and re-sent pages.
      assert.ok(rep.bytesTransferred <= 17 * MiB, `move ${i + 1}: ${rep.bytesTransferred} bytes sent for a VM keeping 16 MiB of 64`);
      // Not even as zero-page entries: at most the 4096 pages it keeps, plus pages re-sent in later rounds.
      assert.ok(rep.pagesTransferred <= (16 * MiB) / PAGE + 512, `move ${i + 1}: ${rep.pagesTransferred} page entries`);
      assert.ok(rep.skippedPages!.balloon >= (48 * MiB) / PAGE, `move ${i + 1}: ${JSON.stringify(rep.skippedPages)}`);
      const there = await info(to, 'm1');
      assert.deepEqual(there.balloon, { targetBytes: 16 * MiB, actualBytes: 16 * MiB, balloonedBytes: 48 * MiB, driver: true, freePageHint: true }, 'the destination holds the same balloon');
      assertHealthy(await moreStatus(to, 'm1', munchLines(c0).length), `after move ${i + 1}`);
      [from, to] = [to, from];
    }
    // Deflated there, the guest gets its pages back and uses them.
    const d = await ternJson<VmInfo>(['vm', 'balloon', 'm1', '64M', '--wait', '--host', from.api]);
    assert.equal(d.value.balloon?.balloonedBytes, 0);
    assertHealthy(await moreStatus(from, 'm1', munchLines(await consoleOf(from, 'm1')).length), 'deflated after the moves');
    assert.equal((await tern(['vm', 'stop', 'm1', '--host', from.api])).code, 0);
  });

  test('post-copy of a ballooned VM neither pushes nor fetches the ballooned pages', async () => {
    await start(a, 'm2', '64M', 'wws=1M rate=1M rss=4M report=200ms balloon=on');
    await ternJson<VmInfo>(['vm', 'balloon', 'm2', '16M', '--wait', '--host', a.api]);
    const ballooned = (48 * MiB) / PAGE;
    const c0 = await consoleOf(a, 'm2');
    const rep = await migrate(a, b, 'm2', ['--mode', 'postcopy']);
    const pc = rep.postcopy!;
    assert.equal(rep.skippedPages!.balloon, ballooned, JSON.stringify(rep.skippedPages));
    assert.ok(pc.pagesPushed + pc.pagesRequested <= (64 * MiB) / PAGE - ballooned, `pushed ${pc.pagesPushed} + requested ${pc.pagesRequested} pages, at most the ${(16 * MiB) / PAGE} not ballooned`);
    assert.ok(rep.bytesTransferred <= 17 * MiB, `${rep.bytesTransferred} bytes`);
    assert.ok(rep.pagesTransferred <= (16 * MiB) / PAGE, `${rep.pagesTransferred} page entries`);
    assert.equal((await info(b, 'm2')).balloon?.balloonedBytes, 48 * MiB);
    assertHealthy(await moreStatus(b, 'm2', munchLines(c0).length), 'after post-copy');
    // Hybrid back: round 1 skips them, the post-copy phase does not push them.
    const c1 = await consoleOf(b, 'm2');
    const back = await migrate(b, a, 'm2', ['--mode', 'hybrid']);
    assert.ok(back.bytesTransferred <= 17 * MiB, `hybrid: ${back.bytesTransferred} bytes`);
    assert.ok(back.skippedPages!.balloon >= ballooned);
    assert.ok(back.pagesTransferred <= (16 * MiB) / PAGE + 512, `hybrid: ${back.pagesTransferred} page entries`);
    assertHealthy(await moreStatus(a, 'm2', munchLines(c1).length), 'after hybrid');
    assert.equal((await tern(['vm', 'stop', 'm2', '--host', a.api])).code, 0);
  });

  test('free page hinting: free-but-dirty heap pages are skipped in round 1; --verify passes', async (t) => {
    // The heap grows to 40 MiB (written), then shrinks to 2 MiB: 38 MiB free but dirty.
    await start(a, 'h1', '64M', 'wws=1M rate=1M rss=1M report=200ms balloon=on heap=40M:600ms,2M:1000s');
    await waitFor(async () => / heap=2097152 /.test(munchLines(await consoleOf(a, 'h1')).pop() ?? ''), 30_000);
    const without = await migrate(a, b, 'h1', ['--no-free-page-hint']);
    assert.equal(without.skippedPages!.freeHint, 0);
    const c1 = await consoleOf(b, 'h1');
    assertHealthy(await moreStatus(b, 'h1', munchLines(c1).length), 'after the move without hinting');
    const withHints = await migrate(b, a, 'h1');
    assert.ok(withHints.skippedPages!.freeHint >= (30 * MiB) / PAGE, `hinted pages skipped: ${JSON.stringify(withHints.skippedPages)}`);
    t.diagnostic(`bytes sent: ${without.bytesTransferred} without hinting, ${withHints.bytesTransferred} with (${JSON.stringify(withHints.skippedPages)})`);
    assert.ok(withHints.bytesTransferred * 2 < without.bytesTransferred, `with hinting ${withHints.bytesTransferred} bytes, without ${without.bytesTransferred}`);
    // The guest reuses the hinted pages (the heap grows again in its next cycle) with its checks passing.
    assertHealthy(await moreStatus(a, 'h1', munchLines(await consoleOf(a, 'h1')).length), 'after the move with hinting');
    assert.equal((await tern(['vm', 'stop', 'h1', '--host', a.api])).code, 0);
  });

  test('a self-ballooning guest moves back and forth with its heap growing and shrinking', async () => {
    await start(a, 's1', '64M', 'wws=1M rate=1M rss=2M report=200ms balloon=self balloon-period=100ms balloon-reserve=1M heap=2M:300ms,24M:300ms');
    await waitFor(async () => ((await info(a, 's1')).balloon?.balloonedBytes ?? 0) > 16 * MiB, 20_000);
    let from = a;
    let to = b;
    let skipped = 0;
    for (let i = 0; i < 4; i++) {
      const c0 = await consoleOf(from, 's1');
      const rep = await migrate(from, to, 's1');
      skipped += rep.skippedPages!.balloon;
      assertHealthy(await moreStatus(to, 's1', munchLines(c0).length, 3), `after move ${i + 1}`);
      [from, to] = [to, from];
    }
    assert.ok(skipped > 0, 'ballooned pages were skipped');
    const last = munchLines(await consoleOf(from, 's1')).pop()!;
    assert.match(last, /reclaimed=[1-9]/, 'the heap took ballooned pages back');
    assert.equal((await tern(['vm', 'stop', 's1', '--host', from.api])).code, 0);
  });
});
