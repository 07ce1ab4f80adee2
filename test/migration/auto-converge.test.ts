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
