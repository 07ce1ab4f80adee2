import type { AccessSize, MmioDevice } from '../bus.js';
import type { VirtualClock } from '../clock.js';
import type { StateReader, StateWriter, Stateful } from '../state/codec.js';

/**
 * The CLINT of QEMU's virt board for one hart (hw/intc/riscv_aclint.c: an MSWI at 0x0 and an
 * MTIMER at 0x4000): msip, mtimecmp and mtime, which reads the VM's virtual clock.
 * MTIP is the level mtime >= mtimecmp: re-evaluated on every mtimecmp/mtime write and by
 * update(), which the vCPU loop calls between instruction slices.
 */

/** Drives bits of the hart's mip (MSIP, MTIP, MEIP). */
export type MipSetter = (mask: number, level: boolean) => void;

export const MIP_MSIP = 1 << 3;
export const MIP_MTIP = 1 << 7;

const MSIP_OFFSET = 0x0000;
const MTIMECMP_OFFSET = 0x4000;
const MTIME_OFFSET = 0xbff8;
const TWO32 = 0x1_0000_0000;
/** mtimecmp values at or above this can never be reached by a clock counted in doubles. */
const TWO53 = 2 ** 53;

export class Clint implements MmioDevice, Stateful {
  readonly name = 'clint';
  readonly stateId = 'clint';
  readonly stateVersion = 1;

  /** msip of hart 0 (0 or 1). */
  msip = 0;
  /** mtimecmp as two unsigned 32-bit halves; QEMU's ACLINT resets it to 0. */
  mtimecmpLo = 0;
  mtimecmpHi = 0;

  /** Levels last driven into mip; -1 = unknown, drive on the next update (after restore). */
  private drivenMtip = -1;
  private drivenMsip = -1;

  constructor(
    private readonly clock: VirtualClock,
    private readonly setMip: MipSetter,
  ) {}

  /** Recomputes MTIP (and re-drives MSIP after a restore). Cheap when nothing changed. */
  update(): void {
    const t = this.clock.ticks();
    const hi = Math.floor(t / TWO32);
    const mtip = hi > this.mtimecmpHi || (hi === this.mtimecmpHi && t - hi * TWO32 >= this.mtimecmpLo) ? 1 : 0;
    if (mtip !== this.drivenMtip) {
      this.drivenMtip = mtip;
      this.setMip(MIP_MTIP, mtip === 1);
    }
    if (this.msip !== this.drivenMsip) this.driveMsip();
  }

  /** mtimecmp in ticks: when MTIP will rise. Infinity when it never can (at or above 2^53). */
  deadline(): number {
    const v = this.mtimecmpHi * TWO32 + this.mtimecmpLo;
    return v >= TWO53 ? Infinity : v;
  }

  read(offset: number, size: AccessSize): number {
    const reg = this.readWord(offset & ~3);
    const shift = (offset & 3) * 8;
    if (size === 4 && shift === 0) return reg;
    return size === 4 ? reg >>> shift : (reg >>> shift) & (size === 1 ? 0xff : 0xffff);
  }

  write(offset: number, size: AccessSize, value: number): void {
    const aligned = offset & ~3;
    let v = value >>> 0;
    if (size !== 4 || (offset & 3) !== 0) {
      // Narrow writes merge into the 32-bit register (QEMU rejects them; this keeps them harmless).
      const shift = (offset & 3) * 8;
      const mask = (size === 1 ? 0xff : size === 2 ? 0xffff : 0xffffffff) << shift;
      v = ((this.readWord(aligned) & ~mask) | ((value << shift) & mask)) >>> 0;
    }
    this.writeWord(aligned, v);
  }

  private readWord(off: number): number {
    switch (off) {
      case MSIP_OFFSET:
        return this.msip;
      case MTIMECMP_OFFSET:
        return this.mtimecmpLo;
      case MTIMECMP_OFFSET + 4:
        return this.mtimecmpHi;
      case MTIME_OFFSET:
        return this.clock.ticks() >>> 0;
      case MTIME_OFFSET + 4:
        return Math.floor(this.clock.ticks() / TWO32) >>> 0;
      default:
        return 0;
    }
  }

  private writeWord(off: number, v: number): void {
    switch (off) {
      case MSIP_OFFSET:
        this.msip = v & 1;
        this.driveMsip();
        return;
      case MTIMECMP_OFFSET:
        this.mtimecmpLo = v;
        this.update();
        return;
      case MTIMECMP_OFFSET + 4:
        this.mtimecmpHi = v;
        this.update();
        return;
      case MTIME_OFFSET: {
        const hi = Math.floor(this.clock.ticks() / TWO32);
        this.clock.set(hi * TWO32 + v);
        this.update();
        return;
      }
      case MTIME_OFFSET + 4: {
        const lo = this.clock.ticks() >>> 0;
        this.clock.set(v * TWO32 + lo);
        this.update();
        return;
      }
      default:
        return;
    }
  }

  private driveMsip(): void {
    this.drivenMsip = this.msip;
    this.setMip(MIP_MSIP, this.msip === 1);
  }

  saveState(w: StateWriter): void {
    w.u32(this.msip);
    w.u32(this.mtimecmpLo);
    w.u32(this.mtimecmpHi);
  }

  /** mtime itself is the virtual clock's state, saved with the clock. mip is re-driven by the next update(). */
  restoreState(r: StateReader, version: number): void {
    if (version !== 1) r.fail(`unsupported clint state version ${version}`);
    const msip = r.u32();
    const lo = r.u32();
    const hi = r.u32();
    if (msip > 1) r.fail(`msip ${msip} is not 0 or 1`);
    this.msip = msip;
    this.mtimecmpLo = lo;
    this.mtimecmpHi = hi;
    this.drivenMtip = -1;
    this.drivenMsip = -1;
  }
}
