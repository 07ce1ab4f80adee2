// The runtime's virtio-balloon driver against the real QEMU (virtio-balloon-device on
// virtio-mmio v2): following QMP `balloon` targets, self-ballooning with reclaim under
// allocation pressure, and free page hinting during a real QEMU migration.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { imagePath, sleep, munchLines } from '../helpers/images.js';
import { eventually, QemuGuest } from './qemu-guest.js';

const MiB = 1024 * 1024;
const RAM = 256 * MiB;

async function actual(g: QemuGuest): Promise<number> {
  return (await g.qmp('query-balloon')).actual as number;
}

function statusLines(out: string): string[] {
  return munchLines(out);
}

test('balloon=on follows the QMP balloon target down and up, memory intact', { timeout: 120_000 }, async () => {
  const g = new QemuGuest(imagePath('munch'), 'time=10s wws=2M rate=2M rss=4M report=500ms balloon=on heap=8M:1s,24M:1s',
    ['-device', 'virtio-balloon-device']);
  try {
    await g.connect();
    assert.equal(await actual(g), RAM);
    await g.qmp('balloon', { value: 128 * MiB });
    assert.ok(await eventually(async () => (await actual(g)) === 128 * MiB, 20_000), `actual stays ${await actual(g)}`);
    await sleep(1200); // a status line (every 500 ms) sees it
    await g.qmp('balloon', { value: 200 * MiB });
    assert.ok(await eventually(async () => (await actual(g)) === 200 * MiB, 20_000), `actual stays ${await actual(g)}`);
    await g.qmp('balloon', { value: RAM });
    assert.ok(await eventually(async () => (await actual(g)) === RAM, 20_000), `actual stays ${await actual(g)}`);
    assert.equal(await Promise.race([g.exited, new Promise((r) => setTimeout(() => r('timeout'), 60_000))]), 0, g.output);
    const lines = statusLines(g.output);
    assert.ok(lines.some((l) => / balloon=32768p target=32768p /.test(l)), 'a status line shows 128 MiB in the balloon');
    for (const l of lines) assert.match(l, / rss=ok$/);
    assert.doesNotMatch(g.output, /BAD|failed/);
  } finally {
    await g.stop();
  }
});

test('balloon=self gives free pages away and takes them back when the heap grows', { timeout: 120_000 }, async () => {
  const g = new QemuGuest(imagePath('munch'), 'time=6s wws=2M rate=2M rss=4M report=500ms balloon=self balloon-period=300ms heap=8M:1s,64M:1s',
    ['-device', 'virtio-balloon-device']);
  try {
    await g.connect();
    // nearly everything but the guest's working memory ends up in the balloon
    assert.ok(await eventually(async () => (await actual(g)) < 100 * MiB, 20_000), `actual stays ${await actual(g)}`);
    assert.equal(await Promise.race([g.exited, new Promise((r) => setTimeout(() => r('timeout'), 60_000))]), 0, g.output);
    const lines = statusLines(g.output);
    const last = lines[lines.length - 1] ?? '';
    const reclaimed = Number(/reclaimed=(\d+)/.exec(last)?.[1] ?? '0');
    assert.ok(reclaimed > 0, `allocations took ballooned pages back: ${last}`);
    assert.ok(lines.some((l) => /heap=67108864 /.test(l)), 'the 64 MiB phase was allocated');
    for (const l of lines) assert.match(l, / rss=ok$/);
    assert.doesNotMatch(g.output, /BAD|failed/);
  } finally {
    await g.stop();
  }
});

/** Runs munch with 56 MiB of freed (dirty) heap, migrates it to /dev/null, returns bytes sent and the output. */
async function migrateFreedHeap(hint: boolean): Promise<{ transferred: number; output: string }> {
  const dev = hint ? ['-object', 'iothread,id=io1', '-device', 'virtio-balloon-device,free-page-hint=on,iothread=io1'] : ['-device', 'virtio-balloon-device'];
  const g = new QemuGuest(imagePath('munch'), 'wws=1M rate=1M rss=4M report=250ms balloon=on heap=64M:500ms,8M:100s', dev);
  try {
    await g.connect();
    // slow enough that the guest answers the hint request while the first round still runs
    await g.qmp('migrate-set-parameters', { 'max-bandwidth': 64 * MiB });
    assert.ok(await eventually(async () => /heap=8388608 /.test(g.output), 30_000), `heap shrinks: ${g.output}`);
    await g.qmp('migrate', { uri: 'exec:cat > /dev/null' });
    let info: Record<string, unknown> = {};
    assert.ok(await eventually(async () => {
      info = await g.qmp('query-migrate');
      return info.status === 'completed' || info.status === 'failed';
    }, 60_000), 'migration ends');
    assert.equal(info.status, 'completed');
    await g.qmp('cont');
    const n = statusLines(g.output).length;
    assert.ok(await eventually(async () => statusLines(g.output).length >= n + 2, 20_000), 'the guest runs on');
    return { transferred: (info.ram as Record<string, number>).transferred, output: g.output };
  } finally {
    await g.stop();
  }
}

test('free page hinting: freed pages are reported and QEMU does not send them', { timeout: 180_000 }, async () => {
  const on = await migrateFreedHeap(true);
  const off = await migrateFreedHeap(false);
  const hinted = statusLines(on.output).map((l) => /hints=(\d+)\/(\d+)p/.exec(l)).filter((m) => m !== null);
  const last = hinted[hinted.length - 1];
  assert.ok(last && Number(last[1]) >= 1 && Number(last[2]) > 50_000, `hints reported: ${last?.[0]}`);
  assert.doesNotMatch(off.output, /hints=[1-9]/);
  // 56 MiB of freed, non-zero heap: sent without hints, skipped with them
  assert.ok(on.transferred + 40 * MiB < off.transferred, `with hints ${on.transferred} B, without ${off.transferred} B`);
  for (const l of statusLines(on.output)) assert.match(l, / rss=ok$/);
});
