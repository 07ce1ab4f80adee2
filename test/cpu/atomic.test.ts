import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as A from '../helpers/rv32asm.js';
import { Cause } from '../../src/machine/cpu/trap.js';
import { StopReason } from '../../src/machine/cpu/hart.js';
import { DATA, RAM, RecordingDevice, rig, skipHandler, stopHandler } from './harness.js';

const MIN = 0x8000_0000 | 0;

function amo(inst: number, mem: number, src: number): { old: number; mem: number } {
  const r = rig();
  r.setWord(DATA, mem);
  r.load([inst]);
  r.hart.x[1] = DATA | 0;
  r.hart.x[2] = src;
  r.run(1);
  assert.equal(r.hart.getPc(), RAM + 4);
  return { old: r.hart.x[3]!, mem: r.word(DATA) | 0 };
}

test('every AMO returns the old value and stores the combination', () => {
  assert.deepEqual(amo(A.amoswap_w(3, 1, 2), 5, 9), { old: 5, mem: 9 });
  assert.deepEqual(amo(A.amoadd_w(3, 1, 2), 0x7fffffff, 1), { old: 0x7fffffff, mem: MIN });
  assert.deepEqual(amo(A.amoxor_w(3, 1, 2), 0xff00, 0x0ff0), { old: 0xff00, mem: 0xf0f0 });
  assert.deepEqual(amo(A.amoand_w(3, 1, 2), 0xff00, 0x0ff0), { old: 0xff00, mem: 0x0f00 });
  assert.deepEqual(amo(A.amoor_w(3, 1, 2), 0xff00, 0x0ff0), { old: 0xff00, mem: 0xfff0 });
  assert.deepEqual(amo(A.amomin_w(3, 1, 2), -1, 1), { old: -1, mem: -1 });
  assert.deepEqual(amo(A.amomin_w(3, 1, 2), 1, MIN), { old: 1, mem: MIN });
  assert.deepEqual(amo(A.amomax_w(3, 1, 2), -1, 1), { old: -1, mem: 1 });
  assert.deepEqual(amo(A.amomax_w(3, 1, 2), MIN, -5), { old: MIN, mem: -5 });
  assert.deepEqual(amo(A.amominu_w(3, 1, 2), -1, 1), { old: -1, mem: 1 });
  assert.deepEqual(amo(A.amominu_w(3, 1, 2), 3, -1), { old: 3, mem: 3 });
  assert.deepEqual(amo(A.amomaxu_w(3, 1, 2), -1, 1), { old: -1, mem: -1 });
  assert.deepEqual(amo(A.amomaxu_w(3, 1, 2), 3, MIN), { old: 3, mem: MIN });
});

test('AMO with rd == rs2 uses the old source value', () => {
  const r = rig();
  r.setWord(DATA, 10);
  r.load([A.amoadd_w(2, 1, 2)]);
  r.hart.x[1] = DATA | 0;
  r.hart.x[2] = 5;
  r.run(1);
  assert.equal(r.hart.x[2], 10);
  assert.equal(r.word(DATA), 15);
});

function lrsc(prog: number[], budget: number) {
  const r = rig();
  skipHandler(r);
  r.setWord(DATA, 100);
  r.setWord(DATA + 4, 200);
  r.load(prog);
  r.hart.x[1] = DATA | 0;
  r.hart.x[2] = 7;
  r.hart.x[4] = (DATA + 4) | 0;
  r.run(budget);
  return r;
}

test('sc succeeds after lr to the same address and writes', () => {
  const r = lrsc([A.lr_w(3, 1), A.sc_w(5, 1, 2)], 2);
  assert.equal(r.hart.x[3], 100);
  assert.equal(r.hart.x[5], 0);
  assert.equal(r.word(DATA), 7);
});

test('sc without a reservation fails and does not write', () => {
  const r = lrsc([A.sc_w(5, 1, 2)], 1);
  assert.equal(r.hart.x[5], 1);
  assert.equal(r.word(DATA), 100);
});

test('any sc clears the reservation: a second sc fails', () => {
  const r = lrsc([A.lr_w(3, 1), A.sc_w(5, 1, 2), A.addi(2, 0, 9), A.sc_w(6, 1, 2)], 4);
  assert.equal(r.hart.x[5], 0);
  assert.equal(r.hart.x[6], 1);
  assert.equal(r.word(DATA), 7);
});

test('sc to a different address fails and clears the reservation', () => {
  const r = lrsc([A.lr_w(3, 1), A.sc_w(5, 4, 2), A.sc_w(6, 1, 2)], 3);
  assert.equal(r.hart.x[5], 1);
  assert.equal(r.hart.x[6], 1);
  assert.equal(r.word(DATA + 4), 200);
  assert.equal(r.word(DATA), 100);
});

