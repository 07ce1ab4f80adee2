// Live migration between real `tern host serve` processes, driven by `tern migrate`.
// Skipped when this build has no migration engine (src/migration/source.ts, destination.ts).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { HostInfo, MigrationInfo, VmInfo } from '../../src/host/api-types.js';
import type { MigrationReport } from '../../src/migration/report.js';
import { imagePath } from '../helpers/images.js';
import { HAS_ENGINE, count, http, killAll, sleep, startDaemon, tern, ternBackground, ternJson, waitFor, type Daemon } from './helpers.js';

const VERIFY = imagePath('verify');
const MUNCH = imagePath('munch');
const skip = HAS_ENGINE ? false : 'this build has no migration engine (src/migration/source.ts, destination.ts)';

after(() => killAll());

async function consoleOf(d: Daemon, vm: string): Promise<string> {
  const r = await tern(['vm', 'console', vm, '--host', d.api]);
  assert.equal(r.code, 0, `console of ${vm} on ${d.name}: ${r.stderr}`);
  return r.stdout;
}

async function statusOn(d: Daemon, vm: string): Promise<string | undefined> {
  const r = await http(d.api, 'GET', `/v1/vms/${vm}`);
  return r.status === 200 ? r.json<VmInfo>().status : undefined;
}

/** Until the VM on `d` has printed more B's than `than`. */
async function bRises(d: Daemon, vm: string, than: number): Promise<number> {
  let n = 0;
  await waitFor(async () => (n = count(await consoleOf(d, vm), 'B')) > than, 20_000, 100);
  return n;
}

