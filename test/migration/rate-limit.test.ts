import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CLARK_RATE_INCREMENT_BPS, DynamicRateLimit, TokenBucket, defaultRateIncrement } from '../../src/migration/rate-limit.js';

const MB = 1_000_000;
const GBIT = 125 * MB;

test('default increment: half the cap, at least Clark\'s 50 Mbit/s, none under an unlimited cap', () => {
  assert.equal(defaultRateIncrement(GBIT), GBIT / 2);
  assert.equal(defaultRateIncrement(8 * MB), CLARK_RATE_INCREMENT_BPS);
  assert.equal(defaultRateIncrement(0), Infinity);
  assert.equal(defaultRateIncrement(Infinity), Infinity);
});

test('round 1 at the floor (or the cap without one); later rounds at dirty rate + increment, clamped', () => {
  const l = new DynamicRateLimit(10 * MB, GBIT);
  assert.equal(l.roundLimit(1, 0), 10 * MB);
  assert.equal(l.roundLimit(2, 8 * MB), 8 * MB + GBIT / 2);
  assert.equal(l.roundLimit(3, 100 * MB), GBIT);
  assert.equal(l.finalLimit(), GBIT);
  assert.equal(new DynamicRateLimit(0, GBIT).roundLimit(1, 0), GBIT);
});

test('an explicit increment is Clark\'s rule as configured', () => {
  const l = new DynamicRateLimit(0, GBIT, CLARK_RATE_INCREMENT_BPS);
  assert.equal(l.incrementBps, CLARK_RATE_INCREMENT_BPS);
  assert.equal(l.roundLimit(2, 8 * MB), 8 * MB + CLARK_RATE_INCREMENT_BPS);
  // The floor still holds.
  assert.equal(new DynamicRateLimit(50 * MB, GBIT, 1 * MB).roundLimit(2, 1 * MB), 50 * MB);
});

test('unlimited cap: every round is unpaced', () => {
  const l = new DynamicRateLimit(0, 0);
  assert.equal(l.roundLimit(1, 0), Infinity);
  assert.equal(l.roundLimit(2, 5 * MB), Infinity);
  assert.equal(l.finalLimit(), Infinity);
});

test('token bucket: waits in proportion to the overdraft, never with an unlimited rate', () => {
  let now = 0;
  const b = new TokenBucket(() => now);
  b.setRate(1000, 100);
  assert.equal(b.take(500), 500);
  now = 500;
  assert.equal(b.take(0), 0);
  b.setRate(Infinity, 100);
  assert.equal(b.take(1e9), 0);
});