test('a trap between lr and sc clears the reservation (QEMU riscv_cpu_set_mode)', () => {
  const r = lrsc([A.lr_w(3, 1), A.ecall(), A.sc_w(5, 1, 2)], 2 + 4 + 1);
  assert.equal(r.hart.mcause, Cause.EcallFromM);
  assert.equal(r.hart.getPc(), RAM + 12);
  assert.equal(r.hart.x[5], 1);
  assert.equal(r.word(DATA), 100);
});

test('taking a trap clears the reservation even without mret', () => {
  const r = rig();
  r.load([A.sc_w(5, 1, 2), A.wfi()], 0x8000_1000);
  r.hart.mtvec = 0x8000_1000;
  r.setWord(DATA, 100);
  r.load([A.lr_w(3, 1), A.ecall()]);
  r.hart.x[1] = DATA | 0;
  r.hart.x[2] = 7;
  r.run(10);
  assert.equal(r.hart.mcause, Cause.EcallFromM);
  assert.equal(r.hart.x[5], 1);
  assert.equal(r.word(DATA), 100);
});

test('like QEMU, sc fails when the word changed since lr, and succeeds when it holds the same value', () => {
  const changed = lrsc([A.lr_w(3, 1), A.sw(2, 1, 0), A.addi(2, 0, 9), A.sc_w(5, 1, 2)], 4);
  assert.equal(changed.hart.x[5], 1);
  assert.equal(changed.word(DATA), 7);
  const same = lrsc([A.lr_w(3, 1), A.amoadd_w(0, 1, 0), A.sc_w(5, 1, 2)], 3);
  assert.equal(same.hart.x[5], 0);
  assert.equal(same.word(DATA), 7);
});

test('misaligned lr traps as a load (4), sc and AMOs as store/AMO (6)', () => {
  const cases: Array<[string, number, Cause]> = [
    ['lr', A.lr_w(3, 1), Cause.LoadMisaligned],
    ['sc', A.sc_w(3, 1, 2), Cause.StoreMisaligned],
    ['amoadd', A.amoadd_w(3, 1, 2), Cause.StoreMisaligned],
    ['amoswap', A.amoswap_w(3, 1, 2), Cause.StoreMisaligned],
  ];
  for (const [name, inst, cause] of cases) {
    const r = rig();
    stopHandler(r);
    r.setWord(DATA, 0x01020304);
    r.load([inst]);
    r.hart.x[1] = (DATA + 2) | 0;
    r.hart.x[3] = 0x77;
    assert.equal(r.run(10), StopReason.Wfi, name);
    assert.equal(r.hart.mcause, cause, name);
    assert.equal(r.hart.mtval, DATA + 2, name);
    assert.equal(r.hart.mepc, RAM, name);
    assert.equal(r.hart.x[3], 0x77, name);
    assert.equal(r.word(DATA), 0x01020304, name);
  }
});

test('unmapped lr faults as a load (5), AMO as store/AMO (7); unreserved sc just fails', () => {
  for (const [name, inst, cause] of [
    ['lr', A.lr_w(3, 1), Cause.LoadAccessFault],
    ['amoor', A.amoor_w(3, 1, 2), Cause.StoreAccessFault],
  ] as Array<[string, number, Cause]>) {
    const r = rig();
    stopHandler(r);
    r.load([inst]);
    r.hart.x[1] = 0x40;
    r.run(10);
    assert.equal(r.hart.mcause, cause, name);
    assert.equal(r.hart.mtval, 0x40, name);
  }
  const r = rig();
  stopHandler(r);
  r.load([A.sc_w(3, 1, 2)]);
  r.hart.x[1] = 0x40;
  r.run(1);
  assert.equal(r.hart.x[3], 1);
  assert.equal(r.hart.getPc(), RAM + 4);
});

test('AMOs on a device read then write through the bus', () => {
  const r = rig();
  const dev = new RecordingDevice(40);
  r.bus.map(0x1000_0000, 0x100, dev);
  r.load([A.amoadd_w(3, 1, 2)]);
  r.hart.x[1] = 0x1000_0010;
  r.hart.x[2] = 2;
  r.run(1);
  assert.equal(r.hart.x[3], 40);
  assert.deepEqual(dev.log, ['r4@16', 'w4@16=42']);
});

test('reserved encodings in the AMO space are illegal', () => {
  for (const inst of [
    A.lr_w(3, 1) | (5 << 20), // lr with rs2 != 0
    (A.amoadd_w(3, 1, 2) & ~0x7000) | 0x3000, // .d on RV32
    (A.amoadd_w(3, 1, 2) & ~(0x1f << 27)) | (0x05 << 27), // funct5 5
  ]) {
    const r = rig();
    stopHandler(r);
    r.load([inst]);
    r.hart.x[1] = DATA | 0;
    r.run(10);
    assert.equal(r.hart.mcause, Cause.IllegalInst);
    assert.equal(r.hart.mtval, inst >>> 0);
  }
});
