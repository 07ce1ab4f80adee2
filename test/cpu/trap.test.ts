import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as A from '../helpers/rv32asm.js';
import { Csr, Mip } from '../../src/machine/cpu/csr.js';
import { Cause } from '../../src/machine/cpu/trap.js';
import { StopReason } from '../../src/machine/cpu/hart.js';
import { HANDLER, RAM, RecordingDevice, rig, skipHandler, stopHandler } from './harness.js';

const MSTATUS_MIE = 1 << 3;
const MSTATUS_MPIE = 1 << 7;
const MPP_M = 3 << 11;

test('illegal instructions trap with mtval = the instruction bits', () => {
  const words = [
    0xffffffff, 0x00000000, 0x0000107f, 0x00000001, // all ones, zero, 64-bit prefix, compressed
    A.slli(1, 1, 1) | (1 << 25), A.srai(1, 1, 1) | (1 << 26), A.add(1, 1, 1) | (2 << 25), A.sub(1, 1, 1) | (1 << 12),
    A.jalr(1, 1, 0) | (1 << 12), A.beq(1, 1, 8) | (2 << 12), A.lw(1, 1, 0) | (3 << 12), A.sw(1, 1, 0) | (3 << 12),
    0x10200073, 0x00200073, 0x12000073, 0x00000073 | (1 << 7), 0x0000400f | 0x2000, 0x4073, 0x00002007,
  ];
  for (const w of words) {
    const r = rig();
    stopHandler(r);
    r.load([A.nop(), w]);
    r.hart.x[1] = (RAM + 0x100) | 0;
    assert.equal(r.run(10), StopReason.Wfi, w.toString(16));
    assert.equal(r.hart.mcause, Cause.IllegalInst, w.toString(16));
    assert.equal(r.hart.mepc, RAM + 4);
    assert.equal(r.hart.mtval, w >>> 0, w.toString(16));
    assert.equal(r.hart.x[1], (RAM + 0x100) | 0);
  }
});

test('ecall from M (11) and ebreak (3) save mepc and the previous mode', () => {
  const r = rig();
  stopHandler(r);
  r.hart.mstatus = MSTATUS_MIE;
  r.load([A.nop(), A.ecall()]);
  r.run(10);
  assert.equal(r.hart.mcause, Cause.EcallFromM);
  assert.equal(r.hart.mepc, RAM + 4);
  assert.equal(r.hart.mtval, 0);
  assert.equal(r.hart.mstatus, MSTATUS_MPIE | MPP_M, 'MPIE = old MIE, MIE = 0, MPP = M');
  assert.equal(r.hart.instret, 2, 'nop and the handler wfi; ecall does not retire');
  const b = rig();
  stopHandler(b);
  b.load([A.ebreak()]);
  b.hart.mtval = 123;
  b.run(10);
  assert.equal(b.hart.mcause, Cause.Breakpoint);
  assert.equal(b.hart.mepc, RAM);
  assert.equal(b.hart.mtval, 0, 'QEMU 7.2 writes 0');
});

test('mret drops to U-mode; ecall from U (8) comes back to M', () => {
  const r = rig();
  skipHandler(r);
  const user = RAM + 0x100;
  r.load([...A.li(1, user), A.csrw(Csr.Mepc, 1), A.mret()]);
  r.load([A.addi(5, 0, 1), A.ecall(), A.addi(6, 0, 2), A.wfi()], user);
  r.hart.mstatus = MSTATUS_MIE; // MPP = U, MPIE = 0
  r.run(5); // li(2), csrw, mret, addi
  assert.equal(r.hart.priv, 0);
  assert.equal(r.hart.mstatus, MSTATUS_MPIE, 'MIE = MPIE (0), MPIE = 1, MPP = U');
  assert.equal(r.hart.x[5], 1);
  r.run(1); // ecall
  assert.equal(r.hart.priv, 3);
  assert.equal(r.hart.mcause, Cause.EcallFromU);
  assert.equal(r.hart.mepc, user + 4);
  assert.equal(r.hart.mstatus, 0, 'MPP = U recorded, MPIE = old MIE (0)');
  // The handler's mret returns to U (MPP = U) after the ecall.
  r.run(4);
  assert.equal(r.hart.priv, 0);
  assert.equal(r.hart.getPc(), user + 8);
  // wfi in U-mode is illegal
  r.run(2);
  assert.equal(r.hart.x[6], 2);
  assert.equal(r.hart.mcause, Cause.IllegalInst);
  assert.equal(r.hart.mtval, A.wfi());
  assert.equal(r.hart.mepc, user + 12);
});

