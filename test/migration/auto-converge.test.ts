// Auto-converge in the engine: a VM whose every page is dirtied continuously under a low cap gets
// throttled (20%, then up), the rounds report it, and a cancelled migration sets the throttle back
// to 0 because the VM keeps running on the source.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { GuestRam } from '../../src/machine/memory/ram.js';
import { until } from '../helpers/images.js';
import { staticVm } from '../helpers/static-vm.js';
import { MiB, NullDestinationHost, migrate, startServer } from '../helpers/test-hosts.js';

test('throttle steps up while every page stays dirty; cancel puts it back to 0', async () => {
  const host = new NullDestinationHost();
  const { server, port } = await startServer(host);
  const ram = GuestRam.allocate(2 * MiB);
  const throttles: number[] = [];
  let n = 0;
  // "The guest": rewrites a byte of every page every 5 ms.
  const writer = setInterval(() => {
    n++;
    for (let p = 0; p < ram.pageCount; p++) ram.u8[p * 4096 + (n % 4096)] = n & 0xff;
    ram.dirty.markAll();
  }, 5);
  const vm = staticVm(ram, 'hot', { setThrottle: (p) => void throttles.push(p) });
  try {
    const { migration, report } = migrate(vm, port, { autoConverge: true, maxBandwidthBps: 4 * MiB, downtimeLimitMs: 1, maxRounds: 100, verifyRam: false });
    assert.ok(await until(() => throttles.some((t) => t >= 30), 60_000), `throttle calls ${throttles.join(',')}`);
    migration.cancel();
    const r = await report;
    assert.equal(r.status, 'cancelled');
    assert.deepEqual(throttles.slice(0, 2), [20, 30], 'QEMU steps: 20% first, then +10%');
    assert.equal(throttles.at(-1), 0, 'the VM stays here at full speed');
    const per = r.perRound.map((s) => s.throttlePercent);
    assert.equal(per[0], 0);
    assert.ok(per.includes(20), per.join(','));
    for (let i = 1; i < per.length; i++) assert.ok(per[i]! >= per[i - 1]!, per.join(','));
    assert.equal(r.autoConverge?.maxThrottlePercent, Math.max(...throttles));
    assert.ok(await until(() => host.reservations === 0, 10_000));
  } finally {
    clearInterval(writer);
    await server.close();
  }
});

test('rounds that stop shrinking do not end pre-copy while the throttle can still rise: it converges once the guest slows', async () => {
  const host = new NullDestinationHost();
  const { server, port } = await startServer(host);
  // Every page dirtied every 5 ms, until the throttle reaches 50%: then the guest (which now
  // runs half the time) only dirties one page in 16.
  const run = async (autoConverge: boolean): Promise<{ reason: string | undefined; maxThrottle: number | undefined; rounds: number }> => {
    const ram = GuestRam.allocate(1 * MiB);
    // Non-zero pages from the start: round 1 sends them whole (paced), so the writer runs during it.
    ram.u8.fill(0xa5);
    let throttle = 0;
    let n = 0;
    const writer = setInterval(() => {
      n++;
      for (let p = 0; p < ram.pageCount; p += throttle >= 50 ? 16 : 1) {
        ram.u8[p * 4096 + (n % 4096)] = n & 0xff;
        ram.dirty.markRange(p * 4096, 1);
      }
    }, 5);
    try {
      const vm = staticVm(ram, 'slows', { setThrottle: (p) => void (throttle = p) });
      // Without the XBZRLE fallback: one changed byte a page would converge as deltas.
      const r = await migrate(vm, port, { autoConverge, maxBandwidthBps: 8 * MiB, downtimeLimitMs: 10, maxRounds: 60, verifyRam: false, xbzrleFallback: false }).report;
      assert.equal(r.status, 'completed', r.error?.message);
      return { reason: r.switchoverReason, maxThrottle: r.autoConverge?.maxThrottlePercent, rounds: r.rounds };
    } finally {
      clearInterval(writer);
    }
  };
  try {
    const without = await run(false);
    assert.equal(without.reason, 'not-converging', JSON.stringify(without));
    const withAc = await run(true);
    assert.ok(withAc.reason === 'downtime-limit' || withAc.reason === 'small-remainder', JSON.stringify(withAc));
    assert.ok(withAc.maxThrottle !== undefined && withAc.maxThrottle >= 50, JSON.stringify(withAc));
    assert.ok(withAc.rounds > without.rounds, JSON.stringify({ withAc, without }));
  } finally {
    await server.close();
  }
});
