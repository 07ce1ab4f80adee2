import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, test } from 'node:test';
import { HUGE_PAGES_TUNABLE, hugePagesStatus, withHugePages } from '../../src/util/huge-pages.js';
import { imagePath } from '../helpers/images.js';
import { http, killAll, startDaemon, tern, waitFor, type Daemon } from './helpers.js';

const MiB = 1024 * 1024;
after(() => killAll());

test('withHugePages adds the tunable once, keeps the user’s other tunables, and honours a choice already made', () => {
  assert.equal(withHugePages({}).GLIBC_TUNABLES, HUGE_PAGES_TUNABLE);
  assert.equal(withHugePages({ GLIBC_TUNABLES: 'glibc.malloc.arena_max=2' }).GLIBC_TUNABLES, `glibc.malloc.arena_max=2:${HUGE_PAGES_TUNABLE}`);
  assert.equal(withHugePages({ GLIBC_TUNABLES: 'glibc.malloc.hugetlb=0' }).GLIBC_TUNABLES, 'glibc.malloc.hugetlb=0');
  assert.equal(withHugePages({ TERN_HUGE_PAGES: '0' }).GLIBC_TUNABLES, undefined);
  const twice = withHugePages(withHugePages({}));
  assert.equal(twice.GLIBC_TUNABLES, HUGE_PAGES_TUNABLE);
});

test('hugePagesStatus says off, and why, without the tunable', () => {
  const on = hugePagesStatus({ GLIBC_TUNABLES: HUGE_PAGES_TUNABLE });
  const off = hugePagesStatus({ GLIBC_TUNABLES: 'glibc.malloc.hugetlb=0' });
  assert.equal(on.requested, true);
  assert.equal(off.requested, false);
  if (on.kernelMode === 'madvise') {
    assert.equal(on.note, 'on');
    assert.match(off.note, /^off: GLIBC_TUNABLES lacks glibc\.malloc\.hugetlb=1/);
  } else if (on.kernelMode === 'never') {
    assert.match(on.note, /^off: the kernel has transparent huge pages disabled/);
  }
});

/** Kilobytes of the process's anonymous memory on huge pages. */
function anonHugeKiB(pid: number): number {
  const m = /^AnonHugePages:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
  assert.ok(m !== null, `no AnonHugePages line for pid ${pid}`);
  return Number(m[1]);
}

async function hostHugePages(d: Daemon): Promise<string> {
  const r = await http(d.api, 'GET', '/v1/host');
  assert.equal(r.status, 200);
  return r.json<{ hugePages: string }>().hugePages;
}

/** Starts a verify guest writing 32 MiB and waits until it has finished its first pass. */
async function busyGuest(d: Daemon, name: string): Promise<void> {
  const r = await tern(['vm', 'start', imagePath('verify'), '--host', d.api, '--name', name, '--mem', '64M', '--append', 'region=32M mark=16']);
  assert.equal(r.code, 0, r.stderr);
  await waitFor(async () => (await tern(['vm', 'console', name, '--host', d.api])).stdout.includes('B'), 30_000);
}

test('the tern command starts the daemon with guest RAM on huge pages; TERN_HUGE_PAGES=0 leaves them off', async (t) => {
  const mode = hugePagesStatus().kernelMode;
  const on = await startDaemon('thp-on', ['--no-engine-warm-up'], 20_000, {}, true);
  const off = await startDaemon('thp-off', ['--no-engine-warm-up'], 20_000, { TERN_HUGE_PAGES: '0' }, true);
  try {
    const env = readFileSync(`/proc/${on.pid}/environ`, 'utf8').split('\0');
    assert.ok(env.includes(`GLIBC_TUNABLES=${HUGE_PAGES_TUNABLE}`), 'bin/tern exports the tunable to the daemon it execs');
    assert.ok(!readFileSync(`/proc/${off.pid}/environ`, 'utf8').includes('glibc.malloc.hugetlb'));
    assert.equal(on.proc.pid, on.pid, 'bin/tern execs Node: the daemon keeps the PID its starter knows');
    assert.equal(await hostHugePages(on), hugePagesStatus({ GLIBC_TUNABLES: HUGE_PAGES_TUNABLE }).note);
    if (mode !== 'madvise') {
      t.diagnostic(`kernel THP mode '${mode}': only 'madvise' tells the two daemons apart; RAM not checked`);
      return;
    }
    assert.match(await hostHugePages(off), /^off: GLIBC_TUNABLES lacks/);
    await busyGuest(on, 'h1');
    await busyGuest(off, 'h2');
    const withTunable = anonHugeKiB(on.pid);
    const without = anonHugeKiB(off.pid);
    t.diagnostic(`AnonHugePages: ${withTunable} KiB with the tunable, ${without} KiB without`);
    assert.ok(withTunable * 1024 >= 16 * MiB, `the guest's 32 MiB written, yet only ${withTunable} KiB on huge pages`);
    assert.ok(without * 1024 < 16 * MiB, `${without} KiB on huge pages without the tunable`);
  } finally {
    on.proc.kill('SIGKILL');
    off.proc.kill('SIGKILL');
  }
});
