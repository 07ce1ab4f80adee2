import type { AccessSize, IrqSink, MmioDevice } from '../bus.js';
import type { StateReader, StateWriter, Stateful } from '../state/codec.js';
import type { MipSetter } from './clint.js';

/**
 * The SiFive PLIC as QEMU's virt board instantiates it for one hart (hw/intc/sifive_plic.c,
 * hart config "MS"): 96 sources (0 reserved), 3 priority bits, context 0 = M-mode (drives
 * MEIP), context 1 = S-mode (its registers work, but tern's hart has no S-mode, so it drives
 * nothing). Sources are level-triggered: a source's pending bit follows its line, a claim
 * clears it, and a completion re-pends it if the line is still high.
 */

export const PLIC_SOURCES = 96;
export const PLIC_CONTEXTS = 2;
const PRIORITY_MAX = 7; // (1 << 3) - 1
const WORDS = PLIC_SOURCES >>> 5; // bit-field words per context
export const MIP_MEIP = 1 << 11;

const PENDING_BASE = 0x1000;
const ENABLE_BASE = 0x2000;
const ENABLE_STRIDE = 0x80;
const CONTEXT_BASE = 0x20_0000;
const CONTEXT_STRIDE = 0x1000;

export class Plic implements MmioDevice, IrqSink, Stateful {
  readonly name = 'plic';
  readonly stateId = 'plic';
  readonly stateVersion = 1;

  readonly priority = new Uint32Array(PLIC_SOURCES);
  readonly threshold = new Uint32Array(PLIC_CONTEXTS);
  readonly pending = new Uint32Array(WORDS);
  readonly claimed = new Uint32Array(WORDS);
  readonly enable = new Uint32Array(PLIC_CONTEXTS * WORDS);
  /** Current level of each source's input line. */
  readonly level = new Uint32Array(WORDS);

  /** MEIP level last driven; -1 = unknown (drive on the next update, e.g. after restore). */
  private drivenMeip = -1;

  constructor(private readonly setMip: MipSetter) {}

  /** Device interrupt line `source` (1..95) goes high or low. */
  setIrq(source: number, level: boolean): void {
    if (source <= 0 || source >= PLIC_SOURCES || !Number.isInteger(source)) {
      throw new Error(`PLIC source ${source} does not exist (valid: 1..${PLIC_SOURCES - 1})`);
    }
    const w = source >>> 5;
    const bit = 1 << (source & 31);
    if (level) {
      this.level[w]! |= bit;
      this.pending[w]! |= bit;
    } else {
      this.level[w]! &= ~bit;
      this.pending[w]! &= ~bit;
    }
    this.update();
  }

  /** Highest-priority pending, enabled, unclaimed source above the context's threshold, or 0. */
  best(context: number): number {
    let maxIrq = 0;
    let maxPrio = this.threshold[context]!;
    const en = context * WORDS;
    for (let w = 0; w < WORDS; w++) {
      let bits = this.pending[w]! & ~this.claimed[w]! & this.enable[en + w]!;
      while (bits !== 0) {
        const j = 31 - Math.clz32(bits & -bits);
        bits &= bits - 1;
        const irq = (w << 5) + j;
        const prio = this.priority[irq]!;
        if (prio > maxPrio) {
          maxIrq = irq;
          maxPrio = prio;
        }
      }
    }
    return maxIrq;
  }

  /** Re-evaluates the M-mode context's output (MEIP). */
  update(): void {
    const meip = this.best(0) !== 0 ? 1 : 0;
    if (meip !== this.drivenMeip) {
      this.drivenMeip = meip;
      this.setMip(MIP_MEIP, meip === 1);
    }
  }

  read(offset: number, size: AccessSize): number {
    const reg = this.readWord(offset & ~3);
    if (size === 4 && (offset & 3) === 0) return reg;
    const shift = (offset & 3) * 8;
    return size === 4 ? reg >>> shift : (reg >>> shift) & (size === 1 ? 0xff : 0xffff);
  }

  write(offset: number, size: AccessSize, value: number): void {
    // QEMU accepts only 32-bit accesses; a narrow write is taken as a write of the whole register.
    this.writeWord(offset & ~3, size === 4 ? value >>> 0 : (value & (size === 1 ? 0xff : 0xffff)) << ((offset & 3) * 8));
  }

  private readWord(off: number): number {
    if (off < PLIC_SOURCES * 4) return this.priority[off >>> 2]!;
    if (off >= PENDING_BASE && off < PENDING_BASE + WORDS * 4) return this.pending[(off - PENDING_BASE) >>> 2]!;
    if (off >= ENABLE_BASE && off < ENABLE_BASE + PLIC_CONTEXTS * ENABLE_STRIDE) {
      const ctx = (off - ENABLE_BASE) >>> 7;
      const word = (off & (ENABLE_STRIDE - 1)) >>> 2;
      return word < WORDS ? this.enable[ctx * WORDS + word]! : 0;
    }
    if (off >= CONTEXT_BASE && off < CONTEXT_BASE + PLIC_CONTEXTS * CONTEXT_STRIDE) {
      const ctx = (off - CONTEXT_BASE) >>> 12;
      const reg = off & (CONTEXT_STRIDE - 1);
      if (reg === 0) return this.threshold[ctx]!;
      if (reg === 4) return this.claim(ctx);
    }
    return 0;
  }

