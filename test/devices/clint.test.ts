import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Clint, MIP_MSIP, MIP_MTIP } from '../../src/machine/devices/clint.js';
import { StateFormatError } from '../../src/machine/state/codec.js';
import { FakeHart, fakeClock, restore, save } from './helpers.js';

const MSIP = 0x0;
const MTIMECMP = 0x4000;
const MTIME = 0xbff8;

function setup() {
  const { clock, advanceMs } = fakeClock();
  const hart = new FakeHart();
  const clint = new Clint(clock, hart.setMip);
  return { clock, advanceMs, hart, clint };
}

test('mtime reads follow the virtual clock, low and high halves', () => {
  const { clint, advanceMs, clock } = setup();
  assert.equal(clint.read(MTIME, 4), 0);
  advanceMs(3);
  assert.equal(clint.read(MTIME, 4), 30_000, '10 MHz: 10 000 ticks per ms');
  assert.equal(clint.read(MTIME + 4, 4), 0);
  clock.set(0x1_2345_6789);
  assert.equal(clint.read(MTIME, 4), 0x2345_6789);
  assert.equal(clint.read(MTIME + 4, 4), 1);
  clock.stop();
  advanceMs(1000);
  assert.equal(clint.read(MTIME, 4), 0x2345_6789, 'a stopped clock (paused VM) does not move');
});

test('mtime writes set the clock, each half keeping the other', () => {
  const { clint, clock } = setup();
  clock.set(0x5_0000_0010);
  clint.write(MTIME, 4, 0xabcd);
  assert.equal(clock.ticks(), 0x5_0000_abcd);
  clint.write(MTIME + 4, 4, 2);
  assert.equal(clock.ticks(), 0x2_0000_abcd);
});

test('mtimecmp resets to 0 (as QEMU ACLINT), so MTIP is pending at boot', () => {
  const { clint, hart } = setup();
  assert.equal(clint.read(MTIMECMP, 4), 0);
  assert.equal(clint.read(MTIMECMP + 4, 4), 0);
  clint.update();
  assert.equal(hart.mip, MIP_MTIP);
});

test('mtimecmp halves are separate 32-bit registers; deadline() joins them', () => {
  const { clint } = setup();
  clint.write(MTIMECMP + 4, 4, 0x1);
  clint.write(MTIMECMP, 4, 0xffff_fff0);
  assert.equal(clint.read(MTIMECMP, 4), 0xffff_fff0);
  assert.equal(clint.read(MTIMECMP + 4, 4), 1);
  assert.equal(clint.deadline(), 0x1_ffff_fff0);
  assert.equal(clint.read(MTIMECMP + 2, 2), 0xffff, 'narrow reads see part of the register');
  clint.write(MTIMECMP + 4, 4, 0xffff_ffff);
  assert.equal(clint.deadline(), Infinity, 'a compare value the clock can never reach');
});

test('MTIP is the level mtime >= mtimecmp, updated on writes and by update()', () => {
  const { clint, hart, advanceMs } = setup();
  clint.write(MTIMECMP + 4, 4, 0);
  clint.write(MTIMECMP, 4, 25_000);
  assert.equal(hart.mip & MIP_MTIP, 0, 'a future compare lowers MTIP at once');
  advanceMs(2);
  clint.update();
  assert.equal(hart.mip & MIP_MTIP, 0, '20 000 < 25 000');
  advanceMs(1);
  assert.equal(hart.mip & MIP_MTIP, 0, 'nothing changes until update()');
  clint.update();
  assert.equal(hart.mip & MIP_MTIP, MIP_MTIP);
  clint.write(MTIMECMP, 4, 40_000);
  assert.equal(hart.mip & MIP_MTIP, 0, 'the guest clears it by moving mtimecmp forward');
  const calls = hart.calls.length;
  clint.update();
  clint.update();
  assert.equal(hart.calls.length, calls, 'update() drives the hart only on a change');
});

test('MTIP compares all 64 bits', () => {
  const { clint, hart, clock } = setup();
  clint.write(MTIMECMP + 4, 4, 1);
  clint.write(MTIMECMP, 4, 0);
  clock.set(0xffff_ffff);
  clint.update();
  assert.equal(hart.mip & MIP_MTIP, 0);
  clock.set(0x1_0000_0000);
  clint.update();
  assert.equal(hart.mip & MIP_MTIP, MIP_MTIP);
});

test('msip drives MSIP; only bit 0 is kept', () => {
  const { clint, hart } = setup();
  clint.write(MSIP, 4, 1);
  assert.equal(clint.read(MSIP, 4), 1);
  assert.equal(hart.mip & MIP_MSIP, MIP_MSIP);
  clint.write(MSIP, 4, 2);
  assert.equal(clint.read(MSIP, 4), 0);
  assert.equal(hart.mip & MIP_MSIP, 0);
  assert.equal(clint.read(0x4, 4), 0, 'no second hart');
});

test('saveState -> restoreState into a fresh CLINT reproduces the registers and re-drives mip on update()', () => {
  const { clint, clock } = setup();
  clint.write(MSIP, 4, 1);
  clint.write(MTIMECMP, 4, 0x1234_5678);
  clint.write(MTIMECMP + 4, 4, 0x9);
  const state = save(clint);
  const hart2 = new FakeHart();
  const copy = new Clint(clock, hart2.setMip);
  restore(copy, state);
  for (const off of [MSIP, MTIMECMP, MTIMECMP + 4, MTIME, MTIME + 4]) assert.equal(copy.read(off, 4), clint.read(off, 4), `offset 0x${off.toString(16)}`);
  assert.equal(copy.deadline(), clint.deadline());
  copy.update();
  assert.equal(hart2.mip, MIP_MSIP);
});

test('a truncated or invalid CLINT state throws StateFormatError', () => {
  const { clint, clock } = setup();
  const state = save(clint);
  for (let cut = 0; cut < state.length; cut++) {
    assert.throws(() => restore(new Clint(clock, () => {}), state.subarray(0, cut)), StateFormatError);
  }
  const bad = state.slice();
  bad[0] = 2;
  assert.throws(() => restore(new Clint(clock, () => {}), bad), StateFormatError);
});
