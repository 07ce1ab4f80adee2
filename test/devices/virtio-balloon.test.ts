import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BalloonHost, BalloonRangeError } from '../../src/machine/devices/virtio/balloon-host-port.js';
import { Machine } from '../../src/machine/machine.js';
import { PAGE_SIZE, RAM_BASE } from '../../src/machine/memory/layout.js';
import { GuestRam } from '../../src/machine/memory/ram.js';
import { NEEDS_RESET, R, TestDriver, busPort } from './virtio-driver.js';

const MiB = 1024 * 1024;
const SLOT = 7; // the only device, so the top slot
const INFLATE = 0;
const DEFLATE = 1;
const STATS = 2;
const FREE_PAGE = 3;
const FEATURES = (1 << 1) | (1 << 3);

function setup(): { m: Machine; d: TestDriver; host: BalloonHost } {
  const ram = GuestRam.allocate(4 * MiB);
  const m = new Machine(ram, undefined, { devices: [{ kind: 'virtio-balloon' }] });
  const d = new TestDriver(m.ram, busPort(m, SLOT));
  assert.equal(d.negotiate(FEATURES, 1), true);
  for (const q of [INFLATE, DEFLATE, STATS, FREE_PAGE]) d.setupQueue(q, 32);
  d.driverOk();
  const host = new BalloonHost({ signals: ram.signals, pageCount: ram.pageCount, clearHints: () => ram.freeHints.clear() });
  return { m, d, host };
}

function pfns(...pages: number[]): Uint8Array {
  const b = new Uint8Array(4 * pages.length);
  const dv = new DataView(b.buffer);
  pages.forEach((p, i) => dv.setUint32(4 * i, (RAM_BASE >>> 12) + p, true));
  return b;
}

test('device id 5; config: num_pages from the host with a config interrupt, actual written by the guest', async () => {
  const { m, d, host } = setup();
  assert.equal(d.mmio.read(R.DeviceId), 5);
  assert.equal(d.mmio.read(R.Config), 0);
  const gen = d.mmio.read(R.ConfigGeneration);
  host.setTarget(100);
  m.runSlice(0);
  assert.equal(d.mmio.read(R.Config), 100);
  assert.notEqual(d.mmio.read(R.ConfigGeneration), gen);
  assert.equal(d.mmio.read(R.InterruptStatus) & 2, 2, 'config-change interrupt');
  d.mmio.write(R.Config, 7, 4);
  assert.equal(d.mmio.read(R.Config), 100, 'num_pages is read-only');
  d.mmio.write(R.Config + 4, 40, 4);
  assert.equal(await host.actual(), 40);
  d.mmio.write(R.Config + 5, 1, 1);
  assert.equal(await host.actual(), 40 + 256, 'a byte write merges into actual');
  assert.throws(() => host.setTarget(m.ram.pageCount + 1), BalloonRangeError);
  assert.throws(() => host.setTarget(-1), BalloonRangeError);
});

test('inflate zeroes the pages and marks them discarded (dirty-logged); deflate clears the marks', () => {
  const { m, d } = setup();
  const pages = [300, 301, 700];
  for (const p of pages) m.ram.u8.fill(0xaa, p * PAGE_SIZE, (p + 1) * PAGE_SIZE);
  m.ram.u8.fill(0xbb, 302 * PAGE_SIZE, 303 * PAGE_SIZE);
  m.hart.dirtyLogOn = true;
  m.ram.dirty.clear();
  // PFNs split over two descriptors; one PFN outside RAM is ignored.
  d.add(INFLATE, [{ data: pfns(300, 301) }, { data: new Uint8Array([...pfns(700), 0x01, 0, 0, 0]) }]);
  d.notify(INFLATE);
  assert.equal(d.usedIdx(INFLATE), 1);
  for (const p of pages) {
    assert.equal(m.ram.isZeroPage(p), true, `page ${p} zeroed`);
    assert.equal(m.ram.discarded.isMarked(p), true, `page ${p} discarded`);
    assert.equal(m.ram.dirty.isDirty(p), true, `page ${p} dirty`);
  }
  assert.equal(m.ram.u8[302 * PAGE_SIZE], 0xbb, 'the neighbour is untouched');
  assert.equal(m.ram.discarded.count(), 3);
  d.add(DEFLATE, [{ data: pfns(301) }]);
  d.notify(DEFLATE);
  assert.deepEqual(m.ram.discarded.runs(), [[300, 1], [700, 1]]);
});

