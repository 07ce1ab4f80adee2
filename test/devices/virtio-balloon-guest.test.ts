// The guest runtime's virtio-balloon driver (munch balloon=on) against tern's device in a real
// vCPU thread: the host's target is followed down and up, inflated pages are zeroed and marked
// discarded, and a free page hint run marks exactly the pages the guest reports.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { test } from 'node:test';
import { GuestRam } from '../../src/machine/memory/ram.js';
import { Vcpu } from '../../src/machine/vcpu/vcpu.js';
import { imagePath, munchLines } from '../helpers/images.js';

const MiB = 1024 * 1024;

async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('munch balloon=on follows the target, and reports its free pages to a hint run', { timeout: 120_000 }, async () => {
  const ram = GuestRam.allocate(256 * MiB);
  const image = new Uint8Array(await readFile(imagePath('munch')));
  const vcpu = await Vcpu.start({
    ram,
    name: 'balloon-guest',
    devices: [{ kind: 'virtio-vsock', guestCid: 3 }, { kind: 'virtio-balloon' }],
    start: { kind: 'boot', boot: { image, imageName: 'munch.elf', bootargs: 'wws=2M rate=2M rss=4M report=200ms balloon=on heap=64M:300ms,8M:1000s' } },
  });
  let out = '';
  vcpu.on('console', (d) => (out += Buffer.from(d).toString('latin1')));
  const lines = (): string[] => munchLines(out);
  try {
    const balloon = vcpu.balloon!;
    await until('the heap to shrink to 8 MiB', () => lines().some((l) => / heap=8388608 /.test(l)));

    balloon.setTarget(32768); // 128 MiB
    await until('actual = 32768', async () => (await balloon.actual()) === 32768);
    assert.equal(ram.discarded.count(), 32768, 'every page in the balloon is marked discarded');
    for (const [first, count] of ram.discarded.runs()) {
      for (let p = first; p < first + count; p += 97) assert.equal(ram.isZeroPage(p), true, `discarded page ${p} is zero`);
    }
    await until('a status line with the balloon inflated', () => lines().some((l) => / balloon=32768p target=32768p /.test(l)));

    const id = balloon.startFreePageHint();
    assert.ok(id >= 0x8000_0000);
    await until('the guest to report its hints', () => lines().some((l) => /hints=1\/[1-9]\d*p/.test(l)));
    balloon.stopFreePageHint();
    balloon.finishFreePageHint();
    const reported = Number(/hints=1\/(\d+)p/.exec(lines().find((l) => /hints=1\/[1-9]/.test(l))!)![1]);
    assert.equal(ram.freeHints.count(), reported, 'the device marked exactly the pages the guest reported');
    for (const [first, count] of ram.freeHints.runs()) {
      for (let p = first; p < first + count; p++) assert.equal(ram.discarded.isMarked(p), false, `hinted page ${p} is not in the balloon`);
    }

    balloon.setTarget(0);
    await until('actual = 0', async () => (await balloon.actual()) === 0);
    assert.equal(ram.discarded.count(), 0, 'deflated pages are no longer discarded');
    const n = lines().length;
    await until('two more status lines', () => lines().length >= n + 2);
    for (const l of lines()) assert.match(l, / rss=ok$/);
    assert.doesNotMatch(out, /BAD|failed|disabled/);
  } finally {
    await vcpu.stop();
  }
});

test('mid-traffic state round trip through a standby vCPU: the guest\'s balloon driver carries on at the destination', { timeout: 120_000 }, async () => {
  const devices = [{ kind: 'virtio-vsock', guestCid: 3 }, { kind: 'virtio-balloon' }] as const;
  const ram = GuestRam.allocate(256 * MiB);
  const image = new Uint8Array(await readFile(imagePath('munch')));
  const src = await Vcpu.start({
    ram,
    name: 'balloon-src',
    devices,
    start: { kind: 'boot', boot: { image, imageName: 'munch.elf', bootargs: 'wws=2M rate=2M rss=4M report=200ms balloon=on heap=64M:300ms,8M:1000s' } },
  });
  let out = '';
  src.on('console', (d) => (out += Buffer.from(d).toString('latin1')));
  const lines = (): string[] => munchLines(out);
  let dst: Vcpu | undefined;
  try {
    await until('the heap to shrink', () => lines().some((l) => / heap=8388608 /.test(l)));
    src.balloon!.setTarget(16384);
    await until('actual = 16384', async () => (await src.balloon!.actual()) === 16384);
    await src.pause();
    const state = await src.saveState();
    const ram2 = GuestRam.allocate(256 * MiB);
    ram2.u8.set(ram.u8);
    dst = await Vcpu.start({ ram: ram2, name: 'balloon-dst', devices, start: { kind: 'standby' } });
    await dst.restore(state);
    await src.stop();
    assert.equal(ram2.discarded.count(), 16384, 'the discarded map came with the state');
    assert.equal(await dst.balloon!.actual(), 16384, 'actual is published at the destination');
    dst.on('console', (d) => (out += Buffer.from(d).toString('latin1')));
    dst.resume();
    dst.balloon!.setTarget(0);
    await until('actual = 0 at the destination', async () => (await dst!.balloon!.actual()) === 0);
    assert.equal(ram2.discarded.count(), 0);
    const n = lines().length;
    await until('two more status lines', () => lines().length >= n + 2);
    for (const l of lines()) assert.match(l, / rss=ok$/);
    assert.doesNotMatch(out, /BAD|failed|disabled|needs reset/);
  } finally {
    await src.stop();
    await dst?.stop();
  }
});
