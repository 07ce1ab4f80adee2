import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as A from '../helpers/rv32asm.js';
import { Cause } from '../../src/machine/cpu/trap.js';
import { StopReason } from '../../src/machine/cpu/hart.js';
import { DATA, HANDLER, RAM, RecordingDevice, rig, stopHandler } from './harness.js';

test('loads of every width, with and without sign extension', () => {
  const r = rig();
  r.setWord(DATA, 0x8081f2f3);
  r.setWord(DATA + 4, 0x01027f70);
  r.load([
    A.lb(10, 1, 0), A.lb(11, 1, 3), A.lbu(12, 1, 0), A.lbu(13, 1, 3),
    A.lh(14, 1, 0), A.lh(15, 1, 2), A.lhu(16, 1, 0), A.lhu(17, 1, 2),
    A.lw(18, 1, 0), A.lw(19, 1, 4), A.lb(20, 1, 5), A.lh(21, 1, 4), A.lw(22, 2, -4),
  ]);
  r.hart.x[1] = DATA | 0;
  r.hart.x[2] = (DATA + 8) | 0;
  r.run(13);
  const x = r.hart.x;
  assert.equal(x[10], 0xfffffff3 | 0);
  assert.equal(x[11], 0xffffff80 | 0);
  assert.equal(x[12], 0xf3);
  assert.equal(x[13], 0x80);
  assert.equal(x[14], 0xfffff2f3 | 0);
  assert.equal(x[15], 0xffff8081 | 0);
  assert.equal(x[16], 0xf2f3);
  assert.equal(x[17], 0x8081);
  assert.equal(x[18], 0x8081f2f3 | 0);
  assert.equal(x[19], 0x01027f70);
  assert.equal(x[20], 0x7f);
  assert.equal(x[21], 0x7f70);
  assert.equal(x[22], 0x01027f70);
});

test('stores of every width write only their bytes, little-endian', () => {
  const r = rig();
  r.setWord(DATA, 0x11111111);
  r.setWord(DATA + 4, 0x22222222);
  r.setWord(DATA + 8, 0x33333333);
  r.load([A.sb(2, 1, 1), A.sh(2, 1, 6), A.sw(2, 1, 8), A.sb(2, 1, -1)]);
  r.hart.x[1] = DATA | 0;
  r.hart.x[2] = 0xa1b2c3d4 | 0;
  r.run(4);
  assert.equal(r.word(DATA), 0x1111d411);
  assert.equal(r.word(DATA + 4), 0xc3d42222);
  assert.equal(r.word(DATA + 8), 0xa1b2c3d4);
  assert.equal(r.word(DATA - 4), 0xd4000000);
});

test('misaligned loads and stores trap with the address in mtval and change nothing', () => {
  const cases: Array<[string, number, number, Cause]> = [
    ['lh', A.lh(5, 1, 1), DATA + 1, Cause.LoadMisaligned],
    ['lhu', A.lhu(5, 1, 3), DATA + 3, Cause.LoadMisaligned],
    ['lw+1', A.lw(5, 1, 1), DATA + 1, Cause.LoadMisaligned],
    ['lw+2', A.lw(5, 1, 2), DATA + 2, Cause.LoadMisaligned],
    ['sh', A.sh(2, 1, 1), DATA + 1, Cause.StoreMisaligned],
    ['sw', A.sw(2, 1, 2), DATA + 2, Cause.StoreMisaligned],
    ['lw outside RAM', A.lw(5, 3, 0), 0x1001, Cause.LoadMisaligned],
  ];
  for (const [name, inst, addr, cause] of cases) {
    const r = rig();
    stopHandler(r);
    r.setWord(DATA, 0x55555555);
    r.setWord(DATA + 4, 0x66666666);
    r.load([A.addi(0, 0, 0), inst]);
    r.hart.x[1] = DATA | 0;
    r.hart.x[2] = -1;
    r.hart.x[5] = 0x77;
    r.hart.x[3] = 0x1001; // misalignment is checked before the address is
    const expectAddr = addr;
    assert.equal(r.run(10), StopReason.Wfi, name);
    assert.equal(r.hart.mcause, cause, name);
    assert.equal(r.hart.mepc, RAM + 4, name);
    assert.equal(r.hart.mtval, expectAddr >>> 0, name);
    assert.equal(r.hart.x[5], 0x77, `${name}: rd untouched`);
    assert.equal(r.word(DATA), 0x55555555, name);
    assert.equal(r.word(DATA + 4), 0x66666666, name);
    assert.equal(r.hart.getPc(), HANDLER + 4, name);
  }
});

