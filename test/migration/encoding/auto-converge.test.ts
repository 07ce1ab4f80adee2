// Auto-converge follows QEMU's rule: two periods with dirtied > 50% of transferred trigger a
// step; the throttle starts at 20%, steps by 10%, stops at 99%.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AutoConverge } from '../../../src/migration/auto-converge.js';

test('no throttle while the dirty bytes stay at or under half the transferred bytes', () => {
  const a = new AutoConverge();
  for (let i = 0; i < 10; i++) assert.equal(a.afterPeriod(500, 1000), 0);
  assert.equal(a.throttlePercent, 0);
});

test('the second high period starts at 20%, then every second one adds 10%, up to 99%', () => {
  const a = new AutoConverge();
  const seen: number[] = [];
  for (let i = 0; i < 40; i++) seen.push(a.afterPeriod(501, 1000));
  assert.deepEqual(seen.slice(0, 8), [0, 20, 20, 30, 30, 40, 40, 50]);
  for (let i = 1; i < seen.length; i++) assert.ok(seen[i]! >= seen[i - 1]!);
  assert.equal(a.throttlePercent, 99);
  assert.equal(Math.max(...seen), 99);
});

test('high periods need not be consecutive (QEMU counts them), and low periods never lower the throttle', () => {
  const a = new AutoConverge();
  assert.equal(a.afterPeriod(900, 1000), 0);
  assert.equal(a.afterPeriod(100, 1000), 0);
  assert.equal(a.afterPeriod(900, 1000), 20);
  assert.equal(a.afterPeriod(0, 1000), 20);
  assert.equal(a.afterPeriod(900, 0), 20);
  assert.equal(a.afterPeriod(900, 0), 30);
});

test('options are checked and honoured', () => {
  assert.throws(() => new AutoConverge({ initialPercent: 120 }), RangeError);
  const a = new AutoConverge({ initialPercent: 50, incrementPercent: 25, maxPercent: 90 });
  const seen: number[] = [];
  for (let i = 0; i < 8; i++) seen.push(a.afterPeriod(2, 1));
  assert.deepEqual(seen, [0, 50, 50, 75, 75, 90, 90, 90]);
});
