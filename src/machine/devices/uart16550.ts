import type { AccessSize, IrqSink, MmioDevice } from '../bus.js';
import { UART0_IRQ } from '../memory/layout.js';
import type { StateReader, StateWriter, Stateful } from '../state/codec.js';

/**
 * The ns16550a UART as QEMU emulates it (hw/char/serial.c, reg-shift 0). Output is instant, so
 * THRE/TEMT read as set; input waits in a bounded host-side queue and moves into the 16-byte
 * receive FIFO as the guest drains it. The FIFO character timeout fires at once when no more
 * input is queued (there is no serial line timing to wait for).
 */

const LCR_DLAB = 0x80;

const IER_RDI = 0x01; // received data available
const IER_THRI = 0x02; // transmitter holding register empty
const IER_RLSI = 0x04; // receiver line status
const IER_MSI = 0x08; // modem status

const IIR_NO_INT = 0x01;
const IIR_ID = 0x06;
const IIR_MSI = 0x00;
const IIR_THRI = 0x02;
const IIR_RDI = 0x04;
const IIR_RLSI = 0x06;
const IIR_CTI = 0x0c;
const IIR_FE = 0xc0;

const FCR_FE = 0x01;
const FCR_RFR = 0x02;
const FCR_XFR = 0x04;

const MCR_OUT2 = 0x08;
const MCR_LOOP = 0x10;

const MSR_DCD = 0x80;
const MSR_DSR = 0x20;
const MSR_CTS = 0x10;
const MSR_ANY_DELTA = 0x0f;

const LSR_DR = 0x01;
const LSR_OE = 0x02;
const LSR_BI = 0x10;
const LSR_THRE = 0x20;
const LSR_TEMT = 0x40;
const LSR_INT_ANY = 0x1e;

export const UART_FIFO_BYTES = 16;
/** Host input waiting for the guest; pushInput refuses what does not fit. */
export const UART_INPUT_QUEUE_BYTES = 64 * 1024;

export class Uart16550 implements MmioDevice, Stateful {
  readonly name = 'uart0';
  readonly stateId = 'uart0';
  readonly stateVersion = 1;

  // Registers (QEMU SerialState names).
  divider = 0x0c;
  rbr = 0;
  thr = 0;
  ier = 0;
  iir = IIR_NO_INT;
  lcr = 0;
  mcr = MCR_OUT2;
  lsr = LSR_TEMT | LSR_THRE;
  msr = MSR_DCD | MSR_DSR | MSR_CTS;
  scr = 0;
  fcr = 0;
  fifoTriggerLevel = 1;
  thrIpending = 0;
  timeoutIpending = 0;

  /** Receive FIFO: a ring of 16. */
  private readonly rxFifo = new Uint8Array(UART_FIFO_BYTES);
  private rxHead = 0;
  private rxCount = 0;

  /** Host input not yet in the FIFO: a ring of UART_INPUT_QUEUE_BYTES. */
  private readonly inQueue = new Uint8Array(UART_INPUT_QUEUE_BYTES);
  private inHead = 0;
  private inCount = 0;

  private readonly onOutput: (byte: number) => void;
  private readonly irq: IrqSink | undefined;
  private readonly irqLine: number;

  constructor(onOutput: (byte: number) => void, irq?: IrqSink, irqLine: number = UART0_IRQ) {
    this.onOutput = onOutput;
    this.irq = irq;
    this.irqLine = irqLine;
  }

  /** Whether the interrupt line is asserted (derived from IIR, as QEMU's serial_update_irq). */
  get irqLevel(): boolean {
    return (this.iir & IIR_NO_INT) === 0;
  }

  /** Bytes in the receive FIFO. */
  get fifoLength(): number {
    return this.rxCount;
  }

  /** Host bytes queued behind the FIFO. */
  get queuedInput(): number {
    return this.inCount;
  }

