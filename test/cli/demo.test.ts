import assert from 'node:assert/strict';
import { test } from 'node:test';
import { tern } from '../helpers/cli.js';

test('tern demo: two hosts, migrations back and forth, a JSON report, no corruption', async () => {
  const r = await tern(['demo', '--migrations', '3', '--json'], 180_000);
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout) as {
    migrations: number;
    completed: number;
    corruptionSeen: boolean;
    guestPasses: number;
    pausedMs: number;
    guestClockLagMs: number | null;
    finalHost: string;
    reports: Array<{ status: string; source: string; destination: string; downtimeMs: number; rounds: number }>;
  };
  assert.equal(j.migrations, 3);
  assert.equal(j.completed, 3);
  assert.equal(j.corruptionSeen, false);
  assert.ok(j.guestPasses > 0);
  // The pauses count as guest time: the guest clock keeps up with wall time (frozen, it would fall
  // behind by all of pausedMs, which holds a capped 4 MiB stop-and-copy per move here).
  assert.ok(j.guestClockLagMs !== null && j.pausedMs > 0);
  assert.ok(j.guestClockLagMs < j.pausedMs / 2 + 10, `guest clock ${j.guestClockLagMs} ms behind after ${j.pausedMs} ms of pauses`);
  assert.deepEqual(j.reports.map((x) => `${x.source}->${x.destination}`), ['a->b', 'b->a', 'a->b']);
  assert.equal(j.finalHost, 'b');
  for (const rep of j.reports) {
    assert.equal(rep.status, 'completed');
    assert.ok(rep.downtimeMs > 0 && rep.rounds >= 1);
  }
});

test('tern demo refuses a bad option with exit 2', async () => {
  const r = await tern(['demo', '--migrations', 'many']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /--migrations/);
});
