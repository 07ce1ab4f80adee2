import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as A from '../helpers/rv32asm.js';
import { Cause } from '../../src/machine/cpu/trap.js';
import { StopReason } from '../../src/machine/cpu/hart.js';
import { HANDLER, RAM, rig, stopHandler } from './harness.js';

function branch(inst: number, a: number, b: number): boolean {
  const r = rig();
  r.load([inst]);
  r.hart.x[1] = a;
  r.hart.x[2] = b;
  r.run(1);
  const pc = r.hart.getPc();
  assert.ok(pc === RAM + 4 || pc === RAM + 16, `pc ${pc.toString(16)}`);
  return pc === RAM + 16;
}

test('conditional branches compare signed and unsigned correctly', () => {
  assert.equal(branch(A.beq(1, 2, 16), 5, 5), true);
  assert.equal(branch(A.beq(1, 2, 16), 5, 6), false);
  assert.equal(branch(A.bne(1, 2, 16), 5, 6), true);
  assert.equal(branch(A.bne(1, 2, 16), -1, -1), false);
  assert.equal(branch(A.blt(1, 2, 16), -1, 0), true);
  assert.equal(branch(A.blt(1, 2, 16), 0, -1), false);
  assert.equal(branch(A.blt(1, 2, 16), 3, 3), false);
  assert.equal(branch(A.bge(1, 2, 16), 3, 3), true);
  assert.equal(branch(A.bge(1, 2, 16), -1, 0), false);
  assert.equal(branch(A.bltu(1, 2, 16), 0, -1), true);
  assert.equal(branch(A.bltu(1, 2, 16), -1, 0), false);
  assert.equal(branch(A.bgeu(1, 2, 16), -1, 0), true);
  assert.equal(branch(A.bgeu(1, 2, 16), 0, -1), false);
  assert.equal(branch(A.bgeu(1, 2, 16), 7, 7), true);
});

test('backward branch and loop', () => {
  const r = rig();
  // t0 = 10; loop: t1 += t0; t0 -= 1; bne t0, x0, loop
  r.load([A.addi(5, 0, 10), A.add(6, 6, 5), A.addi(5, 5, -1), A.bne(5, 0, -8), A.wfi()]);
  assert.equal(r.run(1000), StopReason.Wfi);
  assert.equal(r.hart.x[6], 55);
  assert.equal(r.hart.instret, 1 + 30 + 1);
});

test('jal and jalr link pc+4; jalr clears bit 0 of the target', () => {
  const r = rig();
  r.load([A.jal(1, 12)]);
  r.load([A.jalr(2, 1, 0x11)], RAM + 12); // target = RAM+4 + 0x11 -> & ~1 = RAM + 0x14
  r.run(2);
  assert.equal(r.hart.x[1]! >>> 0, RAM + 4);
  assert.equal(r.hart.x[2]! >>> 0, RAM + 16);
  assert.equal(r.hart.getPc(), RAM + 0x14);
  // jalr with rd == rs1 uses the old value
  const q = rig();
  q.load([A.jalr(5, 5, 8)]);
  q.hart.x[5] = (RAM + 0x40) | 0;
  q.run(1);
  assert.equal(q.hart.getPc(), RAM + 0x48);
  assert.equal(q.hart.x[5]! >>> 0, RAM + 4);
  // negative jal offset
  const n = rig();
  n.load([A.jal(1, -8)], RAM + 0x100);
  n.hart.pc = RAM + 0x100;
  n.run(1);
  assert.equal(n.hart.getPc(), RAM + 0xf8);
});

test('jumps and taken branches to a target that is not 4-aligned trap before writing rd', () => {
  const cases: Array<[string, number, number]> = [
    ['jal +2', A.jal(1, 6), RAM + 6],
    ['jalr bit 1', A.jalr(1, 2, 2), RAM + 0x102],
    ['beq +2', A.beq(0, 0, 10), RAM + 10],
    ['bne -2', A.bne(3, 0, -2), RAM - 2],
  ];
  for (const [name, inst, target] of cases) {
    const r = rig();
    stopHandler(r);
    r.load([inst]);
    r.hart.x[1] = 0x1234;
    r.hart.x[2] = (RAM + 0x100) | 0;
    r.hart.x[3] = 1;
    assert.equal(r.run(10), StopReason.Wfi, name);
    assert.equal(r.hart.mcause, Cause.InstMisaligned, name);
    assert.equal(r.hart.mepc, RAM, name);
    assert.equal(r.hart.mtval, target >>> 0, name);
    assert.equal(r.hart.x[1], 0x1234, `${name}: rd untouched`);
    assert.equal(r.hart.instret, 1, `${name}: only the handler's wfi retired`);
  }
  // a not-taken branch with a misaligned offset does not trap
  const r = rig();
  stopHandler(r);
  r.load([A.beq(0, 3, 10), A.addi(4, 0, 1)]);
  r.hart.x[3] = 1;
  r.run(2);
  assert.equal(r.hart.x[4], 1);
  assert.equal(r.hart.getPc(), RAM + 8);
});

test('fetch outside RAM raises an instruction access fault at the target', () => {
  const r = rig();
  stopHandler(r);
  r.load([A.jalr(1, 2, 0)]);
  r.hart.x[2] = 0x1000;
  assert.equal(r.run(10), StopReason.Wfi);
  assert.equal(r.hart.mcause, Cause.InstAccessFault);
  assert.equal(r.hart.mepc, 0x1000);
  assert.equal(r.hart.mtval, 0x1000);
  assert.equal(r.hart.x[1]! >>> 0, RAM + 4); // the jalr itself completed
  // falling off the end of RAM
  const e = rig();
  stopHandler(e);
  const last = RAM + e.ram.bytes - 4;
  e.load([A.addi(1, 0, 1)], last);
  e.hart.pc = last;
  e.run(10);
  assert.equal(e.hart.mcause, Cause.InstAccessFault);
  assert.equal(e.hart.mepc, (RAM + e.ram.bytes) >>> 0);
  assert.equal(e.hart.getPc(), HANDLER + 4);
});

test('a trap loop at an unmapped mtvec still honours the budget', () => {
  const r = rig();
  r.hart.mtvec = 0x4000; // nothing there
  r.load([A.ecall()]);
  assert.equal(r.run(1000), StopReason.Budget);
  assert.equal(r.hart.mcause, Cause.InstAccessFault);
  assert.equal(r.hart.instret, 0);
  assert.equal(r.hart.budgetUsed, 1000);
});
