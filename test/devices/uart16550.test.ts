import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MIP_MEIP, Plic } from '../../src/machine/devices/plic.js';
import { Uart16550, UART_INPUT_QUEUE_BYTES } from '../../src/machine/devices/uart16550.js';
import { StateFormatError } from '../../src/machine/state/codec.js';
import { FakeHart, FakeIrq, restore, save } from './helpers.js';

const RBR = 0,
  THR = 0,
  DLL = 0,
  IER = 1,
  DLM = 1,
  IIR = 2,
  FCR = 2,
  LCR = 3,
  MCR = 4,
  LSR = 5,
  MSR = 6,
  SCR = 7;
const IRQ = 10;

function setup(): { uart: Uart16550; irq: FakeIrq; out: number[] } {
  const irq = new FakeIrq();
  const out: number[] = [];
  const uart = new Uart16550((b) => out.push(b), irq, IRQ);
  return { uart, irq, out };
}

const rd = (u: Uart16550, reg: number): number => u.read(reg, 1);
const wr = (u: Uart16550, reg: number, v: number): void => u.write(reg, 1, v);

test('reset values match QEMU serial_reset', () => {
  const { uart } = setup();
  assert.equal(rd(uart, IER), 0);
  assert.equal(rd(uart, IIR), 0x01);
  assert.equal(rd(uart, LCR), 0);
  assert.equal(rd(uart, MCR), 0x08);
  assert.equal(rd(uart, LSR), 0x60);
  assert.equal(rd(uart, MSR), 0xb0);
  assert.equal(rd(uart, SCR), 0);
  wr(uart, LCR, 0x80);
  assert.equal(rd(uart, DLL), 0x0c, 'divider resets to 12 (9600 baud)');
  assert.equal(rd(uart, DLM), 0);
});

test('DLAB switches offsets 0 and 1 to the divisor latch', () => {
  const { uart, out } = setup();
  wr(uart, IER, 0x05);
  wr(uart, LCR, 0x83);
  wr(uart, DLL, 0x01);
  wr(uart, DLM, 0x02);
  assert.equal(rd(uart, DLL), 0x01);
  assert.equal(rd(uart, DLM), 0x02);
  assert.deepEqual(out, [], 'a DLL write is not output');
  wr(uart, LCR, 0x03);
  assert.equal(rd(uart, LCR), 0x03);
  assert.equal(rd(uart, IER), 0x05, 'IER kept its value under the latch');
  wr(uart, LCR, 0x80);
  assert.equal(rd(uart, DLL) | (rd(uart, DLM) << 8), 0x0201);
});

test('THR writes go out at once and LSR keeps THRE and TEMT set', () => {
  const { uart, out } = setup();
  for (const b of [0x68, 0x69, 0x0a]) {
    wr(uart, THR, b);
    assert.equal(rd(uart, LSR) & 0x60, 0x60);
  }
  assert.deepEqual(out, [0x68, 0x69, 0x0a]);
});

test('IER masks to 4 bits; SCR holds a byte', () => {
  const { uart } = setup();
  wr(uart, IER, 0xff);
  assert.equal(rd(uart, IER), 0x0f);
  wr(uart, SCR, 0xa5);
  assert.equal(rd(uart, SCR), 0xa5);
});

test('THR-empty interrupt: raised by IER.THRI, cleared by reading IIR, raised again by a THR write', () => {
  const { uart, irq } = setup();
  wr(uart, IER, 0x02);
  assert.equal(irq.level(IRQ), true);
  assert.equal(rd(uart, IIR), 0x02);
  assert.equal(irq.level(IRQ), false, 'reading IIR with THRI identified clears it');
  assert.equal(rd(uart, IIR), 0x01);
  wr(uart, THR, 0x41);
  assert.equal(irq.level(IRQ), true);
  assert.equal(rd(uart, IIR), 0x02);
  wr(uart, IER, 0x00);
  assert.equal(irq.level(IRQ), false);
  assert.equal(rd(uart, IIR), 0x01);
});

test('received bytes without FIFO: DR, RBR order, and the receive interrupt raised then cleared', () => {
  const { uart, irq } = setup();
  wr(uart, IER, 0x01);
  assert.equal(irq.level(IRQ), false);
  assert.equal(uart.pushInput(new Uint8Array([0x61, 0x62, 0x63])), 3);
  assert.equal(rd(uart, LSR) & 0x01, 1);
  assert.equal(irq.level(IRQ), true);
  assert.equal(rd(uart, IIR), 0x04);
  assert.equal(rd(uart, RBR), 0x61);
  assert.equal(irq.level(IRQ), true, 'the next byte is ready at once');
  assert.equal(rd(uart, RBR), 0x62);
  assert.equal(rd(uart, RBR), 0x63);
  assert.equal(rd(uart, LSR) & 0x01, 0);
  assert.equal(irq.level(IRQ), false);
  assert.equal(rd(uart, IIR), 0x01);
});

