// Guest time across the switchover pause (--guest-clock, PAUSED_AT): 'continuous' counts the pause,
// so the guest clock reads wall time again after the move; 'frozen' stands still while paused.
// The destination's load is held back 400 ms so the pause is long against any scheduling noise.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { TIMEBASE_HZ } from '../../src/machine/memory/layout.js';
import type { GuestClock } from '../../src/migration/report.js';
import { until } from '../helpers/images.js';
import { MiB, TestDestinationHost, bootTestVm, migrate, startServer, stopAllVcpus, type TestVm } from '../helpers/test-hosts.js';

after(stopAllVcpus);

const HOLD_MS = 400;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Guest time and wall time, read together (ms). */
async function clocks(vm: TestVm): Promise<{ guestMs: number; wallMs: number }> {
  const s = await vm.vcpu.stats();
  return { guestMs: s.mtime / (TIMEBASE_HZ / 1000), wallMs: performance.now() };
}

/** How far guest time fell behind wall time between two readings (ms). */
function lagMs(a: { guestMs: number; wallMs: number }, b: { guestMs: number; wallMs: number }): number {
  return b.wallMs - a.wallMs - (b.guestMs - a.guestMs);
}

for (const mode of ['precopy', 'postcopy', 'hybrid'] as const) {
  for (const guestClock of ['continuous', 'frozen'] as const satisfies readonly GuestClock[]) {
    test(`${mode}, guest clock ${guestClock}: the guest ${guestClock === 'continuous' ? 'counts' : 'does not count'} a ${HOLD_MS} ms pause`, async () => {
      const host = new TestDestinationHost();
      const { server, port } = await startServer(host, { name: 'B' });
      const name = `clock-${mode}-${guestClock}`;
      try {
        const vm = await bootTestVm('verify', 'region=1M', 8 * MiB, name);
        assert.ok(await until(() => vm.count('B') >= 2, 30_000), 'verify is running');
        // The load waits until HOLD_MS after the pause: the VM is paused at least that long.
        vm.onPause = () => {
          host.loadGate = sleep(HOLD_MS);
        };
        const before = await clocks(vm);
        const r = await migrate(vm, port, { mode, guestClock }).report;
        assert.equal(r.status, 'completed', JSON.stringify(r.error));
        assert.equal(r.guestClock, guestClock);
        assert.ok(r.downtimeMs >= HOLD_MS - 1, `downtime ${r.downtimeMs} ms`);
        const moved = host.vms.get(name)!;
        const lag = lagMs(before, await clocks(moved));
        if (guestClock === 'continuous') assert.ok(lag < 150, `guest time is ${lag.toFixed(1)} ms behind wall time after a ${r.downtimeMs} ms pause`);
        else assert.ok(lag >= HOLD_MS - 5, `guest time is only ${lag.toFixed(1)} ms behind wall time after a ${r.downtimeMs} ms pause`);
        // Guest time never went back, and the guest runs on.
        const c = moved.count('B');
        assert.ok(await until(() => moved.count('B') > c, 30_000), 'verify runs on at the destination');
        assert.doesNotMatch(moved.console(), /X/);
      } finally {
        await server.close();
      }
    });
  }
}

test('a migration that fails after the pause gives the VM back with the pause counted (continuous)', async () => {
  const host = new TestDestinationHost();
  const { server, port } = await startServer(host, { name: 'B' });
  try {
    const vm = await bootTestVm('verify', 'region=1M', 8 * MiB, 'clock-failed');
    assert.ok(await until(() => vm.count('B') >= 2, 30_000), 'verify is running');
    vm.onPause = () => {
      host.loadGate = sleep(HOLD_MS);
    };
    host.loadError = new Error('refused for the test');
    const before = await clocks(vm);
    const r = await migrate(vm, port, { guestClock: 'continuous' }).report;
    assert.equal(r.status, 'failed');
    assert.equal(vm.resumes, 1, 'the VM runs on the source again');
    const lag = lagMs(before, await clocks(vm));
    assert.ok(lag < 150, `guest time is ${lag.toFixed(1)} ms behind wall time after a failed migration's pause of at least ${HOLD_MS} ms`);
    const c = vm.count('B');
    assert.ok(await until(() => vm.count('B') > c, 30_000), 'verify runs on at the source');
  } finally {
    await server.close();
  }
});