describe('live migration between two daemons', { skip, timeout: 600_000 }, () => {
  let a: Daemon;
  let b: Daemon;
  before(async () => {
    [a, b] = await Promise.all([startDaemon('mig-a'), startDaemon('mig-b')]);
  });

  test('verify migrates back and forth 20 times: every report completed, console whole, no X, guest time kept', { timeout: 480_000 }, async () => {
    const start = await tern(['vm', 'start', VERIFY, '--host', a.api, '--name', 'v1', '--mem', '64M', '--append', 'region=16M mark=16']);
    assert.equal(start.code, 0, start.stderr);
    await bRises(a, 'v1', 2);
    let from = a;
    let to = b;
    // Guest time against wall time: the guest clock counts each switchover pause (guest clock
    // 'continuous', the default), so over the moves guest time falls behind wall time by far less
    // than the VM spent paused (each pause holds two SHA-256s of 64 MiB here: --verify).
    const clockAt = async (d: Daemon): Promise<{ guestMs: number; wallMs: number }> => {
      const t0 = performance.now();
      const v = await (await http(d.api, 'GET', '/v1/vms/v1')).json<VmInfo>();
      return { guestMs: v.guestTimeMs!, wallMs: (t0 + performance.now()) / 2 };
    };
    const clock0 = await clockAt(a);
    let pausedMs = 0;
    for (let i = 0; i < 20; i++) {
      const before = await consoleOf(from, 'v1');
      // --verify: a SHA-256 of all RAM on both sides; from the second move on, the destination
      // receives into RAM it kept warm from the VM's previous stay (the RAM pool).
      const r = await ternJson<MigrationReport>(['migrate', 'v1', '--from', from.api, '--to', to.api, '--downtime-limit', '50ms', '--verify'], 120_000);
      assert.equal(r.code, 0, `migration ${i + 1} ${from.name} -> ${to.name}: ${r.stderr} ${JSON.stringify(r.value.error)}`);
      const rep = r.value;
      assert.equal(rep.status, 'completed');
      assert.equal(rep.vm, 'v1');
      assert.equal(rep.source, from.name);
      assert.equal(rep.destination, to.name);
      assert.equal(rep.mode, 'precopy');
      assert.ok(rep.rounds >= 1 && rep.perRound.length >= 1);
      assert.ok(rep.bytesTransferred > 0 && rep.downtimeMs >= 0 && rep.totalTimeMs >= rep.downtimeMs);
      // QEMU's downtime (until the source has sent everything) is part of ours.
      assert.ok(rep.sourceDowntimeMs !== undefined && rep.sourceDowntimeMs > 0 && rep.sourceDowntimeMs <= rep.downtimeMs, `sourceDowntimeMs ${rep.sourceDowntimeMs} within downtimeMs ${rep.downtimeMs}`);
      assert.equal(rep.downtimeLimitMs, 50);
      assert.equal(rep.guestClock, 'continuous');
      pausedMs += rep.downtimeMs;

      // The VM left the source and runs at the destination, with its whole console history.
      assert.equal(await statusOn(from, 'v1'), undefined, 'the source dropped the VM');
      assert.equal(await statusOn(to, 'v1'), 'running');
      const arrived = await consoleOf(to, 'v1');
      assert.ok(arrived.startsWith(before), `console history whole after migration ${i + 1}`);
      assert.match(arrived, /^AB+$/, `no X after migration ${i + 1}`);
      await bRises(to, 'v1', count(arrived, 'B'));
      if (i < 2) {
        // The source keeps the departed VM's RAM warm; the destination took its pooled buffer.
        const hostInfo = async (d: Daemon): Promise<HostInfo> => (await http(d.api, 'GET', '/v1/host')).json<HostInfo>();
        const [src, dst] = [await hostInfo(from), await hostInfo(to)];
        assert.equal(src.memory.pooledBytes, 64 * 1024 * 1024, `migration ${i + 1}: the source pooled the RAM`);
        assert.equal(dst.memory.pooledBytes, 0, `migration ${i + 1}: the destination took pooled RAM or had none`);
        // Into fresh RAM (b's first), the destination wrote pages the source listed as written
        // (WRITTEN) before they came: of the 16 MiB region and the program, not all 64 MiB (it
        // stops at the load, so not always all of them; --verify hashed the RAM on both sides).
        // Into pooled RAM (back at a), none.
        const mib = (dst.memory.prefaultedBytes / 2 ** 20).toFixed(1);
        if (i === 0) assert.ok(dst.memory.prefaultedBytes > 0 && dst.memory.prefaultedBytes < 32 * 2 ** 20, `migration 1: ${mib} MiB of fresh RAM written ahead`);
        else assert.equal(dst.memory.prefaultedBytes, 0, `migration 2: ${mib} MiB written ahead into pooled RAM`);
        // The source keeps the departed VM's vCPU thread; from the second move on the destination
        // runs the VM on the thread it kept from the VM's previous stay.
        assert.equal(src.warmThreads, 1, `migration ${i + 1}: the source kept the vCPU thread`);
        assert.equal(dst.warmThreads, 0, `migration ${i + 1}: the destination used its kept thread or had none`);
      }
      [from, to] = [to, from];
    }
    const clock1 = await clockAt(from);
    const lagMs = clock1.wallMs - clock0.wallMs - (clock1.guestMs - clock0.guestMs);
    console.log(`guest clock: ${lagMs.toFixed(1)} ms behind wall time after 20 moves with ${pausedMs.toFixed(1)} ms of pauses`);
    assert.ok(lagMs < pausedMs / 4 + 50, `guest time fell ${lagMs.toFixed(1)} ms behind wall time over 20 moves that paused the VM ${pausedMs.toFixed(1)} ms`);
    const list = await ternJson<MigrationInfo[]>(['migrate', 'list', '--host', a.api]);
    const out = list.value.filter((m) => m.direction === 'outgoing');
    const inc = list.value.filter((m) => m.direction === 'incoming');
    assert.equal(out.length, 10);
    assert.equal(inc.length, 10);
    assert.ok(out.every((m) => m.status === 'completed' && m.report?.status === 'completed'));
    const info = await ternJson<VmInfo>(['vm', 'inspect', 'v1', '--host', from.api]);
    assert.equal(info.value.origin, 'migration');
    assert.equal((await tern(['vm', 'stop', 'v1', '--host', from.api])).code, 0);
  });

  test('human output: report with per-round table; migrate status shows it too', async () => {
    assert.equal((await tern(['vm', 'start', VERIFY, '--host', a.api, '--name', 'h1', '--mem', '32M', '--append', 'region=4M pace=5ms'])).code, 0);
    const r = await tern(['migrate', 'h1', '--from', a.api, '--to', b.api, '--verify'], 120_000);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^Migration [0-9a-f]{8} of h1: completed/);
    assert.match(r.stdout, /route:\s+mig-a \(127\.0\.0\.1:\d+\) -> mig-b/);
    assert.match(r.stdout, /downtime:\s+/);
    assert.match(r.stdout, /RAM digest:\s+match/);
    assert.match(r.stdout, /ROUND\s+PAGES\s+BYTES\s+TIME/);
    const id = /Migration ([0-9a-f]{8})/.exec(r.stdout)![1]!;
    const st = await tern(['migrate', 'status', id, '--host', a.api]);
    assert.equal(st.code, 0);
    assert.match(st.stdout, new RegExp(`Migration ${id} of h1: completed`));
    const stIn = await ternJson<MigrationInfo>(['migrate', 'status', id, '--host', b.api]);
    assert.equal(stIn.value.direction, 'incoming');
    assert.equal(stIn.value.status, 'completed');
    assert.equal((await tern(['vm', 'stop', 'h1', '--host', b.api])).code, 0);
  });

  test('a migration to a host that already has a VM of that name is refused, clearly', async () => {
    for (const d of [a, b]) {
      const r = await tern(['vm', 'start', VERIFY, '--host', d.api, '--name', 'same', '--mem', '16M', '--append', 'region=1M pace=5ms']);
      assert.equal(r.code, 0, r.stderr);
    }
    const r = await tern(['migrate', 'same', '--from', a.api, '--to', b.api], 60_000);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /destination host mig-b \(127\.0\.0\.1:\d+\) already has a VM named 'same'/);
    const raw = await http(a.api, 'POST', '/v1/migrations', { vm: 'same', to: b.api });
    assert.equal(raw.status, 409);
    assert.equal(raw.json<{ error: { code: string } }>().error.code, 'exists');
    assert.equal(await statusOn(a, 'same'), 'running');
    for (const d of [a, b]) assert.equal((await tern(['vm', 'stop', 'same', '--host', d.api])).code, 0);
  });

  test('paused, unknown and self migrations are refused; unreachable destinations say so', async () => {
    assert.equal((await tern(['vm', 'start', VERIFY, '--host', a.api, '--name', 'p1', '--mem', '16M', '--append', 'region=1M pace=5ms'])).code, 0);
    assert.equal((await tern(['vm', 'pause', 'p1', '--host', a.api])).code, 0);
    const paused = await tern(['migrate', 'p1', '--from', a.api, '--to', b.api]);
    assert.equal(paused.code, 1);
    assert.match(paused.stderr, /paused; resume it before migrating/);
    assert.equal((await tern(['vm', 'resume', 'p1', '--host', a.api])).code, 0);
    const unknown = await tern(['migrate', 'nope', '--from', a.api, '--to', b.api]);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /no VM named 'nope' on host mig-a/);
    const self = await tern(['migrate', 'p1', '--from', a.api, '--to', a.api]);
    assert.equal(self.code, 1);
    assert.match(self.stderr, /is this host/);
    const nowhere = await tern(['migrate', 'p1', '--from', a.api, '--to', '127.0.0.1:1']);
    assert.equal(nowhere.code, 1);
    assert.match(nowhere.stderr, /destination: cannot reach tern host at 127\.0\.0\.1:1/);
    assert.equal(await statusOn(a, 'p1'), 'running');
    assert.equal((await tern(['vm', 'stop', 'p1', '--host', a.api])).code, 0);
  });

  test('cancel: the report says cancelled and the VM keeps running on the source', { timeout: 120_000 }, async () => {
    assert.equal((await tern(['vm', 'start', VERIFY, '--host', a.api, '--name', 'c1', '--mem', '256M', '--append', 'region=64M'])).code, 0);
    await bRises(a, 'c1', 0);
    const started = await ternJson<{ id: string }>(['migrate', 'c1', '--from', a.api, '--to', b.api, '--max-bandwidth', '50Mbit', '--detach']);
    assert.equal(started.code, 0, started.stderr);
    const id = started.value.id;
    await waitFor(async () => ((await http(a.api, 'GET', `/v1/migrations/${id}`)).json<MigrationInfo>().progress?.bytesTransferred ?? 0) > 0, 20_000);
    assert.equal(await statusOn(a, 'c1'), 'migrating');
    const del = await http(a.api, 'DELETE', '/v1/vms/c1');
    assert.equal(del.status, 409, 'a migrating VM cannot be stopped');
    assert.equal((await http(a.api, 'POST', '/v1/vms/c1/pause')).status, 409);
    const cancel = await ternJson<MigrationInfo>(['migrate', 'cancel', id, '--host', a.api], 30_000);
    assert.equal(cancel.code, 0, cancel.stderr);
    assert.equal(cancel.value.status, 'cancelled');
    assert.equal(cancel.value.report?.status, 'cancelled');
    assert.equal(await statusOn(a, 'c1'), 'running');
    assert.equal(await statusOn(b, 'c1'), undefined);
    const con = await consoleOf(a, 'c1');
    assert.doesNotMatch(con, /X/);
    await bRises(a, 'c1', count(con, 'B'));
    const again = await http(a.api, 'POST', `/v1/migrations/${id}/cancel`);
    assert.equal(again.status, 409);
    assert.equal((await tern(['vm', 'stop', 'c1', '--host', a.api])).code, 0);
    // The destination gave its reservation back.
    await waitFor(async () => (await http(b.api, 'GET', '/v1/host')).json<{ memory: { reservedBytes: number } }>().memory.reservedBytes === 0, 10_000);
  });

  test('destination killed (SIGKILL) mid-migration: report failed, the VM still runs on the source with no X', { timeout: 120_000 }, async () => {
    const victim = await startDaemon('mig-victim');
    assert.equal((await tern(['vm', 'start', VERIFY, '--host', a.api, '--name', 'k1', '--mem', '256M', '--append', 'region=64M'])).code, 0);
    await bRises(a, 'k1', 0);
    const migrating = ternJson<MigrationReport>(['migrate', 'k1', '--from', a.api, '--to', victim.api, '--max-bandwidth', '50Mbit'], 90_000);
    const active = await waitFor(async () => {
      const list = (await http(a.api, 'GET', '/v1/migrations')).json<{ migrations: MigrationInfo[] }>().migrations;
      const m = list.find((x) => x.vm === 'k1' && x.report === undefined);
      return m !== undefined && (m.progress?.bytesTransferred ?? 0) > 0 ? m : undefined;
    }, 20_000);
    assert.ok(active !== undefined, 'the migration got going');
    victim.proc.kill('SIGKILL');
    assert.equal((await victim.exited).signal, 'SIGKILL');
    const r = await migrating;
    assert.equal(r.code, 1, r.stderr);
    assert.equal(r.value.status, 'failed');
    assert.ok(r.value.error !== undefined && r.value.error.message.length > 0);
    assert.equal(await statusOn(a, 'k1'), 'running');
    const con = await consoleOf(a, 'k1');
    assert.match(con, /^AB+$/);
    await bRises(a, 'k1', count(con, 'B'));
    const rec = (await http(a.api, 'GET', `/v1/migrations/${r.value.id}`)).json<MigrationInfo>();
    assert.equal(rec.status, 'failed');
    assert.equal((await tern(['vm', 'stop', 'k1', '--host', a.api])).code, 0);
  });

  test('console history travels live (console-precopy): the state saved in the downtime carries only its tail, and the history stays whole', { timeout: 120_000 }, async () => {
    // munch reporting every millisecond of guest time: tens of KiB of console a second.
    const start = await tern(['vm', 'start', MUNCH, '--host', a.api, '--name', 'ch1', '--mem', '32M', '--append', 'wws=1M rate=1M rss=1M report=1ms rsscheck=64K']);
    assert.equal(start.code, 0, start.stderr);
    assert.ok(await waitFor(async () => (await consoleOf(a, 'ch1')).length > 100_000, 60_000, 200), 'over 100 KB of console');
    let from = a;
    let to = b;
    for (let i = 0; i < 2; i++) {
      const before = await consoleOf(from, 'ch1');
      const r = await ternJson<MigrationReport>(['migrate', 'ch1', '--from', from.api, '--to', to.api], 60_000);
      assert.equal(r.code, 0, `${r.stderr} ${JSON.stringify(r.value.error)}`);
      assert.equal(r.value.status, 'completed');
      assert.ok(r.value.stateBytes < before.length / 4, `move ${i + 1}: ${r.value.stateBytes} bytes of state for ${before.length} bytes of console history`);
      const arrived = await consoleOf(to, 'ch1');
      assert.ok(arrived.startsWith(before), `move ${i + 1}: the history is whole (${before.length} bytes before, ${arrived.length} after)`);
      assert.doesNotMatch(arrived, /BAD/);
      [from, to] = [to, from];
    }
    assert.equal((await tern(['vm', 'stop', 'ch1', '--host', from.api])).code, 0);
  });

  test('console --follow follows the VM to its new host without repeating or losing output', { timeout: 120_000 }, async () => {
    assert.equal((await tern(['vm', 'start', VERIFY, '--host', a.api, '--name', 'fo1', '--mem', '32M', '--append', 'region=4M pace=5ms'])).code, 0);
    const follower = ternBackground(['vm', 'console', 'fo1', '--host', a.api, '--follow'], 60_000);
    assert.ok(await waitFor(() => follower.stdout().startsWith('A'), 10_000), 'following');
    assert.equal((await tern(['migrate', 'fo1', '--from', a.api, '--to', b.api], 60_000)).code, 0);
    await sleep(500);
    assert.equal((await tern(['migrate', 'fo1', '--from', b.api, '--to', a.api], 60_000)).code, 0);
    await sleep(500);
    assert.equal((await tern(['vm', 'stop', 'fo1', '--host', a.api])).code, 0);
    const r = await follower.result;
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /fo1 migrated to host mig-b \(127\.0\.0\.1:\d+\); following it there/);
    assert.match(r.stderr, /fo1 migrated to host mig-a/);
    assert.match(r.stdout, /^AB+$/, 'one A: nothing shown twice');
    assert.ok(count(r.stdout, 'B') > 100);
  });

  test('console --follow --wait on the destination, started before the migration, gets the VM from its first output there', { timeout: 120_000 }, async () => {
    // A bad wait and a VM that never comes are clear errors.
    assert.equal((await http(b.api, 'GET', '/v1/vms/fw1/console?follow=1&wait=soon')).status, 400);
    const t0 = Date.now();
    const none = await http(b.api, 'GET', '/v1/vms/nobody/console?follow=1&wait=300');
    assert.equal(none.status, 404);
    assert.ok(Date.now() - t0 >= 250, 'it waited');
    assert.match(none.text, /waited 300 ms/);
    assert.equal((await tern(['vm', 'console', 'fw1', '--wait', '1s', '--host', b.api])).code, 2, '--wait needs --follow');

    assert.equal((await tern(['vm', 'start', VERIFY, '--host', a.api, '--name', 'fw1', '--mem', '32M', '--append', 'region=4M pace=5ms'])).code, 0);
    await bRises(a, 'fw1', 2);
    const waiting = ternBackground(['vm', 'console', 'fw1', '--host', b.api, '--follow', '--wait', '60s'], 90_000);
    await sleep(300);
    assert.equal(waiting.stdout(), '', 'nothing before the VM is there');
    assert.equal((await tern(['migrate', 'fw1', '--from', a.api, '--to', b.api], 60_000)).code, 0);
    await bRises(b, 'fw1', count(await consoleOf(b, 'fw1'), 'B') + 2);
    assert.equal((await tern(['vm', 'stop', 'fw1', '--host', b.api])).code, 0);
    const r = await waiting.result;
    assert.equal(r.code, 0, r.stderr);
    // The whole history (it travels with the VM), then what the guest printed on b: nothing twice.
    assert.match(r.stdout, /^AB+$/);
    assert.match(r.stderr, /fw1 was stopped on host mig-b/);
  });

  test('Ctrl-C on tern migrate cancels the migration; the VM stays on the source', { timeout: 120_000 }, async () => {
    assert.equal((await tern(['vm', 'start', VERIFY, '--host', a.api, '--name', 'ctl', '--mem', '256M', '--append', 'region=64M'])).code, 0);
    await bRises(a, 'ctl', 0);
    const m = ternBackground(['migrate', 'ctl', '--from', a.api, '--to', b.api, '--max-bandwidth', '50Mbit', '--json'], 60_000);
    await waitFor(async () => (await statusOn(a, 'ctl')) === 'migrating', 20_000);
    await sleep(300);
    m.stop();
    const r = await m.result;
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /cancelling migration/);
    assert.equal((JSON.parse(r.stdout) as MigrationReport).status, 'cancelled');
    assert.equal(await statusOn(a, 'ctl'), 'running');
    assert.equal((await tern(['vm', 'stop', 'ctl', '--host', a.api])).code, 0);
  });

  test('the event stream reports migration progress and completion', async () => {
    assert.equal((await tern(['vm', 'start', VERIFY, '--host', a.api, '--name', 'ev1', '--mem', '32M', '--append', 'region=4M pace=5ms'])).code, 0);
    const events = ternBackground(['host', 'events', '--host', a.api, '--vm', 'ev1', '--json'], 60_000);
    assert.ok(await waitFor(() => events.stderr().includes('following the events'), 10_000), 'following events');
    const r = await ternJson<MigrationReport>(['migrate', 'ev1', '--from', a.api, '--to', b.api], 60_000);
    assert.equal(r.code, 0);
    await waitFor(() => events.stdout().includes('migration.completed'), 10_000);
    events.stop();
    const got = await events.result;
    const types = got.stdout.trim().split('\n').map((l) => (JSON.parse(l) as { type: string }).type);
    assert.equal(types[0], 'migration.started');
    assert.ok(types.includes('migration.progress'));
    assert.ok(types.includes('vm.departed'));
    assert.ok(types.includes('migration.completed'));
    assert.equal((await tern(['vm', 'stop', 'ev1', '--host', b.api])).code, 0);
  });
});