test('FIFO mode: IIR shows FIFO-enabled bits, bytes come out in order, 16 at a time from the host queue', () => {
  const { uart, irq } = setup();
  wr(uart, FCR, 0x07);
  assert.equal(rd(uart, IIR), 0xc1);
  wr(uart, IER, 0x01);
  const input = Uint8Array.from({ length: 40 }, (_, i) => 0x30 + i);
  assert.equal(uart.pushInput(input), 40);
  assert.equal(uart.fifoLength, 16);
  assert.equal(uart.queuedInput, 24);
  assert.equal(rd(uart, IIR), 0xc4);
  const got: number[] = [];
  while (rd(uart, LSR) & 0x01) got.push(rd(uart, RBR));
  assert.deepEqual(got, [...input]);
  assert.equal(irq.level(IRQ), false);
  assert.equal(rd(uart, IIR), 0xc1);
  assert.equal(rd(uart, RBR), 0, 'an empty FIFO reads 0');
});

test('FIFO trigger level: below it the character timeout (IIR 0xCC) stands in, at it RDI', () => {
  const { uart, irq } = setup();
  wr(uart, FCR, 0xc1); // trigger level 14
  wr(uart, IER, 0x01);
  uart.pushInput(new Uint8Array([1, 2, 3]));
  assert.equal(irq.level(IRQ), true);
  assert.equal(rd(uart, IIR), 0xcc);
  uart.pushInput(new Uint8Array(20));
  assert.equal(uart.fifoLength, 16);
  assert.equal(rd(uart, IIR), 0xc4);
});

test('FCR receive reset empties the FIFO and clears DR', () => {
  const { uart } = setup();
  wr(uart, FCR, 0x01);
  uart.pushInput(new Uint8Array([9, 8, 7]));
  assert.equal(uart.fifoLength, 3);
  wr(uart, FCR, 0x03);
  assert.equal(uart.fifoLength, 0);
  assert.equal(rd(uart, LSR) & 0x01, 0);
});

test('IIR priority: received data outranks THR empty', () => {
  const { uart } = setup();
  wr(uart, IER, 0x03);
  uart.pushInput(new Uint8Array([0x55]));
  assert.equal(rd(uart, IIR), 0x04);
  rd(uart, RBR);
  assert.equal(rd(uart, IIR), 0x02);
  assert.equal(rd(uart, IIR), 0x01);
});

test('loopback: THR feeds the receiver, nothing goes out, overrun sets OE and the line-status interrupt', () => {
  const { uart, out, irq } = setup();
  wr(uart, MCR, 0x10);
  wr(uart, THR, 0x11);
  assert.deepEqual(out, []);
  assert.equal(rd(uart, LSR), 0x61);
  wr(uart, THR, 0x22); // RBR still full: overrun
  assert.equal(rd(uart, LSR) & 0x02, 0x02, 'OE reported');
  assert.equal(rd(uart, LSR) & 0x02, 0, 'reading LSR clears OE');
  wr(uart, THR, 0x33);
  wr(uart, IER, 0x04);
  assert.equal(rd(uart, IIR), 0x06);
  assert.equal(irq.level(IRQ), true);
  rd(uart, LSR);
  assert.equal(rd(uart, IIR), 0x01);
  assert.equal(rd(uart, RBR), 0x33);
  wr(uart, MCR, 0x1f);
  assert.equal(rd(uart, MSR), 0xf0, 'modem outputs loop back to the status inputs');
});

test('host input is bounded at 64 KiB, comes out whole and in order', () => {
  const { uart } = setup();
  const big = Uint8Array.from({ length: UART_INPUT_QUEUE_BYTES + 1000 }, (_, i) => (i * 7) & 0xff);
  const accepted = uart.pushInput(big);
  assert.equal(accepted, UART_INPUT_QUEUE_BYTES);
  // One byte moved into RBR, so there is room for exactly one more.
  assert.equal(uart.pushInput(new Uint8Array([1, 2, 3])), 1);
  const got = new Uint8Array(UART_INPUT_QUEUE_BYTES + 1);
  let n = 0;
  while (rd(uart, LSR) & 0x01) got[n++] = rd(uart, RBR);
  assert.equal(n, UART_INPUT_QUEUE_BYTES + 1);
  assert.deepEqual(got.subarray(0, accepted), big.subarray(0, accepted));
  assert.equal(got[n - 1], 1);
});