test('mret with MPP = M stays in M and restores MIE from MPIE', () => {
  const r = rig();
  r.load([A.mret()]);
  r.hart.mepc = RAM + 0x40;
  r.hart.mstatus = MSTATUS_MPIE | MPP_M | (1 << 17);
  r.run(1);
  assert.equal(r.hart.priv, 3);
  assert.equal(r.hart.getPc(), RAM + 0x40);
  assert.equal(r.hart.mstatus, MSTATUS_MIE | MSTATUS_MPIE | (1 << 17), 'MPP = U afterwards; MPRV kept when returning to M');
  const u = rig();
  u.load([A.mret()]);
  u.hart.mepc = RAM + 0x40;
  u.hart.mstatus = 1 << 17;
  u.run(1);
  assert.equal(u.hart.priv, 0);
  assert.equal(u.hart.mstatus, MSTATUS_MPIE, 'MPRV cleared when returning below M');
});

test('mret in U-mode is illegal', () => {
  const r = rig();
  stopHandler(r);
  r.hart.priv = 0;
  r.hart.mepc = RAM + 0x40;
  r.load([A.mret()]);
  r.run(10);
  assert.equal(r.hart.mcause, Cause.IllegalInst);
  assert.equal(r.hart.mtval, A.mret());
  assert.equal(r.hart.mstatus, 0, 'MPP = U recorded');
});

test('interrupts: pending and enabled is taken with the interrupt bit and mepc = next pc', () => {
  const r = rig();
  stopHandler(r);
  r.load([A.nop(), A.nop(), A.nop()]);
  r.hart.mstatus = MSTATUS_MIE;
  r.hart.mie = Mip.MTIP;
  r.run(2);
  r.hart.setPending(Mip.MTIP, true);
  r.run(10);
  assert.equal(r.hart.mcause, 0x80000007);
  assert.equal(r.hart.mepc, RAM + 8);
  assert.equal(r.hart.mtval, 0);
  assert.equal(r.hart.mstatus, MSTATUS_MPIE | MPP_M);
});

test('interrupts: masked by mie or mstatus.MIE in M-mode are not taken; U-mode ignores MIE', () => {
  const r = rig();
  stopHandler(r);
  r.load([A.nop(), A.nop(), A.nop()]);
  r.hart.mie = Mip.MTIP;
  r.hart.setPending(Mip.MTIP | Mip.MSIP, true); // MIE off
  r.run(1);
  assert.equal(r.hart.getPc(), RAM + 4);
  r.hart.mstatus = MSTATUS_MIE;
  r.hart.mie = Mip.MEIP; // neither pending one enabled
  r.run(1);
  assert.equal(r.hart.getPc(), RAM + 8);
  assert.equal(r.hart.mcause, 0);
  const u = rig();
  stopHandler(u);
  u.load([A.nop()]);
  u.hart.priv = 0;
  u.hart.mie = Mip.MSIP;
  u.hart.setPending(Mip.MSIP, true);
  u.run(1);
  assert.equal(u.hart.mcause, 0x80000003);
  assert.equal(u.hart.mepc, RAM);
  assert.equal(u.hart.mstatus, 0, 'MPP = U, MPIE = 0');
});

test('interrupt priority is MEI > MSI > MTI', () => {
  const take = (pending: number) => {
    const r = rig();
    stopHandler(r);
    r.load([A.nop()]);
    r.hart.mstatus = MSTATUS_MIE;
    r.hart.mie = Mip.ALL;
    r.hart.setPending(pending, true);
    r.run(1);
    return r.hart.mcause & 0xff;
  };
  assert.equal(take(Mip.ALL), 11);
  assert.equal(take(Mip.MSIP | Mip.MTIP), 3);
  assert.equal(take(Mip.MTIP), 7);
  assert.equal(take(Mip.MEIP | Mip.MTIP), 11);
});

