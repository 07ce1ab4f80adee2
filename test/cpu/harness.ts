import { Bus } from '../../src/machine/bus.js';
import type { AccessSize, MmioDevice } from '../../src/machine/bus.js';
import { GuestRam } from '../../src/machine/memory/ram.js';
import { Hart, StopReason } from '../../src/machine/cpu/hart.js';
import * as A from '../helpers/rv32asm.js';

export const RAM = 0x8000_0000;
/** Where tests put a trap handler. */
export const HANDLER = RAM + 0x1000;
/** A data area tests load from and store to. */
export const DATA = RAM + 0x2000;

export type Program = ReadonlyArray<number | ReadonlyArray<number>>;

export interface Rig {
  ram: GuestRam;
  bus: Bus;
  hart: Hart;
  /** The virtual clock the hart reads for time/timeh. */
  ticks: number;
  load(prog: Program, at?: number): number;
  word(addr: number): number;
  setWord(addr: number, v: number): void;
  run(budget: number): StopReason;
}

export function rig(ramBytes = 1 << 20): Rig {
  const ram = GuestRam.allocate(ramBytes);
  const bus = new Bus(ram);
  const r: Rig = {
    ram,
    bus,
    hart: undefined as unknown as Hart,
    ticks: 0,
    load(prog, at = RAM) {
      let a = at;
      for (const w of prog.flat()) {
        ram.i32[((a - RAM) >>> 0) >>> 2] = w | 0;
        a += 4;
      }
      return a;
    },
    word(addr) {
      return ram.i32[((addr - RAM) >>> 0) >>> 2]! >>> 0;
    },
    setWord(addr, v) {
      ram.i32[((addr - RAM) >>> 0) >>> 2] = v | 0;
    },
    run(budget) {
      return r.hart.run(budget);
    },
  };
  r.hart = new Hart(bus, { ticks: () => r.ticks });
  r.hart.reset(RAM, 0, 0);
  return r;
}

/**
 * A trap handler that stops the hart: wfi returns StopReason.Wfi when nothing is pending and
 * enabled; otherwise (wfi is then a nop) it spins on itself until the budget runs out.
 */
export function stopHandler(r: Rig): void {
  r.load([A.wfi(), A.jal(0, 0)], HANDLER);
  r.hart.mtvec = HANDLER;
}

/** A trap handler that skips the trapping instruction and returns (uses t6). */
export function skipHandler(r: Rig): void {
  r.load([A.csrr(31, 0x341), A.addi(31, 31, 4), A.csrw(0x341, 31), A.mret()], HANDLER);
  r.hart.mtvec = HANDLER;
}

/** Runs one instruction with x1 = a, x2 = b and returns x3 (as int32). */
export function op1(inst: number, a: number, b = 0): number {
  const r = rig();
  r.load([inst]);
  r.hart.x[1] = a;
  r.hart.x[2] = b;
  r.run(1);
  return r.hart.x[3]!;
}

/** A device that records accesses and answers reads with a fixed value. */
export class RecordingDevice implements MmioDevice {
  readonly name = 'recorder';
  readonly log: string[] = [];
  constructor(public readValue = 0, private readonly onWrite?: (offset: number, size: AccessSize, value: number) => void) {}
  read(offset: number, size: AccessSize): number {
    this.log.push(`r${size}@${offset}`);
    return this.readValue;
  }
  write(offset: number, size: AccessSize, value: number): void {
    this.log.push(`w${size}@${offset}=${value >>> 0}`);
    this.onWrite?.(offset, size, value);
  }
}