  /** Queues host input (keyboard, pipe); returns how many bytes were accepted. */
  pushInput(bytes: Uint8Array): number {
    const n = Math.min(bytes.length, UART_INPUT_QUEUE_BYTES - this.inCount);
    const q = this.inQueue;
    let tail = (this.inHead + this.inCount) % UART_INPUT_QUEUE_BYTES;
    for (let i = 0; i < n; i++) {
      q[tail] = bytes[i]!;
      tail = tail + 1 === UART_INPUT_QUEUE_BYTES ? 0 : tail + 1;
    }
    this.inCount += n;
    if (n > 0 && (this.mcr & MCR_LOOP) === 0) {
      this.pumpInput();
      this.updateIrq();
    }
    return n;
  }

  // ---- MMIO ----

  read(offset: number, size: AccessSize): number {
    // QEMU implements only byte access; wider ones are split into consecutive register reads.
    if (size === 1) return this.readReg(offset);
    let v = 0;
    for (let i = 0; i < size; i++) v |= this.readReg(offset + i) << (8 * i);
    return v >>> 0;
  }

  write(offset: number, size: AccessSize, value: number): void {
    if (size === 1) {
      this.writeReg(offset, value & 0xff);
      return;
    }
    for (let i = 0; i < size; i++) this.writeReg(offset + i, (value >>> (8 * i)) & 0xff);
  }

  private readReg(offset: number): number {
    if (offset >= 8) return 0; // the registers span 8 bytes of the 0x100 window
    switch (offset) {
      case 0: {
        if (this.lcr & LCR_DLAB) return this.divider & 0xff;
        let ret: number;
        if (this.fcr & FCR_FE) {
          ret = this.rxCount === 0 ? 0 : this.rxPop();
          if ((this.mcr & MCR_LOOP) === 0) this.pumpInput();
          if (this.rxCount === 0) this.lsr &= ~(LSR_DR | LSR_BI);
          this.checkRxTimeout();
        } else {
          ret = this.rbr;
          this.lsr &= ~(LSR_DR | LSR_BI);
          if ((this.mcr & MCR_LOOP) === 0) this.pumpInput();
        }
        this.updateIrq();
        return ret;
      }
      case 1:
        return this.lcr & LCR_DLAB ? (this.divider >>> 8) & 0xff : this.ier;
      case 2: {
        const ret = this.iir;
        if ((ret & IIR_ID) === IIR_THRI && (ret & IIR_NO_INT) === 0) {
          this.thrIpending = 0;
          this.updateIrq();
        }
        return ret;
      }
      case 3:
        return this.lcr;
      case 4:
        return this.mcr;
      case 5: {
        const ret = this.lsr;
        if (this.lsr & (LSR_BI | LSR_OE)) {
          this.lsr &= ~(LSR_BI | LSR_OE);
          this.updateIrq();
        }
        return ret;
      }
      case 6: {
        if (this.mcr & MCR_LOOP) {
          // Loopback: the modem control outputs feed the status inputs.
          return ((this.mcr & 0x0c) << 4) | ((this.mcr & 0x02) << 3) | ((this.mcr & 0x01) << 5);
        }
        const ret = this.msr;
        if (this.msr & MSR_ANY_DELTA) {
          this.msr &= 0xf0;
          this.updateIrq();
        }
        return ret;
      }
      default:
        return this.scr;
    }
  }

