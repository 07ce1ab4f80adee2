import { GuestRam } from './memory/ram.js';

export type AccessSize = 1 | 2 | 4;

/** A memory-mapped device window. Offsets are relative to the window's base. */
export interface MmioDevice {
  readonly name: string;
  /** Returns the value in the low size*8 bits (zero-extended); the CPU sign-extends as needed. */
  read(offset: number, size: AccessSize): number;
  write(offset: number, size: AccessSize, value: number): void;
}

/** Something that accepts interrupt lines (the PLIC's sources, a hart's mip bits). */
export interface IrqSink {
  setIrq(line: number, level: boolean): void;
}

interface Mapping {
  readonly base: number;
  readonly end: number; // exclusive
  readonly device: MmioDevice;
}

/**
 * The physical address space outside RAM: device windows. The CPU handles RAM itself on its
 * fast path and comes here for everything else. Unmapped addresses set `fault` instead of
 * throwing, so the CPU can raise an access fault in the guest.
 */
export class Bus {
  readonly ram: GuestRam;
  private maps: Mapping[] = [];
  /** Set by read/write when nothing is mapped at the address; the caller clears it. */
  fault = false;
  /** Set by a device (sifive_test) that asks the machine to stop; checked by the CPU after MMIO writes. */
  exitRequested = false;
  /** Exit code requested with exitRequested (0 = pass/poweroff). */
  exitCode = 0;
  /** True when the request was a reset rather than a power-off. */
  resetRequested = false;

  constructor(ram: GuestRam) {
    this.ram = ram;
  }

  map(base: number, size: number, device: MmioDevice): void {
    const b = base >>> 0;
    const e = b + size;
    for (const m of this.maps) {
      if (b < m.end && m.base < e) throw new Error(`MMIO window of ${device.name} at 0x${b.toString(16)} overlaps ${m.device.name}`);
    }
    this.maps.push({ base: b, end: e, device });
  }

  private find(addr: number): Mapping | undefined {
    const a = addr >>> 0;
    const maps = this.maps;
    for (let i = 0; i < maps.length; i++) {
      const m = maps[i]!;
      if (a >= m.base && a < m.end) return m;
    }
    return undefined;
  }

  /** Device read. Sets `fault` and returns 0 when unmapped. */
  read(addr: number, size: AccessSize): number {
    const m = this.find(addr);
    if (m === undefined || (addr >>> 0) + size > m.end) {
      this.fault = true;
      return 0;
    }
    return m.device.read((addr >>> 0) - m.base, size);
  }

  /** Device write. Sets `fault` when unmapped. */
  write(addr: number, size: AccessSize, value: number): void {
    const m = this.find(addr);
    if (m === undefined || (addr >>> 0) + size > m.end) {
      this.fault = true;
      return;
    }
    m.device.write((addr >>> 0) - m.base, size, value);
  }

  requestExit(code: number, reset = false): void {
    this.exitRequested = true;
    this.exitCode = code;
    this.resetRequested = reset;
  }
}
