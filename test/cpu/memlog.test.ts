import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as A from '../helpers/rv32asm.js';
import { StopReason } from '../../src/machine/cpu/hart.js';
import { GuestRam } from '../../src/machine/memory/ram.js';
import { Cause } from '../../src/machine/cpu/trap.js';
import { DATA, RAM, RecordingDevice, rig, stopHandler, type Rig } from './harness.js';

const page = (addr: number) => ((addr - RAM) >>> 0) >>> 12;

/** Runs one of every kind of store (and some loads) with the dirty log on or off; stores hit pages 16-19 and 21. */
function everyKindOfStore(presence: boolean, dirtyLogOn: boolean): Rig {
  const r = rig();
  r.bus.map(0x1000_0000, 0x100, new RecordingDevice());
  const base = RAM + 0x10000;
  r.load([
    A.sb(2, 1, 0), // page 16
    A.sh(2, 11, 0x7fe), // page 21
    A.lw(5, 3, 0), // page 20 (load: not dirty)
    A.sw(2, 4, 0), // MMIO: not RAM
    A.amoadd_w(0, 6, 2), // page 18
    A.lr_w(7, 8), // page 19 (load only)
    A.sc_w(9, 8, 2), // page 19
    A.sc_w(9, 8, 2), // fails: no mark needed, page 19 already marked anyway
    A.sw(2, 10, 0), // page 17 (last byte of the page)
  ]);
  r.hart.x[1] = base | 0;
  r.hart.x[2] = 0x1234;
  r.hart.x[3] = (base + 0x4000) | 0;
  r.hart.x[4] = 0x1000_0000;
  r.hart.x[6] = (base + 0x2000) | 0;
  r.hart.x[8] = (base + 0x3000) | 0;
  r.hart.x[10] = (base + 0x1ffc) | 0;
  r.hart.x[11] = (base + 0x5000) | 0;
  r.hart.dirtyLogOn = dirtyLogOn;
  r.hart.presenceOn = presence;
  r.ram.dirty.clear();
  r.ram.written.clear();
  r.run(9);
  assert.equal(r.hart.getPc(), RAM + 36);
  return r;
}

test('dirty log marks exactly the pages stored to, by every kind of store', () => {
  for (const presence of [false, true]) {
    const r = everyKindOfStore(presence, true);
    assert.deepEqual(Array.from(r.ram.dirty.sync()), [16, 17, 18, 19, 21], `presence ${presence}`);
  }
});

test('a dirty mark is the mask of the 512-byte blocks stored to; slow paths and devices mark all eight', () => {
  const r = everyKindOfStore(false, true);
  const masks = new Uint8Array(r.ram.pageCount);
  assert.deepEqual(Array.from(r.ram.dirty.sync(undefined, masks)), [16, 17, 18, 19, 21]);
  assert.equal(masks[16], 0x01, 'sb at byte 0: block 0');
  assert.equal(masks[17], 0x80, 'sw at byte 0xffc: block 7');
  assert.equal(masks[21], 0x08, 'sh at byte 0x7fe: block 3');
  assert.equal(masks[18], 0xff, 'amoadd (slow path): every block');
  assert.equal(masks[19], 0xff, 'sc (slow path): every block');
  // Two stores to one page add up; a device write over a partial mark makes it whole.
  const at = r.load([A.sb(2, 1, 0), A.sw(2, 1, 0x600)], RAM + 0x800);
  r.hart.reset(RAM + 0x800, 0, 0);
  r.hart.dirtyLogOn = true;
  r.hart.x[1] = (RAM + 40 * 4096) | 0;
  r.run(2);
  assert.equal(r.hart.getPc(), at);
  assert.equal(r.ram.dirty.bits[40], 0x01 | 0x08);
  r.ram.dirty.markRange(40 * 4096 + 10, 1);
  assert.equal(r.ram.dirty.bits[40], 0xff);
  assert.equal(r.ram.dirty.countIn(0, 64), 1, 'countIn counts pages, not bits');
  for (const presence of [true]) {
    const q = everyKindOfStore(presence, true);
    q.ram.dirty.sync(undefined, masks.fill(0));
    assert.deepEqual([16, 17, 18, 19, 21].map((p) => masks[p]), [0xff, 0xff, 0xff, 0xff, 0xff], 'presence on: every store takes the slow path');
  }
});

test('with the dirty log off nothing is marked; a faulting store marks nothing', () => {
  const r = rig();
  stopHandler(r);
  r.load([A.sw(2, 1, 0), A.sw(2, 1, 2)]);
  r.hart.x[1] = DATA | 0;
  r.run(1);
  assert.equal(r.ram.dirty.count(), 0);
  r.hart.dirtyLogOn = true;
  r.run(5);
  assert.equal(r.hart.mcause, Cause.StoreMisaligned);
  assert.equal(r.ram.dirty.count(), 0);
});

