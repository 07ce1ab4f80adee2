// The runtime's virtio-balloon driver against tern's own virtio-balloon device, in-process:
// the host side sets targets and runs free page hint commands through BalloonHost, and the
// device's page maps (discarded, freeHints) show what the guest gave.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BalloonHost } from '../../src/machine/devices/virtio/balloon-host-port.js';
import { VsockGuest } from './vsock-harness.js';
import { munchLines } from '../helpers/images.js';

const MEM_MIB = 64;
const PAGES = (MEM_MIB * 1024 * 1024) / 4096;

function boot(args: string): { g: VsockGuest; host: BalloonHost } {
  const g = new VsockGuest('munch', args, MEM_MIB, [{ kind: 'virtio-balloon' }]);
  const ram = g.m.ram;
  const host = new BalloonHost({ signals: ram.signals, pageCount: PAGES, clearHints: () => ram.freeHints.clear() });
  return { g, host };
}

function lastStatus(g: VsockGuest): string {
  const lines = munchLines(g.console);
  return lines[lines.length - 1] ?? '';
}

test('balloon=on: the guest inflates to the host target and deflates when it drops', async () => {
  const { g, host } = boot('wws=1M rate=1M rss=1M report=100ms balloon=on');
  g.run(50_000_000, 50);
  assert.match(g.console, /^munch: wws=1048576 /);
  host.setTarget(4096);                          // 16 MiB
  g.run(200_000_000, 300);
  assert.equal(await host.actual(), 4096);
  assert.equal(g.m.ram.discarded.count(), 4096);
  assert.match(lastStatus(g), / balloon=4096p target=4096p .* rss=ok$/);
  host.setTarget(1000);
  g.run(200_000_000, 300);
  assert.equal(await host.actual(), 1000);
  assert.equal(g.m.ram.discarded.count(), 1000);
  host.setTarget(0);
  g.run(200_000_000, 300);
  assert.equal(await host.actual(), 0);
  assert.equal(g.m.ram.discarded.count(), 0);
  assert.match(lastStatus(g), / rss=ok$/);
});

test('balloon=self: free memory goes to the balloon, a growing heap takes it back, data intact', async () => {
  const { g } = boot('wws=1M rate=1M rss=1M report=100ms balloon=self balloon-period=100ms balloon-reserve=256K heap=2M:400ms,24M:400ms');
  g.run(300_000_000, 350);
  const small = g.m.ram.discarded.count();
  assert.ok(small > PAGES / 2, `most of RAM ballooned while the heap is small: ${small} of ${PAGES} pages`);
  g.run(300_000_000, 400);                         // the 24 MiB phase
  const big = g.m.ram.discarded.count();
  assert.ok(big < small - 5000, `the heap took pages back: ${small} -> ${big}`);
  g.run(300_000_000, 800);
  const s = lastStatus(g);
  assert.match(s, /reclaimed=[1-9]/);
  assert.match(s, / rss=ok$/);
  assert.doesNotMatch(g.console, /BAD|failed/);
});

test('free page hinting: a hint run reports the free pages, none of them in use', () => {
  const { g, host } = boot('wws=1M rate=1M rss=2M report=100ms balloon=on heap=16M:200ms,2M:10s');
  g.run(300_000_000, 400);                          // the heap grew and shrank: 14 MiB freed
  host.startFreePageHint();
  g.run(300_000_000, 100);
  const hinted = g.m.ram.freeHints.count();
  assert.ok(hinted > 8000, `hinted ${hinted} pages`);
  host.stopFreePageHint();
  host.finishFreePageHint();
  g.run(300_000_000, 300);
  assert.match(lastStatus(g), /hints=1\/\d+p rss=ok$/);
  // the image, the rss and the wws are in use: never hinted
  const image = 0;                                  // page 0 of RAM holds the image's entry
  assert.equal(g.m.ram.freeHints.isMarked(image), false);
});
