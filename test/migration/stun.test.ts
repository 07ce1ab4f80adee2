// Stunning rogue processes (Clark §5.5) between real `tern host serve` processes: the crowd guest
// runs a rogue task that keeps pre-copy from converging under a bandwidth cap; with --stun the
// source stuns it through the guest's migration-assist channel, the final dirty set shrinks, and
// the task resumes on the destination (or on the source when the migration fails).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { MigrationReport } from '../../src/migration/report.js';
import { imagePath } from '../helpers/images.js';
import { HAS_ENGINE, http, killAll, startDaemon, tern, ternJson, waitFor, type Daemon } from '../host/helpers.js';
import { killGateways, startGateway } from '../net/helpers.js';

const CROWD = imagePath('crowd');
const skip = HAS_ENGINE ? false : 'this build has no migration engine';
/** rogue: 16 MiB at 32 MB/s; modest: 1 MiB at 128 KB/s; ui (exempt): 1 MiB at 2 MB/s. */
const CROWD_ARGS = 'report=250ms modest-rate=128K ui=1M ui-rate=2M';
/** Under this cap the rogue task redirties its 16 MiB faster than a round can send it. */
const CAP = ['--max-bandwidth', '8MB/s', '--max-rounds', '6'];

after(() => {
  killAll();
  killGateways();
});

interface Status {
  t: number;
  rogue: number;
  modest: number;
  ui: number;
  stunned: string;
}

async function consoleOf(d: Daemon, vm: string): Promise<string> {
  const r = await tern(['vm', 'console', vm, '--host', d.api]);
  assert.equal(r.code, 0, `console of ${vm} on ${d.name}: ${r.stderr}`);
  return r.stdout;
}

function statuses(text: string): Status[] {
  const out: Status[] = [];
  for (const m of text.matchAll(/^crowd: t=([\d.]+)s rogue=(\d+) modest=(\d+) ui=(\d+) stunned=(\S+)$/gm)) {
    out.push({ t: Number(m[1]), rogue: Number(m[2]), modest: Number(m[3]), ui: Number(m[4]), stunned: m[5]! });
  }
  return out;
}

async function lastStatus(d: Daemon, vm: string): Promise<Status | undefined> {
  return statuses(await consoleOf(d, vm)).at(-1);
}

async function startCrowd(d: Daemon, name: string, extra = '', flags: string[] = []): Promise<void> {
  const r = await tern(['vm', 'start', CROWD, '--host', d.api, '--name', name, '--mem', '64M', '--append', `${CROWD_ARGS} ${extra}`.trim(), ...flags]);
  assert.equal(r.code, 0, r.stderr);
  await waitFor(async () => (await lastStatus(d, name)) !== undefined, 20_000, 100);
}

/** The rogue task runs (unstunned) on `d`: two status lines in a row with it unstunned and rising. */
async function rogueRuns(d: Daemon, vm: string): Promise<void> {
  let first: Status | undefined;
  await waitFor(async () => {
    const s = await lastStatus(d, vm);
    if (s === undefined || s.stunned.includes('rogue')) return false;
    if (first === undefined || s.t <= first.t) {
      first ??= s;
      return false;
    }
    return s.rogue > first.rogue;
  }, 20_000, 100);
}

function finalRound(r: MigrationReport): number {
  return r.perRound.at(-1)!.pages;
}