test('accesses to unmapped addresses raise access faults (bus with nothing mapped)', () => {
  const cases: Array<[string, number, number, Cause]> = [
    ['lb', A.lb(5, 1, 0), 0x0010_0000, Cause.LoadAccessFault],
    ['lw', A.lw(5, 1, 0), 0x1000_0000, Cause.LoadAccessFault],
    ['lhu', A.lhu(5, 1, 0), 0x7fff_fffe, Cause.LoadAccessFault],
    ['sw', A.sw(2, 1, 0), 0x0200_4000, Cause.StoreAccessFault],
    ['sb', A.sb(2, 1, 0), 0xffff_ffff, Cause.StoreAccessFault],
    ['sh', A.sh(2, 1, 0), 0x0000_0000, Cause.StoreAccessFault],
  ];
  for (const [name, inst, addr, cause] of cases) {
    const r = rig();
    stopHandler(r);
    r.load([inst]);
    r.hart.x[1] = addr | 0;
    r.hart.x[5] = 0x77;
    assert.equal(r.run(10), StopReason.Wfi, name);
    assert.equal(r.hart.mcause, cause, name);
    assert.equal(r.hart.mepc, RAM, name);
    assert.equal(r.hart.mtval, addr >>> 0, name);
    assert.equal(r.hart.x[5], 0x77, name);
    assert.equal(r.bus.fault, false, `${name}: the hart clears bus.fault`);
  }
  // RAM ends exactly at its size: the word just past it faults
  const r = rig();
  stopHandler(r);
  r.load([A.lw(5, 1, 0)]);
  r.hart.x[1] = (RAM + r.ram.bytes) | 0;
  r.run(10);
  assert.equal(r.hart.mcause, Cause.LoadAccessFault);
});

test('MMIO loads and stores reach the device with the right size, offset and extension', () => {
  const r = rig();
  const dev = new RecordingDevice(0xfe);
  r.bus.map(0x1000_0000, 0x100, dev);
  r.load([A.lb(5, 1, 4), A.lbu(6, 1, 4), A.lh(7, 1, 8), A.lw(8, 1, 12), A.lhu(9, 1, 16), A.sb(2, 1, 1), A.sh(2, 1, 2), A.sw(2, 1, 4)]);
  r.hart.x[1] = 0x1000_0000;
  r.hart.x[2] = 0x12345678;
  r.run(2);
  dev.readValue = 0x8000fffe;
  r.run(6);
  assert.equal(r.hart.x[5], -2);
  assert.equal(r.hart.x[6], 0xfe);
  assert.equal(r.hart.x[7], -2);
  assert.equal(r.hart.x[8], 0x8000fffe | 0);
  assert.equal(r.hart.x[9], 0xfffe, 'only the access size is kept even if a device returns more');
  assert.deepEqual(dev.log, ['r1@4', 'r1@4', 'r2@8', 'r4@12', 'r2@16', 'w1@1=120', 'w2@2=22136', 'w4@4=305419896']);
  assert.equal(r.hart.instret, 8);
});

test('an MMIO write that requests exit finishes the instruction and returns Exit', () => {
  const r = rig();
  r.bus.map(0x0010_0000, 0x1000, new RecordingDevice(0, (_o, _s, v) => r.bus.requestExit(v)));
  r.load([...A.li(1, 0x0010_0000), A.addi(2, 0, 0x55), A.sw(2, 1, 0), A.addi(3, 0, 1)]);
  assert.equal(r.run(100), StopReason.Exit);
  assert.equal(r.bus.exitCode, 0x55);
  assert.equal(r.hart.getPc(), RAM + 16);
  assert.equal(r.hart.instret, 4);
  assert.equal(r.hart.x[3], 0);
});