  private writeReg(offset: number, val: number): void {
    if (offset >= 8) return;
    switch (offset) {
      case 0:
        if (this.lcr & LCR_DLAB) {
          this.divider = (this.divider & 0xff00) | val;
          return;
        }
        this.thr = val;
        this.thrIpending = 0;
        this.lsr &= ~(LSR_THRE | LSR_TEMT);
        this.updateIrq();
        this.transmit(val);
        return;
      case 1:
        if (this.lcr & LCR_DLAB) {
          this.divider = (this.divider & 0x00ff) | (val << 8);
          return;
        } else {
          const changed = (this.ier ^ val) & 0x0f;
          this.ier = val & 0x0f;
          // Enabling THRI with THR empty raises the interrupt even if an IIR read had cleared it.
          if (changed & IER_THRI) this.thrIpending = this.ier & IER_THRI && this.lsr & LSR_THRE ? 1 : 0;
          if (changed) this.updateIrq();
        }
        return;
      case 2: {
        if ((val ^ this.fcr) & FCR_FE) val |= FCR_XFR | FCR_RFR; // FIFO mode change flushes both FIFOs
        if (val & FCR_RFR) {
          this.lsr &= ~(LSR_DR | LSR_BI);
          this.timeoutIpending = 0;
          this.rxHead = 0;
          this.rxCount = 0;
        }
        if (val & FCR_XFR) {
          this.lsr |= LSR_THRE;
          this.thrIpending = 1;
        }
        this.writeFcr(val & 0xc9);
        if ((this.mcr & MCR_LOOP) === 0) this.pumpInput();
        this.updateIrq();
        return;
      }
      case 3:
        this.lcr = val;
        return;
      case 4: {
        const wasLoop = this.mcr & MCR_LOOP;
        this.mcr = val & 0x1f;
        if (wasLoop && (this.mcr & MCR_LOOP) === 0) {
          this.pumpInput();
          this.updateIrq();
        }
        return;
      }
      case 5:
      case 6:
        return; // LSR and MSR are read-only
      default:
        this.scr = val;
    }
  }

  private writeFcr(val: number): void {
    this.fcr = val;
    if (val & FCR_FE) {
      this.iir |= IIR_FE;
      const itl = val & 0xc0;
      this.fifoTriggerLevel = itl === 0x00 ? 1 : itl === 0x40 ? 4 : itl === 0x80 ? 8 : 14;
    } else {
      this.iir &= ~IIR_FE;
    }
  }

  /** Sends one byte: to the host, or back into the receiver in loopback mode. THR empties at once. */
  private transmit(byte: number): void {
    this.lsr |= LSR_THRE;
    if (!this.thrIpending) {
      this.thrIpending = 1;
      this.updateIrq();
    }
    if (this.mcr & MCR_LOOP) this.receive(byte);
    else this.onOutput(byte);
    this.lsr |= LSR_TEMT;
  }

  /** A byte arriving on the line (serial_receive1). */
  private receive(byte: number): void {
    if (this.fcr & FCR_FE) {
      if (this.rxCount < UART_FIFO_BYTES) this.rxPush(byte);
      else this.lsr |= LSR_OE; // overruns do not overwrite the FIFO
      this.lsr |= LSR_DR;
      this.checkRxTimeout();
    } else {
      if (this.lsr & LSR_DR) this.lsr |= LSR_OE;
      this.rbr = byte;
      this.lsr |= LSR_DR;
    }
    this.updateIrq();
  }

  /** Moves host input into the receiver while it has room (never overruns). */
  private pumpInput(): void {
    if (this.inCount === 0) return;
    if (this.fcr & FCR_FE) {
      while (this.inCount > 0 && this.rxCount < UART_FIFO_BYTES) this.rxPush(this.inShift());
      this.lsr |= LSR_DR;
      this.checkRxTimeout();
    } else if ((this.lsr & LSR_DR) === 0) {
      this.rbr = this.inShift();
      this.lsr |= LSR_DR;
    }
  }

  /**
   * FIFO mode: bytes below the trigger level with no more input coming raise the character
   * timeout. QEMU raises it 4 character times later; tern has no line timing, so at once.
   */
  private checkRxTimeout(): void {
    const moreComing = this.inCount > 0 && (this.mcr & MCR_LOOP) === 0;
    this.timeoutIpending = this.rxCount > 0 && this.rxCount < this.fifoTriggerLevel && !moreComing ? 1 : 0;
  }

  private inShift(): number {
    const b = this.inQueue[this.inHead]!;
    this.inHead = this.inHead + 1 === UART_INPUT_QUEUE_BYTES ? 0 : this.inHead + 1;
    this.inCount--;
    return b;
  }

  private rxPush(b: number): void {
    this.rxFifo[(this.rxHead + this.rxCount) & (UART_FIFO_BYTES - 1)] = b;
    this.rxCount++;
  }

  private rxPop(): number {
    const b = this.rxFifo[this.rxHead]!;
    this.rxHead = (this.rxHead + 1) & (UART_FIFO_BYTES - 1);
    this.rxCount--;
    return b;
  }