describe('stunning rogue tasks through the migration-assist channel', { skip, timeout: 240_000 }, () => {
  let a: Daemon;
  let b: Daemon;
  before(async () => {
    [a, b] = await Promise.all([startDaemon('stun-a'), startDaemon('stun-b')]);
  });

  test('with --stun the final dirty set is far smaller; rogue stunned, the exempt task not; rogue resumes on the destination', async (t) => {
    await startCrowd(a, 'c1');
    const plain = await ternJson<MigrationReport>(['migrate', 'c1', '--from', a.api, '--to', b.api, ...CAP], 120_000);
    assert.equal(plain.code, 0, plain.stderr);
    assert.equal(plain.value.status, 'completed');
    assert.equal(plain.value.stun, undefined);
    await rogueRuns(b, 'c1');

    const stunned = await ternJson<MigrationReport>(['migrate', 'c1', '--from', b.api, '--to', a.api, ...CAP, '--stun', '--stun-budget', '512KB/s'], 120_000);
    assert.equal(stunned.code, 0, stunned.stderr);
    const r = stunned.value;
    assert.equal(r.status, 'completed');
    const s = r.stun!;
    assert.equal(s.outcome, 'stunned', JSON.stringify(s));
    assert.equal(s.budgetBps, 512_000);
    const byName = new Map(s.tasks.map((x) => [x.name, x]));
    assert.deepEqual([...byName.keys()].sort(), ['modest', 'rogue', 'ui']);
    assert.equal(byName.get('rogue')!.stunned, true);
    assert.ok(byName.get('rogue')!.writeRateBps > s.budgetBps, 'rogue was over budget');
    assert.equal(byName.get('rogue')!.pages, 4096);
    assert.equal(byName.get('ui')!.exempt, true);
    assert.equal(byName.get('ui')!.stunned, false, 'the exempt task is never stunned');
    assert.equal(byName.get('modest')!.stunned, false, 'modest stays under the budget');
    // The round that stunned says so, and later rounds show rogue quiet.
    const at = r.perRound.find((p) => p.round === s.round)!;
    assert.deepEqual(at.stunned, ['rogue']);
    assert.ok(at.tasks!.some((x) => x.name === 'rogue' && x.writeRateBps > s.budgetBps));
    const later = r.perRound.filter((p) => p.round > s.round! + 1 && p.tasks !== undefined);
    for (const p of later) assert.equal(p.tasks!.find((x) => x.name === 'rogue')!.writeRateBps, 0, `rogue wrote nothing in round ${p.round}`);

    const without = finalRound(plain.value);
    const withStun = finalRound(r);
    t.diagnostic(`final dirty set: ${without} pages without stunning, ${withStun} with; downtime ${plain.value.downtimeMs} ms vs ${r.downtimeMs} ms`);
    assert.ok(without >= 4096, `without stunning the final round carries rogue's region (${without} pages)`);
    assert.ok(withStun * 4 < without, `with stunning the final round is far smaller: ${withStun} vs ${without} pages`);

    // The destination resumes it: its progress rises again there.
    await rogueRuns(a, 'c1');
    const text = await consoleOf(a, 'c1');
    assert.ok(statuses(text).some((x) => x.stunned === 'rogue'), 'the console shows rogue stunned for a while');
    assert.doesNotMatch(text, /^X /m, 'no page was lost or rolled back');
  });

  test('bad requests: stun with post-copy, a budget without stun', async () => {
    const post = await http(a.api, 'POST', '/v1/migrations', { vm: 'c1', to: b.api, stun: true, mode: 'postcopy' });
    assert.equal(post.status, 400);
    assert.match(post.text, /'stun' is for pre-copy only/);
    const budget = await http(a.api, 'POST', '/v1/migrations', { vm: 'c1', to: b.api, stunBudgetBps: 1000 });
    assert.equal(budget.status, 400);
    assert.match(budget.text, /'stunBudgetBps' needs 'stun'/);
    const neg = await http(a.api, 'POST', '/v1/migrations', { vm: 'c1', to: b.api, stun: true, stunBudgetBps: -1 });
    assert.equal(neg.status, 400);
    const cli = await tern(['migrate', 'c1', '--from', a.api, '--to', b.api, '--stun-budget', '1MB/s']);
    assert.equal(cli.code, 2);
    assert.match(cli.stderr, /--stun-budget needs --stun/);
  });

  test('a guest without the channel migrates with --stun: completed, with a note', async () => {
    await startCrowd(a, 'c2', 'assist=off');
    const r = await ternJson<MigrationReport>(['migrate', 'c2', '--from', a.api, '--to', b.api, ...CAP, '--stun'], 120_000);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.value.status, 'completed');
    const s = r.value.stun!;
    assert.equal(s.outcome, 'unavailable');
    assert.deepEqual(s.tasks, []);
    assert.match(s.note!, /no answer within|refused|had not arrived/);
    assert.ok(r.value.perRound.every((p) => p.stunned === undefined));
    await rogueRuns(b, 'c2');
    assert.doesNotMatch(await consoleOf(b, 'c2'), /^X /m);
  });

  test('a VM with a gateway: the channel shares its vsock endpoint; stunned, then resumed at the destination', async () => {
    const gw = await startGateway();
    await startCrowd(a, 'c4', '', ['--gateway', gw.listen]);
    const r = await ternJson<MigrationReport>(['migrate', 'c4', '--from', a.api, '--to', b.api, ...CAP, '--stun', '--stun-budget', '512KB/s'], 120_000);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.value.stun?.outcome, 'stunned', JSON.stringify(r.value.stun));
    assert.deepEqual(r.value.stun!.tasks.filter((x) => x.stunned).map((x) => x.name), ['rogue']);
    await rogueRuns(b, 'c4');
    const info = await http(b.api, 'GET', '/v1/vms/c4');
    assert.equal(info.json<{ network?: { connections: number } }>().network?.connections, 0, 'the channel is not a gateway connection');
  });

  test('the destination dies after the stun: the migration fails and rogue resumes on the source', async () => {
    const c = await startDaemon('stun-c');
    await startCrowd(a, 'c3');
    const run = ternJson<MigrationReport>(['migrate', 'c3', '--from', a.api, '--to', c.api, ...CAP, '--stun', '--stun-budget', '512KB/s'], 120_000);
    // The guest says when it is stunned; the round after the stun sends rogue's 16 MiB (about 2 s).
    await waitFor(async () => (await lastStatus(a, 'c3'))?.stunned === 'rogue', 60_000, 50);
    c.proc.kill('SIGKILL');
    const r = await run;
    assert.equal(r.code, 1);
    assert.equal(r.value.status, 'failed');
    const s = r.value.stun!;
    assert.equal(s.outcome, 'stunned');
    assert.deepEqual(s.resumedOnSource, ['rogue']);
    await rogueRuns(a, 'c3');
    assert.doesNotMatch(await consoleOf(a, 'c3'), /^X /m);
  });
});
