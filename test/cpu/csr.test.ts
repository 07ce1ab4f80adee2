import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as A from '../helpers/rv32asm.js';
import { Csr } from '../../src/machine/cpu/csr.js';
import { Cause } from '../../src/machine/cpu/trap.js';
import { StopReason } from '../../src/machine/cpu/hart.js';
import { RAM, rig, stopHandler, type Rig } from './harness.js';

/** Runs `prog` in M-mode with a stopping trap handler. */
function m(prog: number[], setup?: (r: Rig) => void): Rig {
  const r = rig();
  stopHandler(r);
  setup?.(r);
  r.load(prog);
  r.run(prog.length);
  return r;
}

function illegalAt(r: Rig, pc: number, inst: number): void {
  assert.equal(r.hart.mcause, Cause.IllegalInst);
  assert.equal(r.hart.mepc, pc >>> 0);
  assert.equal(r.hart.mtval, inst >>> 0, 'mtval holds the instruction bits (QEMU)');
}

test('csrrw/csrrs/csrrc and immediate forms read the old value and update', () => {
  const r = m(
    [
      A.csrrw(3, Csr.Mscratch, 1), // old 0, now 0xf0f0
      A.csrrs(4, Csr.Mscratch, 2), // old 0xf0f0, now 0xf0ff
      A.csrrc(5, Csr.Mscratch, 6), // old 0xf0ff, clears 0x00f0 -> 0xf00f
      A.csrrwi(7, Csr.Mscratch, 0x15),
      A.csrrsi(8, Csr.Mscratch, 0x0a), // -> 0x1f
      A.csrrci(9, Csr.Mscratch, 0x03), // -> 0x1c
      A.csrr(10, Csr.Mscratch),
      A.csrrw(1, Csr.Mscratch, 1), // rd == rs1: writes old rs1, gets old csr
    ],
    (r) => {
      r.hart.x[1] = 0xf0f0;
      r.hart.x[2] = 0x000f;
      r.hart.x[6] = 0x00f0;
    },
  );
  const x = r.hart.x;
  assert.deepEqual([x[3], x[4], x[5], x[7], x[8], x[9], x[10]], [0, 0xf0f0, 0xf0ff, 0xf00f, 0x15, 0x1f, 0x1c]);
  assert.equal(x[1], 0x1c);
  assert.equal(r.hart.mscratch, 0xf0f0);
});

test('machine information registers', () => {
  const r = m([A.csrr(1, Csr.Misa), A.csrr(2, Csr.Mvendorid), A.csrr(3, Csr.Marchid), A.csrr(4, Csr.Mimpid), A.csrr(5, Csr.Mhartid), A.csrr(6, Csr.Mstatush)]);
  assert.equal(r.hart.x[1]! >>> 0, 0x40101101); // RV32 A I M U
  assert.deepEqual(Array.from(r.hart.x.subarray(2, 7)), [0, 0, 0, 0, 0]);
});

test('WARL legalisation of mstatus, mie, mip, mepc, mtvec, mcountinhibit', () => {
  const r = m(
    [
      A.csrw(Csr.Mstatus, 1), A.csrr(10, Csr.Mstatus),
      A.csrw(Csr.Mstatus, 2), A.csrr(11, Csr.Mstatus),
      A.csrw(Csr.Mie, 1), A.csrr(12, Csr.Mie),
      A.csrw(Csr.Mip, 1), A.csrr(13, Csr.Mip),
      A.csrw(Csr.Mepc, 1), A.csrr(14, Csr.Mepc),
      A.csrw(Csr.Mtvec, 3), A.csrr(15, Csr.Mtvec),
      A.csrw(Csr.Mcountinhibit, 1), A.csrr(16, Csr.Mcountinhibit),
      A.csrw(Csr.Mcause, 1), A.csrr(17, Csr.Mcause),
    ],
    (r) => {
      r.hart.x[1] = -1 & ~8; // everything but MIE, so no interrupt can fire
      r.hart.x[2] = 0x1000; // MPP = 2 (reserved)
      r.hart.x[3] = 0x8000000b | 0; // mode 3
      r.hart.mtvec = 0x80000101;
    },
  );
  const x = r.hart.x;
  assert.equal(x[10]! >>> 0, 0x00221880, 'mstatus: MPIE, MPP, MPRV, TW only (no S, no FS)');
  assert.equal(x[11], 0, 'MPP=2 becomes U');
  assert.equal(x[12], 0x880, 'only MSIE/MTIE/MEIE exist (MSIE was not in the value)');
  assert.equal(x[13], 0, 'mip bits are driven by devices only');
  assert.equal(x[14]! >>> 0, 0xfffffff4, 'mepc low bits are zero (IALIGN=32)');
  assert.equal(x[15]! >>> 0, 0x80000101, 'reserved mtvec modes are ignored');
  assert.equal(x[16]! >>> 0, 0xfffffff5 >>> 0, 'TM bit is read-only zero');
  assert.equal(x[17]! >>> 0, 0xfffffff7 >>> 0);
});

