import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as A from '../helpers/rv32asm.js';
import { RAM, op1, rig } from './harness.js';

const M = 0x8000_0000 | 0;

test('addi/slti/sltiu/xori/ori/andi sign-extend their 12-bit immediate', () => {
  assert.equal(op1(A.addi(3, 1, -1), 5), 4);
  assert.equal(op1(A.addi(3, 1, 2047), 1), 2048);
  assert.equal(op1(A.addi(3, 1, -2048), 0), -2048);
  assert.equal(op1(A.addi(3, 1, 1), 0x7fffffff), M); // wraps
  assert.equal(op1(A.slti(3, 1, -1), -2), 1);
  assert.equal(op1(A.slti(3, 1, -1), 0), 0);
  assert.equal(op1(A.sltiu(3, 1, -1), 5), 1); // -1 is 0xffffffff unsigned
  assert.equal(op1(A.sltiu(3, 1, -1), -1), 0);
  assert.equal(op1(A.sltiu(3, 1, 1), 0), 1); // seqz
  assert.equal(op1(A.xori(3, 1, -1), 0x0f0f0f0f), 0xf0f0f0f0 | 0); // not
  assert.equal(op1(A.ori(3, 1, -2048), 1), 0xfffff801 | 0);
  assert.equal(op1(A.andi(3, 1, -16), 0x12345678), 0x12345670);
  assert.equal(op1(A.andi(3, 1, 0x7ff), -1), 0x7ff);
});

test('register-register ALU operations', () => {
  assert.equal(op1(A.add(3, 1, 2), 0x7fffffff, 1), M);
  assert.equal(op1(A.sub(3, 1, 2), 0, 1), -1);
  assert.equal(op1(A.sub(3, 1, 2), M, 1), 0x7fffffff);
  assert.equal(op1(A.slt(3, 1, 2), -1, 0), 1);
  assert.equal(op1(A.slt(3, 1, 2), 0, -1), 0);
  assert.equal(op1(A.sltu(3, 1, 2), -1, 0), 0);
  assert.equal(op1(A.sltu(3, 1, 2), 0, -1), 1);
  assert.equal(op1(A.xor(3, 1, 2), 0xff00ff00 | 0, 0x0ff00ff0), 0xf0f0f0f0 | 0);
  assert.equal(op1(A.or(3, 1, 2), 0xff000000 | 0, 0xff), 0xff0000ff | 0);
  assert.equal(op1(A.and(3, 1, 2), 0xff00ff00 | 0, 0x0ff00ff0), 0x0f000f00);
});

test('shifts use only the low 5 bits of the amount', () => {
  assert.equal(op1(A.sll(3, 1, 2), 1, 31), M);
  assert.equal(op1(A.sll(3, 1, 2), 1, 32), 1);
  assert.equal(op1(A.sll(3, 1, 2), 1, 33), 2);
  assert.equal(op1(A.srl(3, 1, 2), M, 31), 1);
  assert.equal(op1(A.srl(3, 1, 2), M, 32), M);
  assert.equal(op1(A.srl(3, 1, 2), -1, 36), 0x0fffffff);
  assert.equal(op1(A.sra(3, 1, 2), M, 31), -1);
  assert.equal(op1(A.sra(3, 1, 2), M, 0xffffffe4 | 0), 0xf8000000 | 0); // amount 4
  assert.equal(op1(A.slli(3, 1, 31), 3), M);
  assert.equal(op1(A.srli(3, 1, 31), -1), 1);
  assert.equal(op1(A.srli(3, 1, 0), -1), -1);
  assert.equal(op1(A.srai(3, 1, 31), M), -1);
  assert.equal(op1(A.srai(3, 1, 4), 0x7ffffff0), 0x07ffffff);
});

test('lui and auipc', () => {
  assert.equal(op1(A.lui(3, 0xfffff), 0), 0xfffff000 | 0);
  assert.equal(op1(A.lui(3, 0x12345), 0), 0x12345000);
  const r = rig();
  r.load([A.addi(0, 0, 0), A.auipc(3, 1), A.auipc(4, 0x80000)]);
  r.run(3);
  assert.equal(r.hart.x[3]! >>> 0, RAM + 4 + 0x1000);
  assert.equal(r.hart.x[4]! >>> 0, (RAM + 8 + 0x8000_0000) >>> 0);
});

test('li encodes every constant shape', () => {
  for (const v of [0, 1, -1, 0x7ff, 0x800, -2048, -2049, 0x12345678, 0x8000_0000, 0xdeadbeef, 0xfffff800, 0x7ffff800]) {
    const r = rig();
    r.load([A.li(5, v)]);
    r.run(2);
    assert.equal(r.hart.x[5], v | 0, `li ${v.toString(16)}`);
  }
});

test('x0 stays zero when written, also when read back after run()', () => {
  const r = rig();
  r.load([A.addi(0, 0, 5), A.add(1, 0, 0), A.lui(0, 0x12345), A.jal(0, 4), A.addi(0, 0, 7)]);
  r.run(5);
  assert.equal(r.hart.x[0], 0);
  assert.equal(r.hart.x[1], 0);
  assert.equal(r.hart.getPc(), RAM + 20);
  assert.equal(r.hart.instret, 5);
});

test('fence and fence.i are no-ops', () => {
  const r = rig();
  r.load([A.fence(), A.fence_i(), A.addi(1, 0, 1)]);
  r.run(3);
  assert.equal(r.hart.x[1], 1);
  assert.equal(r.hart.getPc(), RAM + 12);
});
