import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as A from '../helpers/rv32asm.js';
import { op1 } from './harness.js';

const MIN = 0x8000_0000 | 0;

test('mul keeps the low 32 bits', () => {
  assert.equal(op1(A.mul(3, 1, 2), 0x10000, 0x10000), 0);
  assert.equal(op1(A.mul(3, 1, 2), -3, 7), -21);
  assert.equal(op1(A.mul(3, 1, 2), 0x12345678, 0x9abcdef0 | 0), Number(BigInt.asIntN(32, 0x12345678n * 0x9abcdef0n)));
});

test('mulh/mulhsu/mulhu signs', () => {
  assert.equal(op1(A.mulh(3, 1, 2), -1, -1), 0);
  assert.equal(op1(A.mulh(3, 1, 2), -1, 1), -1);
  assert.equal(op1(A.mulh(3, 1, 2), MIN, MIN), 0x40000000);
  assert.equal(op1(A.mulh(3, 1, 2), MIN, 0x7fffffff), 0xc0000000 | 0);
  assert.equal(op1(A.mulhu(3, 1, 2), -1, -1), -2); // 0xfffffffe
  assert.equal(op1(A.mulhu(3, 1, 2), MIN, 2), 1);
  assert.equal(op1(A.mulhsu(3, 1, 2), -1, -1), -1); // -1 * 0xffffffff
  assert.equal(op1(A.mulhsu(3, 1, 2), 1, -1), 0);
  assert.equal(op1(A.mulhsu(3, 1, 2), MIN, -1), 0x80000000 | 0);
});

test('mulh family agrees with a BigInt reference on pseudo-random operands', () => {
  let seed = 0x1234567;
  const next = () => (seed = (Math.imul(seed, 1103515245) + 12345) | 0) ^ (seed >>> 7);
  const edge = [0, 1, -1, MIN, 0x7fffffff, 0xffff, 0x10000, -0x10000];
  for (let i = 0; i < 400; i++) {
    const a = i < 64 ? edge[i & 7]! : next() | 0;
    const b = i < 64 ? edge[i >> 3]! : next() | 0;
    const sa = BigInt(a), sb = BigInt(b), ua = BigInt(a >>> 0), ub = BigInt(b >>> 0);
    assert.equal(op1(A.mulh(3, 1, 2), a, b), Number(BigInt.asIntN(32, (sa * sb) >> 32n)), `mulh ${a} ${b}`);
    assert.equal(op1(A.mulhu(3, 1, 2), a, b), Number(BigInt.asIntN(32, (ua * ub) >> 32n)), `mulhu ${a} ${b}`);
    assert.equal(op1(A.mulhsu(3, 1, 2), a, b), Number(BigInt.asIntN(32, (sa * ub) >> 32n)), `mulhsu ${a} ${b}`);
    assert.equal(op1(A.mul(3, 1, 2), a, b), Number(BigInt.asIntN(32, sa * sb)), `mul ${a} ${b}`);
  }
});

test('division rounds toward zero; remainder takes the dividend sign', () => {
  assert.equal(op1(A.div(3, 1, 2), -7, 2), -3);
  assert.equal(op1(A.rem(3, 1, 2), -7, 2), -1);
  assert.equal(op1(A.div(3, 1, 2), 7, -2), -3);
  assert.equal(op1(A.rem(3, 1, 2), 7, -2), 1);
  assert.equal(op1(A.divu(3, 1, 2), -1, 2), 0x7fffffff);
  assert.equal(op1(A.remu(3, 1, 2), -1, 16), 15);
  assert.equal(op1(A.divu(3, 1, 2), -2, -1), 0);
  assert.equal(op1(A.remu(3, 1, 2), -2, -1), -2);
});

test('division by zero and signed overflow follow RISC-V (no trap)', () => {
  assert.equal(op1(A.div(3, 1, 2), 7, 0), -1);
  assert.equal(op1(A.div(3, 1, 2), MIN, 0), -1);
  assert.equal(op1(A.divu(3, 1, 2), 7, 0), -1);
  assert.equal(op1(A.rem(3, 1, 2), 7, 0), 7);
  assert.equal(op1(A.rem(3, 1, 2), -7, 0), -7);
  assert.equal(op1(A.remu(3, 1, 2), -7, 0), -7);
  assert.equal(op1(A.div(3, 1, 2), MIN, -1), MIN);
  assert.equal(op1(A.rem(3, 1, 2), MIN, -1), 0);
  assert.equal(op1(A.div(3, 1, 2), 5, -1), -5);
  assert.equal(op1(A.rem(3, 1, 2), 5, -1), 0);
});