test('mtvec direct and vectored modes are stored as written', () => {
  const r = m([A.csrw(Csr.Mtvec, 1), A.csrr(2, Csr.Mtvec)], (r) => (r.hart.x[1] = (RAM + 0x401) | 0));
  assert.equal(r.hart.x[2]! >>> 0, RAM + 0x401);
});

test('unknown CSRs, writes to read-only CSRs and U-mode access to M CSRs are illegal', () => {
  for (const inst of [A.csrr(1, 0x7c0), A.csrr(1, 0x105), A.csrr(1, 0x180), A.csrr(1, 0xc03), A.csrw(Csr.Cycle, 0), A.csrrwi(0, Csr.Mhartid, 0), A.csrrsi(0, Csr.Mvendorid, 1), A.csrrs(0, Csr.Time, 1)]) {
    const r = m([A.addi(0, 0, 0), inst], (r) => (r.hart.x[1] = 5));
    illegalAt(r, RAM + 4, inst);
    assert.equal(r.hart.x[1], 5);
  }
  // reading a read-only CSR with a set/clear of x0 or uimm 0 is fine
  const ok = m([A.csrrs(1, Csr.Mhartid, 0), A.csrrci(2, Csr.Cycle, 0), A.addi(3, 0, 1)]);
  assert.equal(ok.hart.x[3], 1);
  assert.equal(ok.hart.mcause, 0);
});

test('counters: mcycle/minstret count retired instructions, are writable, and cycle/instret mirror them', () => {
  const r = m([A.nop(), A.nop(), A.csrr(1, Csr.Minstret), A.csrr(2, Csr.Mcycle), A.csrr(3, Csr.Instret), A.csrr(4, Csr.Cycle), A.csrr(5, Csr.MinstretH)]);
  assert.deepEqual(Array.from(r.hart.x.subarray(1, 6)), [2, 3, 4, 5, 0]);
  // A write replaces the writing instruction's increment.
  // values after each instruction: (0, fffffffe) (0, ffffffff) (7, ffffffff) (8, 0) (8, 1)
  const w = m([A.csrw(Csr.Minstret, 1), A.csrr(2, Csr.Minstret), A.csrw(Csr.MinstretH, 3), A.csrr(4, Csr.MinstretH), A.csrr(5, Csr.Minstret), A.csrr(6, Csr.MinstretH)], (r) => {
    r.hart.x[1] = -2;
    r.hart.x[3] = 7;
  });
  assert.equal(w.hart.x[2]! >>> 0, 0xfffffffe);
  assert.equal(w.hart.x[4], 7);
  assert.equal(w.hart.x[5], 0, 'low half wrapped...');
  assert.equal(w.hart.x[6], 8, '...into the high half');
  // Carry from low to high half
  const c = m([A.csrw(Csr.Mcycle, 1), A.nop(), A.nop(), A.csrr(2, Csr.McycleH), A.csrr(3, Csr.Mcycle)], (r) => (r.hart.x[1] = -1));
  assert.equal(c.hart.x[2], 1);
  assert.equal(c.hart.x[3], 2);
});