test('with the dirty log off every kind of store marks the written map instead; sync folds dirty marks into it', () => {
  for (const presence of [false, true]) {
    const r = everyKindOfStore(presence, false);
    const marked = (): number[] => [...r.ram.written.bits.keys()].filter((p) => r.ram.written.bits[p] !== 0);
    assert.deepEqual(marked(), [16, 17, 18, 19, 21], `presence ${presence}`);
    assert.equal(r.ram.dirty.count(), 0, 'logging off: no dirty marks');
    // Logging on: a store to page 30 goes to the dirty log only; sync hands it to the written map.
    r.ram.written.clear();
    const at = r.load([A.sw(2, 1, 0)], RAM + 0x800);
    r.hart.reset(RAM + 0x800, 0, 0);
    r.hart.presenceOn = presence;
    r.hart.x[1] = (RAM + 30 * 4096) | 0;
    r.hart.x[2] = 1;
    r.hart.dirtyLogOn = true;
    r.run(1);
    assert.equal(r.hart.getPc(), at);
    assert.deepEqual(marked(), []);
    const tracked = GuestRam.open({ ...r.ram.describe(), writesTracked: true });
    assert.equal(tracked.knownZero(30), false, 'dirty: not known zero even before the fold');
    assert.equal(tracked.knownZero(31), true, 'never written');
    assert.equal(r.ram.knownZero(31), false, 'untracked RAM knows no page to be zero');
    assert.deepEqual([...r.ram.dirty.sync()], [30]);
    assert.deepEqual(marked(), [30], 'the mark sync took is folded into the written map');
  }
});

/** Makes `pg` absent with `fill` as its remote contents; the hook records state and installs it. */
function absent(r: Rig, pg: number, fill: number, onCall?: () => void) {
  const calls: number[] = [];
  const data = new Uint8Array(4096);
  new Int32Array(data.buffer).fill(fill);
  r.ram.presence.markAbsent(pg);
  r.hart.presenceOn = true;
  r.hart.onAbsentPage = (p) => {
    calls.push(p);
    onCall?.();
    r.ram.presence.install(p, data);
  };
  return calls;
}

test('presence: a load from an absent page calls the hook first, then completes', () => {
  const r = rig();
  const target = RAM + 0x5000 + 8;
  r.load([A.addi(6, 0, 1), A.lw(5, 1, 8), A.addi(7, 0, 1)]);
  r.hart.x[1] = (target - 8) | 0;
  r.hart.x[5] = 0x77;
  const seen: Array<[number, number, number]> = [];
  const calls = absent(r, page(target), 0x0badf00d, () => seen.push([r.hart.x[5]!, r.hart.getPc(), r.hart.instret]));
  assert.equal(r.run(3), StopReason.Budget);
  assert.deepEqual(calls, [5]);
  assert.deepEqual(seen, [[0x77, RAM + 4, 1]], 'rd unchanged, pc at the load, the load not retired');
  assert.equal(r.hart.x[5], 0x0badf00d);
  assert.equal(r.hart.x[7], 1);
  assert.equal(r.hart.instret, 3);
});

test('presence: a store to an absent page waits before writing, then writes into the installed page', () => {
  const r = rig();
  const target = RAM + 0x6000 + 0x10;
  r.load([A.sb(2, 1, 0)]);
  r.hart.x[1] = target | 0;
  r.hart.x[2] = 0xee;
  r.hart.dirtyLogOn = true;
  let dirtyAtCall = -1;
  const calls = absent(r, page(target), 0x11111111, () => (dirtyAtCall = r.ram.dirty.count()));
  r.run(1);
  assert.deepEqual(calls, [6]);
  assert.equal(dirtyAtCall, 0, 'nothing marked before the page arrived');
  assert.equal(r.word(target), 0x111111ee, 'the store lands on the installed contents');
  assert.deepEqual(Array.from(r.ram.dirty.sync()), [6]);
});

test('presence: instruction fetch from an absent page calls the hook with the code page', () => {
  const r = rig();
  const code = RAM + 0x3000;
  // the installed page holds `addi x5, x5, 1` everywhere
  const calls = absent(r, page(code), A.addi(5, 5, 1));
  r.load([A.jal(0, 0x3000)]);
  r.hart.x[5] = 10;
  r.run(4);
  assert.deepEqual(calls, [3]);
  assert.equal(r.hart.x[5], 13);
  assert.equal(r.hart.getPc(), code + 12);
});

test('presence: an AMO and an SC to absent pages call the hook before any effect', () => {
  const r = rig();
  const t1 = RAM + 0x7000;
  const t2 = RAM + 0x8000;
  r.load([A.amoswap_w(3, 1, 2), A.lr_w(4, 5), A.sc_w(6, 5, 2)]);
  r.hart.x[1] = t1 | 0;
  r.hart.x[2] = 42;
  r.hart.x[3] = 0x77;
  r.hart.x[5] = t2 | 0;
  const seen: number[][] = [];
  const calls = absent(r, page(t1), 5, () => seen.push([r.hart.x[3]!, r.hart.getPc()]));
  r.run(1);
  assert.deepEqual(calls, [7]);
  assert.deepEqual(seen, [[0x77, RAM]]);
  assert.equal(r.hart.x[3], 5);
  assert.equal(r.word(t1), 42);
  // lr reads page 8, which then goes absent (as after a migration) before the sc
  r.run(1);
  assert.equal(r.hart.x[4], 0);
  const calls2 = absent(r, page(t2), 0, () => seen.push([r.hart.x[6]!, r.hart.getPc()]));
  r.hart.x[6] = 0x55;
  r.run(1);
  assert.deepEqual(calls2, [8]);
  assert.deepEqual(seen[1], [0x55, RAM + 8]);
  assert.equal(r.hart.x[6], 0, 'sc succeeds: the installed word still equals what lr read');
  assert.equal(r.word(t2), 42);
});

test('presence: present pages never call the hook', () => {
  const r = rig();
  r.load([A.lw(5, 1, 0), A.sw(5, 1, 4), A.amoadd_w(0, 1, 5)]);
  r.hart.x[1] = DATA | 0;
  r.hart.presenceOn = true;
  r.hart.onAbsentPage = () => assert.fail('hook called for a present page');
  r.run(3);
  assert.equal(r.hart.getPc(), RAM + 12);
});
