import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MIP_MEIP, Plic } from '../../src/machine/devices/plic.js';
import { StateFormatError } from '../../src/machine/state/codec.js';
import { FakeHart, restore, save } from './helpers.js';

const prio = (src: number): number => 4 * src;
const PENDING = 0x1000;
const enable = (ctx: number): number => 0x2000 + 0x80 * ctx;
const threshold = (ctx: number): number => 0x20_0000 + 0x1000 * ctx;
const claim = (ctx: number): number => threshold(ctx) + 4;

function setup() {
  const hart = new FakeHart();
  const plic = new Plic(hart.setMip);
  return { hart, plic, meip: () => (hart.mip & MIP_MEIP) !== 0 };
}

test('priorities keep 3 bits (WARL) and thresholds too', () => {
  const { plic } = setup();
  plic.write(prio(10), 4, 0xff);
  assert.equal(plic.read(prio(10), 4), 7);
  plic.write(threshold(0), 4, 9);
  assert.equal(plic.read(threshold(0), 4), 1);
  plic.write(prio(95), 4, 3);
  assert.equal(plic.read(prio(95), 4), 3);
  assert.equal(plic.read(prio(96), 4), 0, 'source 96 does not exist');
});

test('an interrupt reaches MEIP only when pending, enabled, and above the threshold', () => {
  const { plic, meip } = setup();
  plic.setIrq(10, true);
  assert.equal(plic.read(PENDING, 4), 1 << 10);
  assert.equal(meip(), false, 'priority 0 never interrupts');
  plic.write(prio(10), 4, 2);
  assert.equal(meip(), false, 'not enabled');
  plic.write(enable(0), 4, 1 << 10);
  assert.equal(meip(), true);
  plic.write(threshold(0), 4, 2);
  assert.equal(meip(), false, 'priority must exceed the threshold');
  plic.write(threshold(0), 4, 1);
  assert.equal(meip(), true);
  plic.write(enable(1), 4, 1 << 10);
  plic.write(enable(0), 4, 0);
  assert.equal(meip(), false, 'the S-mode context drives nothing');
});

test('claim returns the highest priority (lowest id on a tie) and complete re-arms', () => {
  const { plic, meip } = setup();
  for (const s of [1, 5, 10, 40]) plic.write(prio(s), 4, s === 40 ? 6 : 3);
  plic.write(enable(0), 4, (1 << 1) | (1 << 5) | (1 << 10));
  plic.write(enable(0) + 4, 4, 1 << (40 - 32));
  for (const s of [10, 5, 40, 1]) {
    plic.setIrq(s, true);
    plic.setIrq(s, false); // edge-like pulses: pending latches until claimed... or lowered
  }
  assert.equal(plic.read(PENDING, 4), 0, 'a line that goes low takes its pending bit with it (QEMU)');
  for (const s of [10, 5, 40, 1]) plic.setIrq(s, true);
  assert.equal(plic.read(claim(0), 4), 40);
  assert.equal(plic.read(claim(0), 4), 1, 'equal priorities: lowest id first');
  assert.equal(plic.read(claim(0), 4), 5);
  assert.equal(plic.read(claim(0), 4), 10);
  assert.equal(plic.read(claim(0), 4), 0, 'everything claimed');
  assert.equal(meip(), false);
  plic.setIrq(5, false);
  plic.write(claim(0), 4, 5);
  assert.equal(meip(), false, 'completing a source whose line is low leaves nothing pending');
  plic.write(claim(0), 4, 10);
  assert.equal(meip(), true, 'line 10 is still high: completion makes it pending again');
  assert.equal(plic.read(claim(0), 4), 10);
});

test('a claimed source stays masked while its line is held and re-pends on completion', () => {
  const { plic, meip } = setup();
  plic.write(prio(10), 4, 1);
  plic.write(enable(0), 4, 1 << 10);
  plic.setIrq(10, true);
  assert.equal(plic.read(claim(0), 4), 10);
  assert.equal(plic.read(PENDING, 4) & (1 << 10), 0, 'claim clears pending');
  assert.equal(meip(), false);
  plic.setIrq(10, true); // the device re-asserts while it is being serviced
  assert.equal(meip(), false, 'claimed: not offered again before completion');
  plic.write(claim(0), 4, 10);
  assert.equal(meip(), true);
  plic.setIrq(10, false);
  assert.equal(meip(), false, 'the device dropping its line withdraws the request');
  assert.equal(plic.read(claim(0), 4), 0);
});

test('the S-mode context claims on its own', () => {
  const { plic, meip } = setup();
  plic.write(prio(3), 4, 1);
  plic.write(enable(1), 4, 1 << 3);
  plic.setIrq(3, true);
  assert.equal(meip(), false);
  assert.equal(plic.read(claim(1), 4), 3);
  assert.equal(plic.read(claim(1), 4), 0);
});

test('nonexistent sources are refused', () => {
  const { plic } = setup();
  assert.throws(() => plic.setIrq(0, true), /source 0/);
  assert.throws(() => plic.setIrq(96, true), /source 96/);
});

function dump(p: Plic): number[] {
  const v: number[] = [];
  for (let s = 0; s < 96; s++) v.push(p.read(prio(s), 4));
  for (let w = 0; w < 3; w++) v.push(p.read(PENDING + 4 * w, 4), p.read(enable(0) + 4 * w, 4), p.read(enable(1) + 4 * w, 4));
  v.push(p.read(threshold(0), 4), p.read(threshold(1), 4));
  for (let i = 0; i < 4; i++) v.push(p.read(claim(0), 4));
  for (const s of [7, 10, 33]) p.write(claim(0), 4, s);
  for (let i = 0; i < 4; i++) v.push(p.read(claim(0), 4));
  return v;
}

test('saveState -> restoreState into a fresh PLIC reproduces every register, claims and line levels', () => {
  const { plic } = setup();
  for (const s of [7, 10, 33, 64]) plic.write(prio(s), 4, (s % 7) + 1);
  plic.write(enable(0), 4, (1 << 7) | (1 << 10));
  plic.write(enable(0) + 4, 4, 1 << 1);
  plic.write(enable(1), 4, 1 << 10);
  plic.write(threshold(1), 4, 5);
  for (const s of [7, 10, 33, 64]) plic.setIrq(s, true);
  assert.ok(plic.read(claim(0), 4) !== 0);
  const state = save(plic);
  const hart2 = new FakeHart();
  const copy = new Plic(hart2.setMip);
  restore(copy, state);
  assert.equal(hart2.mip & MIP_MEIP, MIP_MEIP, 'restore re-drives MEIP');
  assert.deepEqual(dump(copy), dump(plic));
});

test('a truncated or invalid PLIC state throws StateFormatError', () => {
  const { plic } = setup();
  const state = save(plic);
  for (let cut = 0; cut < state.length; cut += 7) {
    assert.throws(() => restore(new Plic(() => {}), state.subarray(0, cut)), StateFormatError);
  }
  const bad = state.slice();
  bad[4 * 10] = 8; // priority of source 10
  assert.throws(() => restore(new Plic(() => {}), bad), StateFormatError);
});
