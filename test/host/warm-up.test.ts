// The guest-image warm-up of an incoming migration (protocol 1.2, IMAGE): the destination runs
// the VM's image on its standby vCPU thread during pre-copy, throws that machine away, and
// resumes the VM on the thread. Real daemons; the counts come from GET /v1/host.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { HostInfo, MigrationInfo } from '../../src/host/api-types.js';
import type { MigrationReport } from '../../src/migration/report.js';
import { imagePath } from '../helpers/images.js';
import { HAS_ENGINE, count, http, killAll, sleep, startDaemon, tern, ternJson, waitFor, type Daemon } from './helpers.js';

const VERIFY = imagePath('verify');
const skip = HAS_ENGINE ? false : 'this build has no migration engine';

after(() => killAll());

async function hostInfo(d: Daemon): Promise<HostInfo> {
  return (await http(d.api, 'GET', '/v1/host')).json<HostInfo>();
}

async function consoleOf(d: Daemon, vm: string): Promise<string> {
  const r = await tern(['vm', 'console', vm, '--host', d.api]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout;
}

/** Migrates `vm` and checks what a user sees: completed, RAM digests equal, history whole, no X, B's still rising. */
async function move(vm: string, from: Daemon, to: Daemon, extra: string[] = []): Promise<MigrationReport> {
  const before = await consoleOf(from, vm);
  const r = await ternJson<MigrationReport>(['migrate', vm, '--from', from.api, '--to', to.api, '--verify', ...extra], 120_000);
  assert.equal(r.code, 0, `${from.name} -> ${to.name}: ${r.stderr} ${JSON.stringify(r.value.error)}`);
  assert.equal(r.value.status, 'completed');
  assert.equal(r.value.ramDigestMatch, true);
  const arrived = await consoleOf(to, vm);
  // The throwaway machine booted the same image: none of its output may reach the VM's console.
  assert.ok(arrived.startsWith(before), 'console history whole');
  assert.match(arrived, /^AB+$/, 'one boot (one A), no X');
  const n = count(arrived, 'B');
  await waitFor(async () => count(await consoleOf(to, vm), 'B') > n + 1, 20_000, 100);
  return r.value;
}

describe('guest-image warm-up of incoming migrations', { skip, timeout: 300_000 }, () => {
  let a: Daemon;
  let b: Daemon;
  let c: Daemon;
  before(async () => {
    // a keeps no vCPU threads, so every arrival there warms up; c never warms up.
    [a, b, c] = await Promise.all([startDaemon('wu-a', ['--warm-threads', '0']), startDaemon('wu-b'), startDaemon('wu-c', ['--warm-up', '0'])]);
  });

  test('the destination warms up on the image the source sends; the image travels on with the VM', async () => {
    const start = await tern(['vm', 'start', VERIFY, '--host', a.api, '--name', 'w1', '--mem', '64M', '--append', 'region=16M mark=16']);
    assert.equal(start.code, 0, start.stderr);
    await waitFor(async () => count(await consoleOf(a, 'w1'), 'B') > 2, 20_000, 100);

    await move('w1', a, b);
    assert.equal((await hostInfo(b)).warmUps, 1, 'b warmed up a thread for w1');
    assert.equal((await hostInfo(a)).warmUps, 0);

    // Back to a, which kept no thread: it warms up on the image b received from a.
    await move('w1', b, a);
    assert.equal((await hostInfo(a)).warmUps, 1, 'a warmed up with the image that came through b');

    // To b again: b kept w1's vCPU thread when it left, which already ran this image.
    await move('w1', a, b);
    assert.equal((await hostInfo(b)).warmUps, 1, 'a kept thread needs no warm-up');
    assert.equal((await hostInfo(b)).warmThreads, 0, 'b used its kept thread');

    // --warm-up 0: none, and the migration is the same.
    await move('w1', b, c);
    assert.equal((await hostInfo(c)).warmUps, 0);

    // Post-copy resumes the VM at once: no IMAGE, no warm-up.
    await move('w1', c, a, ['--mode', 'postcopy']);
    assert.equal((await hostInfo(a)).warmUps, 1, 'post-copy does not warm up');
    assert.equal((await tern(['vm', 'stop', 'w1', '--host', a.api])).code, 0);

    const human = await tern(['host', 'info', '--host', b.api]);
    assert.match(human.stdout, /1 guest-image warm-ups run for incoming migrations/);
  });
});

describe('engine warm-up at daemon start', { skip, timeout: 120_000 }, () => {
  const warmUpLine = (d: Daemon): { migrations: number; ms: number } | undefined => {
    const line = d.stderr().split('\n').find((l) => l.includes('"engine warm-up done"'));
    return line === undefined ? undefined : (JSON.parse(line) as { migrations: number; ms: number });
  };

  test('a new daemon migrates a synthetic VM to itself a few times; no list or count shows them', async () => {
    const d = await startDaemon('wu-engine', [], 20_000, { TERN_LOG: 'info' });
    assert.ok(await waitFor(async () => warmUpLine(d) !== undefined, 60_000, 100), d.stderr().slice(-2000));
    assert.equal(warmUpLine(d)!.migrations, 6, d.stderr().slice(-2000));
    assert.doesNotMatch(d.stderr(), /"level":(40|50)/, 'no warning or error');
    const list = await ternJson<MigrationInfo[]>(['migrate', 'list', '--host', d.api]);
    assert.deepEqual(list.value, []);
    const info = await hostInfo(d);
    assert.deepEqual(info.migrations, { outgoing: 0, incoming: 0 });
    assert.equal(info.vms, 0);
    assert.equal(info.memory.reservedBytes, 0);

    const none = await startDaemon('wu-no-engine', ['--no-engine-warm-up'], 20_000, { TERN_LOG: 'info' });
    await sleep(2000);
    assert.equal(warmUpLine(none), undefined, 'no warm-up with --no-engine-warm-up');
  });
});

describe('spare vCPU thread', { skip, timeout: 120_000 }, () => {
  test('a daemon keeps one new thread ready; a VM with no thread of its image takes it; another follows', async () => {
    const d = await startDaemon('wu-spare');
    assert.ok(await waitFor(async () => (await hostInfo(d)).spareThreads === 1, 60_000, 100), 'a spare thread after start');
    const human = await tern(['host', 'info', '--host', d.api]);
    assert.match(human.stdout, /, 1 spare;/);
    const start = await tern(['vm', 'start', VERIFY, '--host', d.api, '--name', 'sp1', '--mem', '16M', '--append', 'region=4M mark=16']);
    assert.equal(start.code, 0, start.stderr);
    assert.equal((await hostInfo(d)).spareThreads, 0, 'the new VM took the spare');
    await waitFor(async () => count(await consoleOf(d, 'sp1'), 'B') > 2, 20_000, 100);
    assert.match(await consoleOf(d, 'sp1'), /^AB+$/, 'the VM runs on the spare thread');
    assert.ok(await waitFor(async () => (await hostInfo(d)).spareThreads === 1, 30_000, 100), 'another spare follows');
    assert.equal((await tern(['vm', 'stop', 'sp1', '--host', d.api])).code, 0);

    const none = await startDaemon('wu-no-spare', ['--no-spare-thread', '--no-engine-warm-up']);
    await sleep(1500);
    assert.equal((await hostInfo(none)).spareThreads, 0, 'none with --no-spare-thread');
  });
});
