import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DowntimeLimitPolicy, MAX_CATCH_UPS, NO_WAIT_ROUND_BYTES, ackWaitNeeded, catchUpWanted, expectedDowntimeMs } from '../../src/migration/switchover.js';

const MB = 1_000_000;
/** 1 Gbit/s in bytes per second. */
const GBIT = 125 * MB;
const base = { bandwidthBps: GBIT, stateBytes: 0, rttMs: 0 };

test('expected downtime: remaining bytes and state over the bandwidth, plus one round trip', () => {
  assert.equal(expectedDowntimeMs(1.25 * MB, 0, GBIT, 0), 10);
  assert.equal(expectedDowntimeMs(1.25 * MB, 1.25 * MB, GBIT, 3), 23);
});

test('the destination\'s own switchover time counts: a set that fits on the wire alone may not', () => {
  assert.equal(expectedDowntimeMs(1.25 * MB, 0, GBIT, 1, 4), 15);
  const p = new DowntimeLimitPolicy({ downtimeLimitMs: 50, maxRounds: 30, shrinkToContinue: 0 });
  // 5.5 MB: 44 ms on the wire, 54 ms with a destination that takes 10 ms to load and resume.
  const d = p.decide({ ...base, round: 1, remainingBytes: 5.5 * MB, switchoverMs: 10 });
  assert.equal(d.reason, undefined);
  assert.equal(d.expectedDowntimeMs, 54);
  assert.equal(new DowntimeLimitPolicy({ downtimeLimitMs: 50, maxRounds: 30, shrinkToContinue: 0 }).decide({ ...base, round: 1, remainingBytes: 5.5 * MB }).reason, 'downtime-limit');
});

test('a set that fits the limit but is still shrinking fast gets another live round', () => {
  const p = new DowntimeLimitPolicy({ downtimeLimitMs: 50, maxRounds: 30 });
  // Round 1 leaves 2 MB (16 ms at 1 Gbit/s, within 50 ms): QEMU would switch here.
  assert.equal(p.decide({ ...base, round: 1, remainingBytes: 2 * MB }).reason, undefined);
  // Round 2 took it to 0.5 MB (a quarter): still shrinking, go on.
  assert.equal(p.decide({ ...base, round: 2, remainingBytes: 0.5 * MB }).reason, undefined);
  // Round 3 only got to 0.4 MB: the low point; it fits, so switch.
  const d = p.decide({ ...base, round: 3, remainingBytes: 0.4 * MB });
  assert.equal(d.reason, 'downtime-limit');
  assert.equal(d.expectedDowntimeMs, 3.2);
});

test('shrinkToContinue 0 is QEMU\'s rule: switch as soon as the limit is met', () => {
  const p = new DowntimeLimitPolicy({ downtimeLimitMs: 50, maxRounds: 30, shrinkToContinue: 0 });
  assert.equal(p.decide({ ...base, round: 1, remainingBytes: 2 * MB }).reason, 'downtime-limit');
});

test('a remainder under 256 KiB switches at once; one over the limit never switches on the limit', () => {
  const p = new DowntimeLimitPolicy({ downtimeLimitMs: 50, maxRounds: 30 });
  assert.equal(p.decide({ ...base, round: 1, remainingBytes: 100 * 1024 }).reason, 'small-remainder');
  const q = new DowntimeLimitPolicy({ downtimeLimitMs: 1, maxRounds: 30 });
  assert.equal(q.decide({ ...base, round: 1, remainingBytes: 8 * MB }).reason, undefined);
  assert.equal(q.decide({ ...base, round: 2, remainingBytes: 8 * MB }).reason, undefined);
});

test('rounds that stop shrinking end in not-converging; the round limit ends in max-rounds', () => {
  const p = new DowntimeLimitPolicy({ downtimeLimitMs: 1, maxRounds: 30 });
  const sizes = [8, 6, 7, 7, 7];
  const reasons = sizes.map((s, i) => p.decide({ ...base, round: i + 1, remainingBytes: s * MB }).reason);
  assert.deepEqual(reasons, [undefined, undefined, undefined, undefined, 'not-converging']);
  const q = new DowntimeLimitPolicy({ downtimeLimitMs: 1, maxRounds: 2 });
  assert.equal(q.decide({ ...base, round: 1, remainingBytes: 8 * MB }).reason, undefined);
  assert.equal(q.decide({ ...base, round: 2, remainingBytes: 4 * MB }).reason, 'max-rounds');
});

test('catch-up round: wanted when the wait for the destination let the dirty set grow, within limits', () => {
  const base = { waitedMs: 30, decidedPages: 60, pendingPages: 200, bandwidthBps: GBIT, catchUps: 0, round: 3, maxRounds: 30 };
  assert.equal(catchUpWanted(base), true, '140 more pages: 4.6 ms more at 1 Gbit/s');
  assert.equal(catchUpWanted({ ...base, pendingPages: 85 }), false, 'under 1.5 times the decided set');
  assert.equal(catchUpWanted({ ...base, decidedPages: 2, pendingPages: 20 }), false, '18 more pages: under a millisecond at 1 Gbit/s');
  assert.equal(catchUpWanted({ ...base, decidedPages: 2, pendingPages: 20, bandwidthBps: 10 * MB }), true, 'the same pages are 7 ms at 80 Mbit/s (written at 2.5 MB/s)');
  assert.equal(catchUpWanted({ ...base, waitedMs: 0.5 }), false, 'no real wait: the growth is the guest, not the destination');
  assert.equal(catchUpWanted({ ...base, catchUps: MAX_CATCH_UPS }), false, 'at most MAX_CATCH_UPS');
  assert.equal(catchUpWanted({ ...base, round: 30 }), false, 'the round limit holds');
  assert.equal(catchUpWanted({ ...base, waitedMs: 5, pendingPages: 60 + 140 }), false, '140 pages in 5 ms: 115 MB/s, dirtied near the bandwidth');
});

test('ackWaitNeeded: pause at once after a small last round when the destination has every earlier one', () => {
  const base = { round: 4, previousAcked: true, roundBytes: 64 * 1024 };
  assert.equal(ackWaitNeeded(base), false, 'small round, the one before acknowledged: no wait');
  assert.equal(ackWaitNeeded({ ...base, roundBytes: NO_WAIT_ROUND_BYTES }), false, 'at the bound');
  assert.equal(ackWaitNeeded({ ...base, roundBytes: NO_WAIT_ROUND_BYTES + 1 }), true, 'a big round may still be queued there');
  assert.equal(ackWaitNeeded({ ...base, previousAcked: false }), true, 'the destination is behind (or its standby not ready: it holds PONGs)');
  assert.equal(ackWaitNeeded({ ...base, round: 1, previousAcked: false }), true, 'after round 1 no PONG has proved the destination ready');
});
