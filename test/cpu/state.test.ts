import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as A from '../helpers/rv32asm.js';
import { Csr, Mip } from '../../src/machine/cpu/csr.js';
import { StateFormatError, StateReader, StateWriter } from '../../src/machine/state/codec.js';
import { DATA, HANDLER, RAM, rig, type Rig } from './harness.js';

/** A program that touches registers, memory, CSRs, counters, traps and lr/sc. */
function program(r: Rig): void {
  r.load([
    ...A.li(1, DATA), // 0
    ...A.li(9, HANDLER), // 8
    A.csrw(Csr.Mtvec, 9), // 16
    A.addi(2, 0, 0), // 20
    // loop (24):
    A.lw(3, 1, 0),
    A.addi(3, 3, 7),
    A.mul(4, 3, 3),
    A.sw(4, 1, 4),
    A.lr_w(5, 1),
    A.add(5, 5, 4),
    A.sc_w(6, 1, 5),
    A.csrr(7, Csr.Minstret),
    A.csrrw(8, Csr.Mscratch, 7),
    A.ecall(),
    A.addi(2, 2, 1),
    A.jal(0, -44),
  ]);
  r.load([A.csrr(31, Csr.Mepc), A.addi(31, 31, 4), A.csrw(Csr.Mepc, 31), A.csrr(30, Csr.Mcause), A.mret()], HANDLER);
}

function snapshot(r: Rig) {
  const h = r.hart;
  return {
    x: Array.from(h.x),
    pc: h.getPc(),
    priv: h.priv,
    instret: h.instret,
    csr: [Csr.Mstatus, Csr.Mie, Csr.Mip, Csr.Mtvec, Csr.Mscratch, Csr.Mepc, Csr.Mcause, Csr.Mtval, Csr.Mcycle, Csr.Minstret, Csr.MinstretH, Csr.Pmpcfg0, Csr.Pmpaddr0 + 3].map((c) => h.csrRead(c)),
    ram: Array.from(r.ram.i32.subarray(0, 0x1000)),
  };
}

function save(r: Rig): Uint8Array {
  const w = new StateWriter();
  r.hart.saveState(w);
  return w.finish();
}

test('a hart restored from saved state continues exactly like one that never stopped', () => {
  const a = rig();
  program(a);
  a.hart.pmpcfg[0] = 0x1f;
  a.hart.pmpaddr[3] = 0xabc;
  a.hart.mie = Mip.MTIP;
  a.hart.setPending(Mip.MSIP, true);
  a.run(1000);
  for (const cut of [1, 5, 11, 13]) {
    a.run(cut); // stop at various points, including between lr and sc
    const state = save(a);
    const b = rig();
    b.ram.u8.set(a.ram.u8);
    b.hart.restoreState(new StateReader(state, 'cpu'), b.hart.stateVersion);
    assert.deepEqual(snapshot(b), snapshot(a), `right after restore (cut ${cut})`);
    a.run(777);
    b.run(777);
    assert.deepEqual(snapshot(b), snapshot(a), `after running on (cut ${cut})`);
  }
  assert.ok(a.hart.x[2]! > 50, 'the loop really ran');
  assert.equal(a.hart.x[6], 0, 'sc kept succeeding');
});

test('the reservation travels with the state', () => {
  const a = rig();
  a.load([A.lr_w(5, 1), A.sc_w(6, 1, 2)]);
  a.hart.x[1] = DATA | 0;
  a.hart.x[2] = 9;
  a.run(1);
  const b = rig();
  b.hart.restoreState(new StateReader(save(a), 'cpu'), 1);
  b.ram.u8.set(a.ram.u8);
  b.run(1);
  assert.equal(b.hart.x[6], 0);
  assert.equal(b.word(DATA), 9);
});

test('restoreState refuses a truncated buffer with StateFormatError and changes nothing', () => {
  const a = rig();
  program(a);
  a.run(100);
  const full = save(a);
  const b = rig();
  b.hart.x[5] = 1234;
  b.hart.mscratch = 99;
  const before = snapshot(b);
  for (const n of [0, 1, 4, 64, full.length - 1]) {
    assert.throws(() => b.hart.restoreState(new StateReader(full.subarray(0, n), 'cpu'), 1), StateFormatError, `length ${n}`);
    assert.deepEqual(snapshot(b), before, `nothing loaded from ${n} bytes`);
  }
  const longer = new Uint8Array(full.length + 1);
  longer.set(full);
  assert.throws(() => b.hart.restoreState(new StateReader(longer, 'cpu'), 1), StateFormatError);
  assert.throws(() => b.hart.restoreState(new StateReader(full, 'cpu'), 2), StateFormatError);
  assert.deepEqual(snapshot(b), before);
});

test('x0 reads zero after restoring a state that says otherwise', () => {
  const s = save(rig());
  new DataView(s.buffer).setInt32(4, 1234, true);
  const r = rig();
  r.hart.restoreState(new StateReader(s, 'cpu'), 1);
  assert.equal(r.hart.x[0], 0);
});

test('restoreState refuses impossible values', () => {
  const a = rig();
  const good = save(a);
  // priv is the byte after 4 + 32*4 register bytes and the 4-byte pc
  const badPriv = good.slice();
  badPriv[4 + 128 + 4] = 1;
  assert.throws(() => rig().hart.restoreState(new StateReader(badPriv, 'cpu'), 1), /privilege level 1/);
  const badStatus = good.slice();
  new DataView(badStatus.buffer).setUint32(4 + 128 + 4 + 1 + 8, 0x2, true); // SIE
  assert.throws(() => rig().hart.restoreState(new StateReader(badStatus, 'cpu'), 1), /mstatus/);
});

test('stateId and stateVersion', () => {
  const r = rig();
  assert.equal(r.hart.stateId, 'cpu');
  assert.equal(r.hart.stateVersion, 1);
  assert.equal(RAM, 0x8000_0000);
});