test('wider accesses are split into byte register accesses, as QEMU does', () => {
  const { uart } = setup();
  wr(uart, IER, 0x02);
  wr(uart, LCR, 0x03);
  // RBR (empty: 0), IER, IIR (THRI pending), LCR.
  assert.equal(uart.read(0, 4), 0x03020200);
  assert.equal(rd(uart, IIR), 0x01, 'the IIR byte of the wide read cleared THRI');
  assert.equal(uart.read(0x10, 1), 0, 'beyond the 8 registers reads 0');
});

function registerDump(u: Uart16550): number[] {
  // Side-effect-free reads first, then the ones that consume.
  const lcr = rd(u, LCR);
  const vals = [rd(u, IER), lcr, rd(u, MCR), rd(u, SCR), rd(u, LSR), rd(u, MSR), rd(u, IIR)];
  wr(u, LCR, lcr | 0x80);
  vals.push(rd(u, DLL), rd(u, DLM));
  wr(u, LCR, lcr);
  vals.push(u.fifoLength, u.queuedInput, u.irqLevel ? 1 : 0);
  while (rd(u, LSR) & 0x01) vals.push(rd(u, RBR));
  return vals;
}

test('saveState -> restoreState into a fresh UART reproduces every register and queued byte', () => {
  const { uart } = setup();
  wr(uart, LCR, 0x80);
  wr(uart, DLL, 0x34);
  wr(uart, DLM, 0x12);
  wr(uart, LCR, 0x1b);
  wr(uart, FCR, 0x81);
  wr(uart, IER, 0x03);
  wr(uart, MCR, 0x0b);
  wr(uart, SCR, 0x77);
  uart.pushInput(Uint8Array.from({ length: 100 }, (_, i) => i));
  rd(uart, RBR);
  const state = save(uart);

  const irq2 = new FakeIrq();
  const copy = new Uart16550(() => {}, irq2, IRQ);
  restore(copy, state);
  assert.deepEqual(irq2.changes, [], 'restoring does not re-drive the line (the PLIC restores its own level)');
  assert.deepEqual(registerDump(copy), registerDump(uart));
});

test('a truncated or invalid UART state throws StateFormatError', () => {
  const { uart } = setup();
  uart.pushInput(new Uint8Array([1, 2, 3]));
  const state = save(uart);
  for (let cut = 0; cut < state.length; cut += 3) {
    assert.throws(() => restore(new Uart16550(() => {}), state.subarray(0, cut)), StateFormatError);
  }
  const bad = state.slice();
  bad[2 + 9] = 0xff; // FCR (after the u16 divider and 9 byte registers) with non-sticky bits
  assert.throws(() => restore(new Uart16550(() => {}), bad), StateFormatError);
  assert.throws(() => restore(new Uart16550(() => {}), state, 2), StateFormatError);
});

test('wired to the PLIC: a receive interrupt is claimed as source 10 and stays pending until the FIFO drains', () => {
  const hart = new FakeHart();
  const plic = new Plic(hart.setMip);
  const uart = new Uart16550(() => {}, plic, IRQ);
  plic.write(4 * IRQ, 4, 1);
  plic.write(0x2000, 4, 1 << IRQ);
  wr(uart, FCR, 0x01);
  wr(uart, IER, 0x01);
  uart.pushInput(new Uint8Array([0x31, 0x32]));
  assert.equal(hart.mip & MIP_MEIP, MIP_MEIP);
  assert.equal(plic.read(0x20_0004, 4), IRQ);
  assert.equal(hart.mip & MIP_MEIP, 0, 'claimed');
  assert.equal(rd(uart, RBR), 0x31);
  plic.write(0x20_0004, 4, IRQ);
  assert.equal(hart.mip & MIP_MEIP, MIP_MEIP, 'one byte left: the line is still high, so completion re-pends');
  assert.equal(plic.read(0x20_0004, 4), IRQ);
  assert.equal(rd(uart, RBR), 0x32);
  plic.write(0x20_0004, 4, IRQ);
  assert.equal(hart.mip & MIP_MEIP, 0);
  assert.equal(plic.read(0x20_0004, 4), 0);
});