test('vectored mtvec: interrupts go to base + 4*cause, exceptions to base', () => {
  const r = rig();
  r.hart.mtvec = HANDLER | 1;
  r.load([A.jal(0, 0)], HANDLER);
  r.load([A.jal(0, 0)], HANDLER + 4 * 7);
  r.load([A.nop(), A.ecall()]);
  r.hart.mstatus = MSTATUS_MIE;
  r.hart.mie = Mip.MTIP;
  r.hart.setPending(Mip.MTIP, true);
  r.run(10);
  assert.equal(r.hart.getPc(), HANDLER + 4 * 7);
  assert.equal(r.hart.mcause, 0x80000007);
  assert.equal(r.hart.mepc, RAM);
  const e = rig();
  e.hart.mtvec = HANDLER | 1;
  e.load([A.wfi()], HANDLER);
  e.load([A.ecall()]);
  e.run(10);
  assert.equal(e.hart.getPc(), HANDLER + 4);
});

test('enabling interrupts with a csr write takes a pending one right after that instruction', () => {
  const r = rig();
  stopHandler(r);
  r.load([A.csrrsi(0, Csr.Mstatus, 8), A.nop()]);
  r.hart.mie = Mip.MSIP;
  r.hart.setPending(Mip.MSIP, true);
  r.run(10);
  assert.equal(r.hart.mcause, 0x80000003);
  assert.equal(r.hart.mepc, RAM + 4);
  // ... and after mret re-enables them
  const m = rig();
  stopHandler(m);
  m.load([A.mret()]);
  m.hart.mepc = RAM + 0x40;
  m.hart.mstatus = MSTATUS_MPIE | MPP_M;
  m.hart.mie = Mip.MEIP;
  m.hart.setPending(Mip.MEIP, true);
  m.run(10);
  assert.equal(m.hart.mcause, 0x8000000b);
  assert.equal(m.hart.mepc, RAM + 0x40);
});

test('an MMIO access that raises an interrupt line is followed by the interrupt', () => {
  const r = rig();
  stopHandler(r);
  r.bus.map(0x1000_0000, 0x100, new RecordingDevice(0, () => r.hart.setPending(Mip.MEIP, true)));
  r.load([A.sw(0, 1, 0), A.nop()]);
  r.hart.x[1] = 0x1000_0000;
  r.hart.mstatus = MSTATUS_MIE;
  r.hart.mie = Mip.MEIP;
  r.run(10);
  assert.equal(r.hart.mcause, 0x8000000b);
  assert.equal(r.hart.mepc, RAM + 4);
});

test('wfi returns Wfi with pc past it; with an interrupt pending in mie it is a nop', () => {
  const r = rig();
  r.load([A.nop(), A.wfi(), A.addi(1, 0, 1)]);
  assert.equal(r.run(100), StopReason.Wfi);
  assert.equal(r.hart.getPc(), RAM + 8);
  assert.equal(r.hart.instret, 2);
  const n = rig();
  n.load([A.wfi(), A.addi(1, 0, 1)]);
  n.hart.mie = Mip.MTIP;
  n.hart.setPending(Mip.MTIP, true); // pending and enabled, but MIE = 0: wfi falls through
  assert.equal(n.run(2), StopReason.Budget);
  assert.equal(n.hart.x[1], 1);
  assert.equal(n.hart.mcause, 0);
  assert.equal(n.hart.wakeable(), true);
});

test('setPending only drives MSIP/MTIP/MEIP and run() takes interrupts at entry', () => {
  const r = rig();
  r.hart.setPending(0xffffffff, true);
  assert.equal(r.hart.mip, 0x888);
  r.hart.setPending(Mip.MTIP, false);
  assert.equal(r.hart.mip, 0x808);
  stopHandler(r);
  r.load([A.nop()]);
  r.hart.mstatus = MSTATUS_MIE;
  r.hart.mie = Mip.MSIP;
  assert.equal(r.run(1), StopReason.Budget); // interrupt taken at entry, then 1 instruction (the handler's wfi? no: budget 1)
  assert.equal(r.hart.mcause, 0x80000003);
  assert.equal(r.hart.mepc, RAM);
});