  /** IIR from the highest-priority pending cause, and the interrupt line to match (serial_update_irq). */
  private updateIrq(): void {
    let id = IIR_NO_INT;
    const ier = this.ier;
    if (ier & IER_RLSI && this.lsr & LSR_INT_ANY) id = IIR_RLSI;
    else if (ier & IER_RDI && this.timeoutIpending) id = IIR_CTI;
    else if (ier & IER_RDI && this.lsr & LSR_DR && (!(this.fcr & FCR_FE) || this.rxCount >= this.fifoTriggerLevel)) id = IIR_RDI;
    else if (ier & IER_THRI && this.thrIpending) id = IIR_THRI;
    else if (ier & IER_MSI && this.msr & MSR_ANY_DELTA) id = IIR_MSI;
    const was = this.irqLevel;
    this.iir = id | (this.iir & 0xf0);
    const now = id !== IIR_NO_INT;
    if (now !== was && this.irq !== undefined) this.irq.setIrq(this.irqLine, now);
  }

  // ---- state ----

  saveState(w: StateWriter): void {
    w.u16(this.divider);
    w.u8(this.rbr);
    w.u8(this.thr);
    w.u8(this.ier);
    w.u8(this.iir);
    w.u8(this.lcr);
    w.u8(this.mcr);
    w.u8(this.lsr);
    w.u8(this.msr);
    w.u8(this.scr);
    w.u8(this.fcr);
    w.u8(this.fifoTriggerLevel);
    w.u8(this.thrIpending);
    w.u8(this.timeoutIpending);
    const fifo = new Uint8Array(this.rxCount);
    for (let i = 0; i < this.rxCount; i++) fifo[i] = this.rxFifo[(this.rxHead + i) & (UART_FIFO_BYTES - 1)]!;
    w.bytes(fifo);
    const queued = new Uint8Array(this.inCount);
    for (let i = 0; i < this.inCount; i++) queued[i] = this.inQueue[(this.inHead + i) % UART_INPUT_QUEUE_BYTES]!;
    w.bytes(queued);
  }

  restoreState(r: StateReader, version: number): void {
    if (version !== 1) r.fail(`unsupported uart0 state version ${version}`);
    const divider = r.u16();
    const regs = r.raw(13).slice();
    const fifo = r.bytes(UART_FIFO_BYTES);
    const queued = r.bytes(UART_INPUT_QUEUE_BYTES);
    const [rbr, thr, ier, iir, lcr, mcr, lsr, msr, scr, fcr, itl, thrIp, toIp] = regs;
    if (ier! > 0x0f) r.fail(`IER 0x${ier!.toString(16)} has reserved bits set`);
    if (mcr! > 0x1f) r.fail(`MCR 0x${mcr!.toString(16)} has reserved bits set`);
    if ((fcr! & ~0xc9) !== 0) r.fail(`FCR 0x${fcr!.toString(16)} has non-sticky bits set`);
    if (itl !== 1 && itl !== 4 && itl !== 8 && itl !== 14) r.fail(`FIFO trigger level ${itl} is not 1, 4, 8 or 14`);
    if (thrIp! > 1 || toIp! > 1) r.fail('interrupt-pending flags must be 0 or 1');

    this.divider = divider;
    this.rbr = rbr!;
    this.thr = thr!;
    this.ier = ier!;
    this.iir = iir!;
    this.lcr = lcr!;
    this.mcr = mcr!;
    this.lsr = lsr!;
    this.msr = msr!;
    this.scr = scr!;
    this.fcr = fcr!;
    this.fifoTriggerLevel = itl!;
    this.thrIpending = thrIp!;
    this.timeoutIpending = toIp!;
    this.rxFifo.fill(0);
    this.rxFifo.set(fifo, 0);
    this.rxHead = 0;
    this.rxCount = fifo.length;
    this.inQueue.fill(0);
    this.inQueue.set(queued, 0);
    this.inHead = 0;
    this.inCount = queued.length;
    // The interrupt line's level is the PLIC's own state; it is restored there, not re-driven here.
  }
}