  private writeWord(off: number, v: number): void {
    if (off < PLIC_SOURCES * 4) {
      // num_priorities + 1 is a power of two, so the register is WARL: extra bits are dropped.
      this.priority[off >>> 2] = v & PRIORITY_MAX;
      this.update();
      return;
    }
    if (off >= ENABLE_BASE && off < ENABLE_BASE + PLIC_CONTEXTS * ENABLE_STRIDE) {
      const ctx = (off - ENABLE_BASE) >>> 7;
      const word = (off & (ENABLE_STRIDE - 1)) >>> 2;
      if (word < WORDS) {
        this.enable[ctx * WORDS + word] = v;
        this.update();
      }
      return;
    }
    if (off >= CONTEXT_BASE && off < CONTEXT_BASE + PLIC_CONTEXTS * CONTEXT_STRIDE) {
      const ctx = (off - CONTEXT_BASE) >>> 12;
      const reg = off & (CONTEXT_STRIDE - 1);
      if (reg === 0) {
        this.threshold[ctx] = v & PRIORITY_MAX;
        this.update();
      } else if (reg === 4) {
        this.complete(v);
      }
    }
    // Pending bits are read-only; everything else is reserved.
  }

  /** Claim: the best source for the context; it stops being pending and becomes claimed. */
  private claim(ctx: number): number {
    const irq = this.best(ctx);
    if (irq !== 0) {
      const w = irq >>> 5;
      const bit = 1 << (irq & 31);
      this.pending[w]! &= ~bit;
      this.claimed[w]! |= bit;
    }
    this.update();
    return irq;
  }

  /** Completion (as QEMU: any source id below the source count, enabled or not). */
  private complete(irq: number): void {
    if (irq >= PLIC_SOURCES) return;
    const w = irq >>> 5;
    const bit = 1 << (irq & 31);
    this.claimed[w]! &= ~bit;
    // Level-triggered gateway: a line still high is a new request.
    if (this.level[w]! & bit) this.pending[w]! |= bit;
    this.update();
  }

  saveState(w: StateWriter): void {
    for (let i = 0; i < PLIC_SOURCES; i++) w.u32(this.priority[i]!);
    for (let i = 0; i < PLIC_CONTEXTS; i++) w.u32(this.threshold[i]!);
    for (let i = 0; i < WORDS; i++) w.u32(this.pending[i]!);
    for (let i = 0; i < WORDS; i++) w.u32(this.claimed[i]!);
    for (let i = 0; i < PLIC_CONTEXTS * WORDS; i++) w.u32(this.enable[i]!);
    for (let i = 0; i < WORDS; i++) w.u32(this.level[i]!);
  }

  restoreState(r: StateReader, version: number): void {
    if (version !== 1) r.fail(`unsupported plic state version ${version}`);
    const priority = new Uint32Array(PLIC_SOURCES);
    const threshold = new Uint32Array(PLIC_CONTEXTS);
    const pending = new Uint32Array(WORDS);
    const claimed = new Uint32Array(WORDS);
    const enable = new Uint32Array(PLIC_CONTEXTS * WORDS);
    const level = new Uint32Array(WORDS);
    for (let i = 0; i < PLIC_SOURCES; i++) {
      priority[i] = r.u32();
      if (priority[i]! > PRIORITY_MAX) r.fail(`priority ${priority[i]} of source ${i} exceeds ${PRIORITY_MAX}`);
    }
    for (let i = 0; i < PLIC_CONTEXTS; i++) {
      threshold[i] = r.u32();
      if (threshold[i]! > PRIORITY_MAX) r.fail(`threshold ${threshold[i]} of context ${i} exceeds ${PRIORITY_MAX}`);
    }
    for (let i = 0; i < WORDS; i++) pending[i] = r.u32();
    for (let i = 0; i < WORDS; i++) claimed[i] = r.u32();
    for (let i = 0; i < PLIC_CONTEXTS * WORDS; i++) enable[i] = r.u32();
    for (let i = 0; i < WORDS; i++) level[i] = r.u32();
    this.priority.set(priority);
    this.threshold.set(threshold);
    this.pending.set(pending);
    this.claimed.set(claimed);
    this.enable.set(enable);
    this.level.set(level);
    // Re-drive MEIP from the restored registers (the hart's restored mip agrees with it).
    this.drivenMeip = -1;
    this.update();
  }
}