test('the discarded map travels in the balloon state section as runs', () => {
  const { m, d, host } = setup();
  host.setTarget(5);
  m.runSlice(0);
  d.add(INFLATE, [{ data: pfns(10, 11, 12, 40, 900) }]);
  d.notify(INFLATE);
  d.mmio.write(R.Config + 4, 5);
  const state = m.saveState();
  const m2 = new Machine(GuestRam.allocate(4 * MiB), undefined, { devices: [{ kind: 'virtio-balloon' }] });
  m2.ram.u8.set(m.ram.u8);
  m2.restoreState(state);
  assert.deepEqual(m2.ram.discarded.runs(), [[10, 3], [40, 1], [900, 1]]);
  const p2 = busPort(m2, SLOT);
  assert.equal(p2.read(R.Config), 5);
  assert.equal(p2.read(R.Config + 4), 5);
  assert.equal(Atomics.load(m2.ram.signals, 12), 5, 'the target is published for the new host side');
  // Traffic continues on the restored queues.
  const d2 = new TestDriver(m2.ram, p2);
  for (const [q, l] of d.queues) d2.queues.set(q, { ...l });
  d2.add(DEFLATE, [{ data: pfns(40) }]);
  d2.notify(DEFLATE);
  assert.equal(d2.usedIdx(DEFLATE), 1);
  assert.deepEqual(m2.ram.discarded.runs(), [[10, 3], [900, 1]]);
});

test('free page hints: the run starts on the matching cmd id, collects whole pages, and stops on request', () => {
  const { m, d, host } = setup();
  assert.equal(d.mmio.read(R.Config + 8), 0, 'initially STOP');
  const id = host.startFreePageHint();
  assert.equal(id, 0x8000_0001);
  m.runSlice(0);
  assert.equal(d.mmio.read(R.Config + 8), id, 'REQUESTED shows the id');
  assert.equal(d.mmio.read(R.InterruptStatus) & 2, 2);
  const idBuf = new Uint8Array(4);
  new DataView(idBuf.buffer).setUint32(0, id, true);
  // Hints before the id arrives are ignored.
  d.add(FREE_PAGE, [{ addr: RAM_BASE + 50 * PAGE_SIZE, len: PAGE_SIZE, write: true }]);
  d.notify(FREE_PAGE);
  assert.equal(m.ram.freeHints.count(), 0);
  d.add(FREE_PAGE, [{ data: idBuf }]);
  d.add(FREE_PAGE, [{ addr: RAM_BASE + 100 * PAGE_SIZE, len: 4 * PAGE_SIZE, write: true }]);
  // A buffer not page-aligned counts only its whole pages: 200.5 .. 203.5 → 201, 202.
  d.add(FREE_PAGE, [{ addr: RAM_BASE + 200 * PAGE_SIZE + 2048, len: 3 * PAGE_SIZE, write: true }]);
  d.notify(FREE_PAGE);
  assert.equal(d.usedIdx(FREE_PAGE), 4);
  assert.deepEqual(m.ram.freeHints.runs(), [[100, 4], [201, 2]]);
  host.stopFreePageHint();
  m.runSlice(0);
  assert.equal(d.mmio.read(R.Config + 8), 0, 'STOP');
  d.add(FREE_PAGE, [{ addr: RAM_BASE + 300 * PAGE_SIZE, len: PAGE_SIZE, write: true }]);
  d.notify(FREE_PAGE);
  assert.equal(m.ram.freeHints.isMarked(300), false, 'nothing recorded after stop');
  host.finishFreePageHint();
  m.runSlice(0);
  assert.equal(d.mmio.read(R.Config + 8), 1, 'DONE');
  const id2 = host.startFreePageHint();
  assert.equal(id2, id + 1);
  assert.equal(m.ram.freeHints.count(), 0, 'a new run starts with no hints');
});

test('a cmd id buffer of the wrong size is a malformed queue', () => {
  const { m, d, host } = setup();
  host.startFreePageHint();
  m.runSlice(0);
  d.add(FREE_PAGE, [{ data: new Uint8Array(6) }]);
  assert.doesNotThrow(() => d.notify(FREE_PAGE));
  assert.equal(d.mmio.read(R.Status) & NEEDS_RESET, NEEDS_RESET);
});

test('the stats queue holds its buffer', () => {
  const { d } = setup();
  d.add(STATS, [{ len: 64 }]);
  d.notify(STATS);
  assert.equal(d.usedIdx(STATS), 0);
});

test('the host\'s target shows in config before DRIVER_OK', () => {
  const ram = GuestRam.allocate(4 * MiB);
  const m = new Machine(ram, undefined, { devices: [{ kind: 'virtio-balloon' }] });
  new BalloonHost({ signals: ram.signals, pageCount: ram.pageCount, clearHints: () => ram.freeHints.clear() }).setTarget(12);
  assert.equal(busPort(m, SLOT).read(R.Config), 12);
  assert.equal(busPort(m, SLOT).read(R.InterruptStatus), 0, 'no interrupt before DRIVER_OK');
});