test('mcountinhibit freezes the counters', () => {
  const r = m([A.csrwi(Csr.Mcountinhibit, 5), A.nop(), A.nop(), A.csrr(1, Csr.Minstret), A.csrr(2, Csr.Mcycle), A.csrwi(Csr.Mcountinhibit, 0), A.nop(), A.csrr(3, Csr.Minstret)]);
  assert.equal(r.hart.x[1], 0);
  assert.equal(r.hart.x[2], 0);
  assert.equal(r.hart.x[3], 1);
});

test('time and timeh read the virtual clock, split into halves', () => {
  const r = m([A.csrr(1, Csr.Time), A.csrr(2, Csr.TimeH)], (r) => (r.ticks = 0x1_2345_6789_abc));
  assert.equal(r.hart.x[1]! >>> 0, 0x56789abc);
  assert.equal(r.hart.x[2]! >>> 0, 0x1234);
});

test('PMP registers are stored and read back; locked entries ignore writes', () => {
  const r = m(
    [
      A.csrw(Csr.Pmpcfg0 + 2, 1), A.csrr(10, Csr.Pmpcfg0 + 2),
      A.csrw(Csr.Pmpaddr0 + 7, 2), A.csrr(11, Csr.Pmpaddr0 + 7),
      A.csrw(Csr.Pmpcfg0 + 1, 3), // entry 4 locked, entry 5 locked TOR
      A.csrw(Csr.Pmpaddr0 + 4, 2), A.csrr(12, Csr.Pmpaddr0 + 4),
      A.csrw(Csr.Pmpaddr0 + 3, 2), A.csrr(13, Csr.Pmpaddr0 + 3),
      A.csrw(Csr.Pmpaddr0 + 6, 2), A.csrr(14, Csr.Pmpaddr0 + 6),
      A.csrw(Csr.Pmpcfg0 + 1, 0), A.csrr(15, Csr.Pmpcfg0 + 1),
    ],
    (r) => {
      r.hart.x[1] = 0x0f0e0d0c;
      r.hart.x[2] = -1;
      r.hart.x[3] = 0x00008880; // cfg4 = L, cfg5 = L|TOR
    },
  );
  assert.equal(r.hart.x[10], 0x0f0e0d0c);
  assert.equal(r.hart.x[11], -1);
  assert.equal(r.hart.x[12], 0, 'pmpaddr4 locked by cfg4.L');
  assert.equal(r.hart.x[13], -1, 'pmpaddr3 is not locked (entry 4 is not TOR)');
  assert.equal(r.hart.x[14], -1);
  assert.equal(r.hart.x[15], 0x8880, 'locked cfg bytes keep their value');
  // pmpaddr4 is also the TOR base of the locked entry 5
  const t = m([A.csrw(Csr.Pmpcfg0 + 1, 3), A.csrw(Csr.Pmpaddr0 + 4, 2), A.csrr(4, Csr.Pmpaddr0 + 4)], (r) => {
    r.hart.x[2] = 0x1234;
    r.hart.x[3] = 0x8800;
  });
  assert.equal(t.hart.x[4], 0);
});

test('in U-mode: M CSRs are illegal, counters need mcounteren', () => {
  const cases: Array<[number, number, boolean]> = [
    [A.csrr(1, Csr.Mstatus), 0xffffffff, false],
    [A.csrr(1, Csr.Mscratch), 0xffffffff, false],
    [A.csrr(1, Csr.Cycle), 0, false],
    [A.csrr(1, Csr.Cycle), 1, true],
    [A.csrr(1, Csr.TimeH), 1, false],
    [A.csrr(1, Csr.TimeH), 2, true],
    [A.csrr(1, Csr.Instret), 4, true],
    [A.csrr(1, Csr.InstretH), 3, false],
  ];
  for (const [inst, en, ok] of cases) {
    const r = rig();
    stopHandler(r);
    r.hart.mcounteren = en;
    r.hart.priv = 0;
    r.hart.x[1] = 0x55;
    r.load([inst]);
    r.run(1);
    assert.equal(r.hart.priv, ok ? 0 : 3, `0x${(inst >>> 20).toString(16)} with mcounteren ${en}`);
    if (!ok) illegalAt(r, RAM, inst);
    else assert.notEqual(r.hart.x[1], 0x55);
  }
});
