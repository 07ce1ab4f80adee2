import { Bus } from '../bus.js';
import type { AccessSize } from '../bus.js';
import { ALL_BLOCKS, MIN_RAM_BYTES, RAM_BASE } from '../memory/layout.js';
import { GuestRam } from '../memory/ram.js';
import type { StateReader, StateWriter, Stateful } from '../state/codec.js';
import { Counter64 } from './counters.js';
import { Csr, MISA_RV32IMAU, Mip, Mstatus, Pmp, Priv } from './csr.js';
import { Cause, INTERRUPT_FLAG, Irq } from './trap.js';

/** Why run() returned. */
export const enum StopReason {
  /** The instruction budget is used up. */
  Budget = 0,
  /** WFI with nothing pending and enabled in mie; pc is already past the wfi. */
  Wfi = 1,
  /** A device asked the machine to stop (bus.exitRequested) during an MMIO write. */
  Exit = 2,
}

/** Major opcode, inst[6:2], when inst[1:0] == 3 (no C extension: anything else is illegal). */
const enum Op {
  Load = 0x00,
  MiscMem = 0x03,
  OpImm = 0x04,
  Auipc = 0x05,
  Store = 0x08,
  Amo = 0x0b,
  Op = 0x0c,
  Lui = 0x0d,
  Branch = 0x18,
  Jalr = 0x19,
  Jal = 0x1b,
  System = 0x1c,
}

/** AMO funct5, inst[31:27]. */
const enum Amo {
  Add = 0x00,
  Swap = 0x01,
  Lr = 0x02,
  Sc = 0x03,
  Xor = 0x04,
  Or = 0x08,
  And = 0x0c,
  Min = 0x10,
  Max = 0x14,
  Minu = 0x18,
  Maxu = 0x1c,
}

/** Exact SYSTEM encodings with funct3 = 0. */
const enum Sys {
  Ecall = 0x0000_0073,
  Ebreak = 0x0010_0073,
  Mret = 0x3020_0073,
  Wfi = 0x1050_0073,
}

/** Outcome of a memory slow path. */
const enum Mem {
  Ram = 0,
  Mmio = 1,
  Fault = 2,
}

/** Which slow path run() asks slow() for. */
const enum Slow {
  Fetch,
  Load,
  Store,
  Amo,
  Csr,
  Mret,
  Interrupt,
  Trap,
}

/** `ecause` value meaning "instruction completed through a slow path: re-check exit and interrupts". */
const POST = -1;

/** XOR with a guest address gives the RAM offset (as int32: in RAM iff 0 <= off < ram.bytes). */
const RAM_BIAS = 0x8000_0000 | 0;
/**
 * `(a ^ U32_ORDER) < (b ^ U32_ORDER)` is `a >>> 0 < b >>> 0` on int32 values without a uint32 in
 * between: V8 speculates that `>>> 0` fits an int32 until an operand of 2^31 or more comes, then
 * deoptimizes the whole interpreter (see memEnd in run()).
 */
const U32_ORDER = 0x8000_0000 | 0;
const PAGE_SHIFT = 12;
const PAGE_MASK = 0xfff;
/** layout.ts BLOCK_SHIFT, as a module constant the JIT folds: a dirty mark's bit per 512 bytes. */
const BLOCK_SHIFT = 9;

/** High 32 bits of the unsigned 64-bit product, from 16-bit halves (no BigInt, all exact in doubles). */
function mulhu(a: number, b: number): number {
  const al = a & 0xffff;
  const ah = a >>> 16;
  const bl = b & 0xffff;
  const bh = b >>> 16;
  const lh = al * bh;
  const hl = ah * bl;
  const mid = ((al * bl) >>> 16) + (lh & 0xffff) + (hl & 0xffff);
  return (ah * bh + (lh >>> 16) + (hl >>> 16) + (mid >>> 16)) | 0;
}

function noAbsentPageHook(page: number): never {
  throw new Error(`hart touched absent page ${page} but no onAbsentPage hook is installed`);
}

/**
 * One RV32IMA + Zicsr + Zifencei hart with machine and user modes (no S-mode, no MMU, no C),
 * following QEMU 7.2's `virt` CPU where the ISA leaves a choice (checked against
 * qemu-system-riscv32 7.2: same mtval for illegal instructions and ebreak (0), reservation
 * cleared by every trap and mret, SC compares the value LR read, reserved mtvec modes ignored).
 *
 * Representation: `pc` holds the guest address as a uint32; run() keeps it in an int32 local
 * and writes it back on every exit, slow path and hook call. CSR fields hold uint32 values, `x`
 * int32 values. dirtyLogOn and presenceOn are sampled when run() starts.
 *
 * Deliberate differences from QEMU 7.2:
 * - misaligned loads and stores trap (cause 4/6, mtval = address); QEMU emulates them;
 * - misaligned AMOs raise 6 and AMO access faults 7, as the spec says (QEMU 7.2: 4 and 5); a
 *   misaligned SC traps (6) even without a reservation (QEMU just fails it);
 * - no C extension: a jump or taken branch to a 2-aligned target traps (cause 0, mtval = the
 *   target; QEMU with c=off reports the jump's own pc for jal/branches);
 * - misa = RV32IMAU; mstatus keeps only MIE, MPIE, MPP, MPRV, TW; MPP values 1/2 become U;
 *   mie/mip have only the M bits; mepc reads back with bits 1:0 clear; marchid/mimpid read 0;
 *   mcountinhibit bit 1 reads 0; hpm counters and other CSRs QEMU has are illegal;
 * - cycle = instret (CPI 1), deterministic; QEMU's counters follow host time;
 * - PMP registers are stored and read back (lock bits honoured) but never enforced, so U-mode
 *   accesses QEMU's PMP would fault succeed here; mstatus.MPRV therefore has no effect;
 * - wfi in U-mode is always illegal (QEMU's default CPU, which has S-mode, does the same).
 */
export class Hart implements Stateful {
  readonly stateId = 'cpu';
  readonly stateVersion = 1;

  readonly x = new Int32Array(32);
  /** Guest address of the next instruction, uint32. */
  pc = 0;
  priv: number = Priv.Machine;
  /** Instructions retired since reset (instructions that trapped did not retire). */
  instret = 0;
  /**
   * Budget used by the last run(): instructions executed, those that trapped included. Use this,
   * not instret, to count progress through a budget (a trap loop does not advance instret).
   */
  budgetUsed = 0;
  /** See setStopSignal. */
  private stopWord: Int32Array | undefined;
  private stopIndex = 0;
  private stopUnless = 0;
  dirtyLogOn = false;
  presenceOn = false;
  onAbsentPage: (page: number) => void = noAbsentPageHook;

  // Machine CSRs (uint32). Public for inspection by tests and debuggers; the guest changes them
  // through csr instructions and traps.
  mstatus = 0;
  mie = 0;
  /** Pending interrupts: MSIP/MTIP/MEIP, driven by devices through setPending. */
  mip = 0;
  mtvec = 0;
  mscratch = 0;
  mepc = 0;
  mcause = 0;
  mtval = 0;
  mcounteren = 0;
  mcountinhibit = 0;
  readonly pmpcfg = new Uint8Array(16);
  readonly pmpaddr = new Uint32Array(16);
  private readonly cycle = new Counter64();
  private readonly minstret = new Counter64();

  /** LR/SC reservation: address and the value LR read (QEMU's SC is a compare-and-swap with it). */
  private resValid = false;
  private resAddr = 0;
  private resValue = 0;

  // Slow-path results (avoid allocating a result object per access).
  private memStatus: Mem = Mem.Ram;
  private excCause = 0;
  private excTval = 0;
  private mmioWrote = false;

  // Fetch window computed by slow(Slow.Fetch): guest address of its start, its length in bytes,
  // and the ram.i32 index of its first word.
  private fBase = 0;
  private fLen = 0;
  private fWord = 0;

  readonly hartId: number;

  constructor(
    private readonly bus: Bus,
    private readonly clock: { ticks(): number },
    hartId = 0,
  ) {
    this.hartId = hartId >>> 0;
  }

  getPc(): number {
    return this.pc >>> 0;
  }

  /** M-mode at `entry`, a0/a1 set, every CSR at its reset value. Device-driven mip lines are kept. */
  reset(entry: number, a0: number, a1: number): void {
    this.x.fill(0);
    this.x[10] = a0 | 0;
    this.x[11] = a1 | 0;
    this.pc = entry >>> 0;
    this.priv = Priv.Machine;
    this.instret = 0;
    this.mstatus = 0;
    this.mie = 0;
    this.mtvec = 0;
    this.mscratch = 0;
    this.mepc = 0;
    this.mcause = 0;
    this.mtval = 0;
    this.mcounteren = 0;
    this.mcountinhibit = 0;
    this.pmpcfg.fill(0);
    this.pmpaddr.fill(0);
    this.cycle.reset();
    this.minstret.reset();
    this.resValid = false;
    this.resAddr = 0;
    this.resValue = 0;
    this.mmioWrote = false;
  }

  /** Devices drive MSIP (1<<3), MTIP (1<<7) and MEIP (1<<11). Other bits are ignored. */
  setPending(mask: number, level: boolean): void {
    const m = mask & Mip.ALL;
    this.mip = (level ? this.mip | m : this.mip & ~m) >>> 0;
  }

  /** Whether an interrupt is pending and enabled in mie: what wakes a hart stopped in WFI. */
  wakeable(): boolean {
    return (this.mip & this.mie) !== 0;
  }

  /**
   * Executes up to `budget` instructions. Trapping instructions use budget but do not retire.
   * Returns early on WFI (nothing to wake it) and when a device requests exit.
   */
  run(budgetIn: number): StopReason {
    if (!warmedUp) warmUp();
    this.budgetUsed = 0;
    const budget = Math.floor(budgetIn);
    if (!(budget > 0)) return StopReason.Budget;
    this.takeInterrupt();

    const x = this.x;
    const bus = this.bus;
    const ram = bus.ram;
    const i32 = ram.i32;
    const u16 = ram.u16;
    const u8 = ram.u8;
    // Stores mark the dirty log while logging is on, else the written map (GuestRam.written).
    const marks = this.dirtyLogOn ? ram.dirty.bits : ram.written.bits;
    // With presence checking on, every RAM data access takes the slow path (which checks the
    // page); RAM fetches re-check only when the pc leaves the current page.
    const memLimit = this.presenceOn ? 0 : ram.bytes;
    // The fast path's bound check, on signed int32 only: RAM [RAM_BASE, RAM_BASE + memLimit) is,
    // read as int32, [-2^31, memEnd). A check written `off >>> 0 < memLimit` makes V8 speculate
    // that the uint32 fits an int32, and the first MMIO address through it (above 2^31 as uint32)
    // deoptimizes the whole interpreter ("lost precision"): a VM restored onto a thread whose
    // earlier machine never took that path ran 15x slower for 100 ms after its resume.
    const memEnd = (memLimit ^ RAM_BIAS) | 0;

    let pc = this.pc | 0;
    let left = budget;
    let inst0 = this.instret; // instret = inst0 + (budget - left) once the current one retires
    let fBase = 0;
    let fLen = 0; // empty window: the first fetch computes it
    let fWord = 0;
    let inst = 0;
    let ecause = 0;
    let etval = 0;

    for (;;) {
      if (left <= 0) break;
      left--;
      x[0] = 0;

      decode: {
        illegal: {
          let d = (pc - fBase) | 0;
          if ((d ^ U32_ORDER) >= (fLen ^ U32_ORDER)) {
            this.pc = pc >>> 0;
            this.instret = inst0 + (budget - left) - 1;
            const c = this.slow(Slow.Fetch, pc, 0, 0);
            if (c >= 0) {
              ecause = c;
              etval = pc;
              break decode;
            }
            fBase = this.fBase;
            fLen = this.fLen;
            fWord = this.fWord;
            d = (pc - fBase) | 0;
          }
          inst = i32[fWord + (d >> 2)]!;
          const rd = (inst >>> 7) & 31;

          switch (((inst >>> 2) & 31) | ((~inst & 3) << 5)) {
            case Op.OpImm: {
              const a = x[(inst >>> 15) & 31]!;
              const imm = inst >> 20;
              switch ((inst >>> 12) & 7) {
                case 0:
                  x[rd] = (a + imm) | 0;
                  break;
                case 1:
                  if (inst >>> 25 !== 0) break illegal;
                  x[rd] = a << imm;
                  break;
                case 2:
                  x[rd] = a < imm ? 1 : 0;
                  break;
                case 3:
                  x[rd] = (a ^ U32_ORDER) < (imm ^ U32_ORDER) ? 1 : 0;
                  break;
                case 4:
                  x[rd] = a ^ imm;
                  break;
                case 5: {
                  const f7 = inst >>> 25;
                  if (f7 === 0) x[rd] = (a >>> imm) | 0;
                  else if (f7 === 0x20) x[rd] = a >> imm;
                  else break illegal;
                  break;
                }
                case 6:
                  x[rd] = a | imm;
                  break;
                default:
                  x[rd] = a & imm;
                  break;
              }
              pc = (pc + 4) | 0;
              continue;
            }

            case Op.Op: {
              const a = x[(inst >>> 15) & 31]!;
              const b = x[(inst >>> 20) & 31]!;
              const f7 = inst >>> 25;
              if (f7 === 0) {
                switch ((inst >>> 12) & 7) {
                  case 0:
                    x[rd] = (a + b) | 0;
                    break;
                  case 1:
                    x[rd] = a << b;
                    break;
                  case 2:
                    x[rd] = a < b ? 1 : 0;
                    break;
                  case 3:
                    x[rd] = (a ^ U32_ORDER) < (b ^ U32_ORDER) ? 1 : 0;
                    break;
                  case 4:
                    x[rd] = a ^ b;
                    break;
                  case 5:
                    x[rd] = (a >>> b) | 0;
                    break;
                  case 6:
                    x[rd] = a | b;
                    break;
                  default:
                    x[rd] = a & b;
                    break;
                }
              } else if (f7 === 1) {
                switch ((inst >>> 12) & 7) {
                  case 0: // mul
                    x[rd] = Math.imul(a, b);
                    break;
                  case 1: // mulh
                    x[rd] = (mulhu(a, b) - (a < 0 ? b : 0) - (b < 0 ? a : 0)) | 0;
                    break;
                  case 2: // mulhsu
                    x[rd] = (mulhu(a, b) - (a < 0 ? b : 0)) | 0;
                    break;
                  case 3: // mulhu
                    x[rd] = mulhu(a, b);
                    break;
                  case 4: // div
                    x[rd] = b === 0 ? -1 : b === -1 ? -a | 0 : (a / b) | 0;
                    break;
                  case 5: // divu
                    x[rd] = b === 0 ? -1 : (a >>> 0) / (b >>> 0) | 0;
                    break;
                  case 6: // rem
                    x[rd] = b === 0 ? a : b === -1 ? 0 : a % b | 0;
                    break;
                  default: // remu
                    x[rd] = b === 0 ? a : (a >>> 0) % (b >>> 0) | 0;
                    break;
                }
              } else if (f7 === 0x20) {
                const f3 = (inst >>> 12) & 7;
                if (f3 === 0) x[rd] = (a - b) | 0;
                else if (f3 === 5) x[rd] = a >> b;
                else break illegal;
              } else break illegal;
              pc = (pc + 4) | 0;
              continue;
            }

            case Op.Load: {
              const a = (x[(inst >>> 15) & 31]! + (inst >> 20)) | 0;
              const off = a ^ RAM_BIAS;
              const f3 = (inst >>> 12) & 7;
              switch (f3) {
                case 0:
                  if (a < memEnd) {
                    x[rd] = (u8[off]! << 24) >> 24;
                    pc = (pc + 4) | 0;
                    continue;
                  }
                  break;
                case 1:
                  if (a < memEnd && (off & 1) === 0) {
                    x[rd] = (u16[off >> 1]! << 16) >> 16;
                    pc = (pc + 4) | 0;
                    continue;
                  }
                  break;
                case 2:
                  if (a < memEnd && (off & 3) === 0) {
                    x[rd] = i32[off >> 2]!;
                    pc = (pc + 4) | 0;
                    continue;
                  }
                  break;
                case 4:
                  if (a < memEnd) {
                    x[rd] = u8[off]!;
                    pc = (pc + 4) | 0;
                    continue;
                  }
                  break;
                case 5:
                  if (a < memEnd && (off & 1) === 0) {
                    x[rd] = u16[off >> 1]!;
                    pc = (pc + 4) | 0;
                    continue;
                  }
                  break;
                default:
                  break illegal;
              }
              this.pc = pc >>> 0;
              this.instret = inst0 + (budget - left) - 1;
              const v = this.slow(Slow.Load, a, f3, 0);
              if (this.memStatus === Mem.Fault) {
                ecause = this.excCause;
                etval = this.excTval;
                break decode;
              }
              x[rd] = v;
              pc = (pc + 4) | 0;
              if (this.memStatus === Mem.Mmio) {
                ecause = POST;
                break decode;
              }
              continue;
            }

            case Op.Store: {
              // Marks are read before written: a page already marked costs a load, not a
              // store to a cache line the host thread's sync also touches. A mark is the mask
              // of the page's 512-byte blocks stored to (dirty-log.ts); an aligned store stays
              // inside one block.
              const a = (x[(inst >>> 15) & 31]! + (((inst >> 25) << 5) | rd)) | 0;
              const off = a ^ RAM_BIAS;
              const v = x[(inst >>> 20) & 31]!;
              const f3 = (inst >>> 12) & 7;
              switch (f3) {
                case 0:
                  if (a < memEnd) {
                    u8[off] = v;
                    if ((marks[off >>> PAGE_SHIFT]! & (1 << ((off >>> BLOCK_SHIFT) & 7))) === 0) marks[off >>> PAGE_SHIFT] |= 1 << ((off >>> BLOCK_SHIFT) & 7);
                    pc = (pc + 4) | 0;
                    continue;
                  }
                  break;
                case 1:
                  if (a < memEnd && (off & 1) === 0) {
                    u16[off >> 1] = v;
                    if ((marks[off >>> PAGE_SHIFT]! & (1 << ((off >>> BLOCK_SHIFT) & 7))) === 0) marks[off >>> PAGE_SHIFT] |= 1 << ((off >>> BLOCK_SHIFT) & 7);
                    pc = (pc + 4) | 0;
                    continue;
                  }
                  break;
                case 2:
                  if (a < memEnd && (off & 3) === 0) {
                    i32[off >> 2] = v;
                    if ((marks[off >>> PAGE_SHIFT]! & (1 << ((off >>> BLOCK_SHIFT) & 7))) === 0) marks[off >>> PAGE_SHIFT] |= 1 << ((off >>> BLOCK_SHIFT) & 7);
                    pc = (pc + 4) | 0;
                    continue;
                  }
                  break;
                default:
                  break illegal;
              }
              this.pc = pc >>> 0;
              this.instret = inst0 + (budget - left) - 1;
              const st = this.slow(Slow.Store, a, f3, v);
              if (st === Mem.Fault) {
                ecause = this.excCause;
                etval = this.excTval;
                break decode;
              }
              pc = (pc + 4) | 0;
              if (st === Mem.Mmio) {
                ecause = POST;
                break decode;
              }
              continue;
            }

            case Op.Branch: {
              const a = x[(inst >>> 15) & 31]!;
              const b = x[(inst >>> 20) & 31]!;
              let taken: boolean;
              switch ((inst >>> 12) & 7) {
                case 0:
                  taken = a === b;
                  break;
                case 1:
                  taken = a !== b;
                  break;
                case 4:
                  taken = a < b;
                  break;
                case 5:
                  taken = a >= b;
                  break;
                case 6:
                  taken = (a ^ U32_ORDER) < (b ^ U32_ORDER);
                  break;
                case 7:
                  taken = (a ^ U32_ORDER) >= (b ^ U32_ORDER);
                  break;
                default:
                  break illegal;
              }
              if (taken) {
                const imm = ((inst >> 31) << 12) | ((inst << 4) & 0x800) | ((inst >>> 20) & 0x7e0) | ((inst >>> 7) & 0x1e);
                if ((imm & 2) !== 0) {
                  ecause = Cause.InstMisaligned;
                  etval = (pc + imm) | 0;
                  break decode;
                }
                pc = (pc + imm) | 0;
              } else {
                pc = (pc + 4) | 0;
              }
              continue;
            }

            case Op.Jal: {
              const imm = ((inst >> 31) << 20) | (inst & 0xff000) | ((inst >>> 9) & 0x800) | ((inst >>> 20) & 0x7fe);
              if ((imm & 2) !== 0) {
                ecause = Cause.InstMisaligned;
                etval = (pc + imm) | 0;
                break decode;
              }
              x[rd] = (pc + 4) | 0;
              pc = (pc + imm) | 0;
              continue;
            }

            case Op.Jalr: {
              if ((inst & 0x7000) !== 0) break illegal;
              const t = ((x[(inst >>> 15) & 31]! + (inst >> 20)) & ~1) | 0;
              if ((t & 2) !== 0) {
                ecause = Cause.InstMisaligned;
                etval = t;
                break decode;
              }
              x[rd] = (pc + 4) | 0;
              pc = t;
              continue;
            }

            case Op.Lui:
              x[rd] = inst & 0xfffff000;
              pc = (pc + 4) | 0;
              continue;

            case Op.Auipc:
              x[rd] = (pc + (inst & 0xfffff000)) | 0;
              pc = (pc + 4) | 0;
              continue;

            case Op.Amo: {
              this.pc = pc >>> 0;
              this.instret = inst0 + (budget - left) - 1;
              const st = this.slow(Slow.Amo, inst, 0, 0);
              if (st === Mem.Fault) {
                ecause = this.excCause;
                etval = this.excTval;
                break decode;
              }
              pc = (pc + 4) | 0;
              if (st === Mem.Mmio) {
                ecause = POST;
                break decode;
              }
              continue;
            }

            case Op.MiscMem: // fence, fence.i: no caches, one hart, no decoded-instruction cache
              if ((inst & 0x6000) !== 0) break illegal;
              pc = (pc + 4) | 0;
              continue;

            case Op.System: {
              const f3 = (inst >>> 12) & 7;
              if (f3 === 0) {
                switch (inst) {
                  case Sys.Ecall:
                    ecause = this.priv === Priv.Machine ? Cause.EcallFromM : Cause.EcallFromU;
                    etval = 0;
                    break decode;
                  case Sys.Ebreak:
                    ecause = Cause.Breakpoint;
                    etval = 0; // QEMU 7.2 leaves mtval 0 for ebreak
                    break decode;
                  case Sys.Mret:
                    if (this.priv !== Priv.Machine) break;
                    pc = this.slow(Slow.Mret, 0, 0, 0) | 0;
                    ecause = POST;
                    break decode;
                  case Sys.Wfi:
                    // U-mode WFI traps (the spec's bounded time limit is zero here; QEMU's virt
                    // CPU, which has S-mode, traps too).
                    if (this.priv !== Priv.Machine) break;
                    pc = (pc + 4) | 0;
                    if ((this.mip & this.mie) !== 0) continue;
                    this.pc = pc >>> 0;
                    this.instret = inst0 + (budget - left);
                    x[0] = 0;
                    this.budgetUsed = budget - left;
                    return StopReason.Wfi;
                  default:
                    break;
                }
                break illegal;
              }
              if (f3 === 4) break illegal;
              this.pc = pc >>> 0;
              this.instret = inst0 + (budget - left) - 1;
              if (this.slow(Slow.Csr, inst, 0, 0) === 0) break illegal;
              pc = (pc + 4) | 0;
              ecause = POST;
              break decode;
            }

            default:
              break illegal;
          }
        }
        ecause = Cause.IllegalInst;
        etval = inst;
      }

      // Reached by `break decode` (ecause set: an exception, or POST for a slow-path completion)
      // or by `break illegal` (an illegal instruction).
      if (ecause === POST) {
        this.pc = pc >>> 0;
        this.instret = inst0 + (budget - left);
        if (this.mmioWrote) {
          this.mmioWrote = false;
          if (bus.exitRequested) {
            x[0] = 0;
            this.budgetUsed = budget - left;
            return StopReason.Exit;
          }
        }
        // The host wants the slice to end (a pause): stop after this instruction, not at the
        // budget's end. A guest polling a device register runs its slices ten times slower.
        const sw = this.stopWord;
        if (sw !== undefined && Atomics.load(sw, this.stopIndex) !== this.stopUnless) {
          x[0] = 0;
          this.budgetUsed = budget - left;
          return StopReason.Budget;
        }
        if (this.slow(Slow.Interrupt, 0, 0, 0) !== 0) pc = this.pc | 0;
        continue;
      }
      // The trapping instruction used budget but does not retire.
      inst0 -= 1;
      this.instret = inst0 + (budget - left);
      this.pc = pc >>> 0;
      this.slow(Slow.Trap, ecause, etval, 0);
      pc = this.pc | 0;
    }

    x[0] = 0;
    this.pc = pc >>> 0;
    this.instret = inst0 + budget;
    this.budgetUsed = budget;
    return StopReason.Budget;
  }

  /**
   * Makes run() return early, after the next instruction that completes through a slow path
   * (MMIO, CSR, AMO, fence), once `word[index]` is no longer `unless` (the vCPU thread passes its
   * control block's command word and Run). A guest that polls the timer spends its slice in MMIO
   * reads: measured, a 4 000-instruction slice of munch idle=poll took 0.25-0.4 ms during a
   * migration, and the pause waited for its end.
   */
  setStopSignal(word: Int32Array, index: number, unless: number): void {
    this.stopWord = word;
    this.stopIndex = index;
    this.stopUnless = unless;
  }

  // ---- slow paths (kept out of run() so its hot loop stays small) ----

  /**
   * Every slow path of run() behind one entry point. It is deliberately one large function: V8
   * never inlines a function this size, which keeps run()'s hot loop small and its registers
   * free however often the slow paths ran before run() was optimised.
   */
  private slow(kind: Slow, p: number, q: number, r: number): number {
    switch (kind) {
      case Slow.Fetch: {
        // Sets the fetch window for pc = p, or returns the fetch exception cause.
        const pc = p;
        if ((pc & 3) !== 0) return Cause.InstMisaligned; // only reachable via reset() or restoreState()
        const ram = this.bus.ram;
        const off = (pc ^ RAM_BIAS) >>> 0;
        if (off >= ram.bytes) return Cause.InstAccessFault; // no executable memory outside RAM
        if (this.presenceOn) {
          this.waitPresent(off >>> PAGE_SHIFT);
          this.fBase = (pc & ~PAGE_MASK) | 0;
          this.fLen = PAGE_MASK + 1;
          this.fWord = (off & ~PAGE_MASK) >>> 2;
        } else {
          this.fBase = RAM_BIAS;
          this.fLen = ram.bytes;
          this.fWord = 0;
        }
        return -1;
      }
      case Slow.Load: {
        // Load of width/sign f3 (0 lb, 1 lh, 2 lw, 4 lbu, 5 lhu) from address a; status in memStatus.
        const a = p;
        const f3 = q;
        const size = 1 << (f3 & 3);
        if ((a & (size - 1)) !== 0) {
          this.fault(Cause.LoadMisaligned, a);
          return 0;
        }
        const ram = this.bus.ram;
        const off = (a ^ RAM_BIAS) >>> 0;
        if (off < ram.bytes) {
          if (this.presenceOn) this.waitPresent(off >>> PAGE_SHIFT);
          this.memStatus = Mem.Ram;
          switch (f3) {
            case 0:
              return (ram.u8[off]! << 24) >> 24;
            case 1:
              return (ram.u16[off >>> 1]! << 16) >> 16;
            case 2:
              return ram.i32[off >>> 2]!;
            case 4:
              return ram.u8[off]!;
            default:
              return ram.u16[off >>> 1]!;
          }
        }
        const bus = this.bus;
        const v = bus.read(a >>> 0, size as AccessSize);
        if (bus.fault) {
          bus.fault = false;
          this.fault(Cause.LoadAccessFault, a);
          return 0;
        }
        this.memStatus = Mem.Mmio;
        switch (f3) {
          case 0:
            return (v << 24) >> 24;
          case 1:
            return (v << 16) >> 16;
          case 2:
            return v | 0;
          case 4:
            return v & 0xff;
          default:
            return v & 0xffff;
        }
      }
      case Slow.Store: {
        // Store of width f3 (0 sb, 1 sh, 2 sw); returns the Mem status.
        const a = p;
        const f3 = q;
        const v = r;
        const size = 1 << f3;
        if ((a & (size - 1)) !== 0) {
          this.fault(Cause.StoreMisaligned, a);
          return Mem.Fault;
        }
        const ram = this.bus.ram;
        const off = (a ^ RAM_BIAS) >>> 0;
        if (off < ram.bytes) {
          if (this.presenceOn) this.waitPresent(off >>> PAGE_SHIFT);
          if (f3 === 0) ram.u8[off] = v;
          else if (f3 === 1) ram.u16[off >>> 1] = v;
          else ram.i32[off >>> 2] = v;
          this.markStore(ram, off);
          return Mem.Ram;
        }
        return this.mmioWrite(a, size as AccessSize, size === 4 ? v >>> 0 : v & ((1 << (size * 8)) - 1));
      }
      case Slow.Amo: {
        // LR/SC/AMO (RV32A, word only); writes rd itself; returns the Mem status.
        const inst = p;
        const f5 = inst >>> 27;
        const rd = (inst >>> 7) & 31;
        const rs2 = (inst >>> 20) & 31;
        if ((inst & 0x7000) !== 0x2000) return this.illegal(inst);
        const x = this.x;
        const a = x[(inst >>> 15) & 31]!;
        const ram = this.bus.ram;
        const off = (a ^ RAM_BIAS) >>> 0;
        const inRam = off < ram.bytes;
        const bus = this.bus;

        if (f5 === Amo.Lr) {
          if (rs2 !== 0) return this.illegal(inst);
          if ((a & 3) !== 0) return this.faultStatus(Cause.LoadMisaligned, a);
          let v: number;
          let st = Mem.Ram;
          if (inRam) {
            if (this.presenceOn) this.waitPresent(off >>> PAGE_SHIFT);
            v = ram.i32[off >>> 2]!;
          } else {
            v = bus.read(a >>> 0, 4) | 0;
            if (bus.fault) {
              bus.fault = false;
              return this.faultStatus(Cause.LoadAccessFault, a);
            }
            st = Mem.Mmio;
          }
          x[rd] = v;
          this.resValid = true;
          this.resAddr = a;
          this.resValue = v;
          return st;
        }

        if (f5 === Amo.Sc) {
          // Misaligned SC traps as the spec requires (QEMU 7.2 just fails it when unreserved).
          if ((a & 3) !== 0) return this.faultStatus(Cause.StoreMisaligned, a);
          let result = 1;
          let st = Mem.Ram;
          if (this.resValid && this.resAddr === a) {
            const v = x[rs2]!;
            if (inRam) {
              if (this.presenceOn) this.waitPresent(off >>> PAGE_SHIFT);
              // Like QEMU's cmpxchg: the word must still hold what LR read.
              if (ram.i32[off >>> 2] === this.resValue) {
                ram.i32[off >>> 2] = v;
                this.markStore(ram, off);
                result = 0;
              }
            } else {
              st = this.mmioWrite(a, 4, v >>> 0);
              if (st === Mem.Fault) return st;
              result = 0;
            }
          }
          this.resValid = false;
          x[rd] = result;
          return st;
        }

        switch (f5) {
          case Amo.Add:
          case Amo.Swap:
          case Amo.Xor:
          case Amo.Or:
          case Amo.And:
          case Amo.Min:
          case Amo.Max:
          case Amo.Minu:
          case Amo.Maxu:
            break;
          default:
            return this.illegal(inst);
        }
        if ((a & 3) !== 0) return this.faultStatus(Cause.StoreMisaligned, a);
        const b = x[rs2]!;
        let old: number;
        if (inRam) {
          if (this.presenceOn) this.waitPresent(off >>> PAGE_SHIFT);
          old = ram.i32[off >>> 2]!;
          ram.i32[off >>> 2] = amoResult(f5, old, b);
          this.markStore(ram, off);
          x[rd] = old;
          return Mem.Ram;
        }
        old = bus.read(a >>> 0, 4) | 0;
        if (bus.fault) {
          bus.fault = false;
          return this.faultStatus(Cause.StoreAccessFault, a); // AMOs raise store/AMO faults
        }
        const st = this.mmioWrite(a, 4, amoResult(f5, old, b) >>> 0);
        if (st === Mem.Fault) return st;
        x[rd] = old;
        return st;
      }
      case Slow.Csr: {
        // csrrw/csrrs/csrrc(i); returns 0 for an illegal access (nothing changed), else 1.
        const inst = p;
        const csr = inst >>> 20;
        const rs1 = (inst >>> 15) & 31;
        const f3 = (inst >>> 12) & 7;
        const src = (f3 & 4) !== 0 ? rs1 : this.x[rs1]!;
        const op = f3 & 3; // 1 write, 2 set, 3 clear
        const writes = op === 1 || rs1 !== 0;
        if (((csr >>> 8) & 3) > this.priv) return 0;
        if (writes && csr >>> 10 === 3) return 0;
        const old = this.csrRead(csr);
        if (old < 0) return 0;
        if (writes) this.csrWrite(csr, op === 1 ? src : op === 2 ? old | src : old & ~src);
        this.x[(inst >>> 7) & 31] = old;
        return 1;
      }
      case Slow.Mret:
        return this.mret();
      case Slow.Interrupt:
        return this.takeInterrupt() ? 1 : 0;
      default:
        this.trap(p, q);
        return 0;
    }
  }

  /** A store at RAM offset `off` (slow paths): marks the dirty log when on, else the written map. */
  private markStore(ram: GuestRam, off: number): void {
    const marks = this.dirtyLogOn ? ram.dirty.bits : ram.written.bits;
    if (marks[off >>> PAGE_SHIFT] !== ALL_BLOCKS) marks[off >>> PAGE_SHIFT] = ALL_BLOCKS;
  }

  /** Post-copy: blocks in the hook until the page is here. Called before any side effect. */
  private waitPresent(page: number): void {
    const bits = this.bus.ram.presence.bits;
    while (Atomics.load(bits, page) === 0) this.onAbsentPage(page);
  }

  private fault(cause: Cause, tval: number): void {
    this.excCause = cause;
    this.excTval = tval >>> 0;
    this.memStatus = Mem.Fault;
  }

  private mmioWrite(a: number, size: AccessSize, v: number): Mem {
    const bus = this.bus;
    bus.write(a >>> 0, size, v);
    if (bus.fault) {
      bus.fault = false;
      this.fault(Cause.StoreAccessFault, a);
      return Mem.Fault;
    }
    this.mmioWrote = true;
    return Mem.Mmio;
  }

  private faultStatus(cause: Cause, tval: number): Mem {
    this.fault(cause, tval);
    return Mem.Fault;
  }

  private illegal(inst: number): Mem {
    return this.faultStatus(Cause.IllegalInst, inst);
  }

  // ---- CSRs ----

  /** A CSR's value (uint32), or -1 when it does not exist or is not accessible. */
  csrRead(csr: number): number {
    switch (csr) {
      case Csr.Cycle:
      case Csr.Time:
      case Csr.Instret:
      case Csr.CycleH:
      case Csr.TimeH:
      case Csr.InstretH:
        if (this.priv !== Priv.Machine && ((this.mcounteren >>> (csr & 31)) & 1) === 0) return -1;
        switch (csr) {
          case Csr.Cycle:
            return this.cycle.lo32(this.instret);
          case Csr.CycleH:
            return this.cycle.hi32(this.instret);
          case Csr.Instret:
            return this.minstret.lo32(this.instret);
          case Csr.InstretH:
            return this.minstret.hi32(this.instret);
          case Csr.Time:
            return this.clock.ticks() % 4294967296 >>> 0;
          default:
            return Math.floor(this.clock.ticks() / 4294967296) >>> 0;
        }
      case Csr.Mcycle:
        return this.cycle.lo32(this.instret);
      case Csr.McycleH:
        return this.cycle.hi32(this.instret);
      case Csr.Minstret:
        return this.minstret.lo32(this.instret);
      case Csr.MinstretH:
        return this.minstret.hi32(this.instret);
      case Csr.Mvendorid:
      case Csr.Marchid:
      case Csr.Mimpid:
      case Csr.Mstatush:
        return 0;
      case Csr.Mhartid:
        return this.hartId;
      case Csr.Mstatus:
        return this.mstatus;
      case Csr.Misa:
        return MISA_RV32IMAU;
      case Csr.Mie:
        return this.mie;
      case Csr.Mtvec:
        return this.mtvec;
      case Csr.Mcounteren:
        return this.mcounteren;
      case Csr.Mcountinhibit:
        return this.mcountinhibit;
      case Csr.Mscratch:
        return this.mscratch;
      case Csr.Mepc:
        return this.mepc;
      case Csr.Mcause:
        return this.mcause;
      case Csr.Mtval:
        return this.mtval;
      case Csr.Mip:
        return this.mip;
      default:
        if (csr >= Csr.Pmpcfg0 && csr <= Csr.Pmpcfg3) {
          const c = this.pmpcfg;
          const i = (csr - Csr.Pmpcfg0) * 4;
          return (c[i]! | (c[i + 1]! << 8) | (c[i + 2]! << 16) | (c[i + 3]! << 24)) >>> 0;
        }
        if (csr >= Csr.Pmpaddr0 && csr <= Csr.Pmpaddr15) return this.pmpaddr[csr - Csr.Pmpaddr0]!;
        return -1;
    }
  }

  /** Writes an existing, writable CSR with WARL legalisation. `instret` must be current. */
  private csrWrite(csr: number, value: number): void {
    const v = value >>> 0;
    switch (csr) {
      case Csr.Mstatus: {
        // MPP is WARL: only M and U exist; anything else becomes U (as Spike legalises it).
        const mpp = (v & Mstatus.MPP) === Mstatus.MPP ? Mstatus.MPP : 0;
        this.mstatus = ((v & Mstatus.WRITABLE & ~Mstatus.MPP) | mpp) >>> 0;
        return;
      }
      case Csr.Mie:
        this.mie = v & Mip.ALL;
        return;
      case Csr.Mtvec:
        if ((v & 3) < 2) this.mtvec = v; // modes 2 and 3 are reserved: QEMU 7.2 ignores the write
        return;
      case Csr.Mcounteren:
        this.mcounteren = v;
        return;
      case Csr.Mcountinhibit:
        this.mcountinhibit = (v & ~2) >>> 0; // bit 1 (TM) is read-only zero
        this.cycle.setInhibited((v & 1) !== 0, this.instret);
        this.minstret.setInhibited((v & 4) !== 0, this.instret);
        return;
      case Csr.Mscratch:
        this.mscratch = v;
        return;
      case Csr.Mepc:
        this.mepc = (v & ~3) >>> 0; // IALIGN=32
        return;
      case Csr.Mcause:
        this.mcause = v;
        return;
      case Csr.Mtval:
        this.mtval = v;
        return;
      case Csr.Mcycle:
        this.cycle.writeLo(v, this.instret);
        return;
      case Csr.McycleH:
        this.cycle.writeHi(v, this.instret);
        return;
      case Csr.Minstret:
        this.minstret.writeLo(v, this.instret);
        return;
      case Csr.MinstretH:
        this.minstret.writeHi(v, this.instret);
        return;
      case Csr.Misa: // WARL, extensions cannot be switched off
      case Csr.Mstatush: // no MBE/SBE
      case Csr.Mip: // MSIP/MTIP/MEIP are driven by devices; no S-mode bits exist
        return;
      default:
        if (csr >= Csr.Pmpcfg0 && csr <= Csr.Pmpcfg3) {
          const c = this.pmpcfg;
          const base = (csr - Csr.Pmpcfg0) * 4;
          for (let k = 0; k < 4; k++) {
            if ((c[base + k]! & Pmp.LOCK) === 0) c[base + k] = (v >>> (8 * k)) & 0xff;
          }
          return;
        }
        if (csr >= Csr.Pmpaddr0 && csr <= Csr.Pmpaddr15) {
          const i = csr - Csr.Pmpaddr0;
          const c = this.pmpcfg;
          const locked = (c[i]! & Pmp.LOCK) !== 0 || (i < 15 && (c[i + 1]! & (Pmp.LOCK | Pmp.A_MASK)) === (Pmp.LOCK | Pmp.A_TOR));
          if (!locked) this.pmpaddr[i] = v;
        }
        return;
    }
  }

  // ---- traps ----

  /** mret: back to MPP with MIE = MPIE; returns the new pc. Clears the reservation, as QEMU does on every mode change. */
  private mret(): number {
    const ms = this.mstatus;
    const mpp = (ms & Mstatus.MPP) >>> Mstatus.MPP_SHIFT;
    let n = ms & ~(Mstatus.MIE | Mstatus.MPP);
    if ((ms & Mstatus.MPIE) !== 0) n |= Mstatus.MIE;
    n |= Mstatus.MPIE;
    if (mpp !== Priv.Machine) n &= ~Mstatus.MPRV;
    this.mstatus = n >>> 0;
    this.priv = mpp;
    this.resValid = false;
    this.pc = this.mepc;
    return this.mepc;
  }

  /** Enters the M-mode trap handler from this.pc. */
  private trap(cause: number, tval: number, interrupt = false): void {
    const ms = this.mstatus;
    this.mepc = (this.pc & ~3) >>> 0;
    this.mcause = (interrupt ? cause | INTERRUPT_FLAG : cause) >>> 0;
    this.mtval = tval >>> 0;
    let n = ms & ~(Mstatus.MIE | Mstatus.MPIE | Mstatus.MPP);
    if ((ms & Mstatus.MIE) !== 0) n |= Mstatus.MPIE;
    n |= this.priv << Mstatus.MPP_SHIFT;
    this.mstatus = n >>> 0;
    this.priv = Priv.Machine;
    // QEMU clears the reservation on every privilege-mode change, traps included (riscv_cpu_set_mode).
    this.resValid = false;
    const base = (this.mtvec & ~3) >>> 0;
    this.pc = interrupt && (this.mtvec & 3) === 1 ? (base + 4 * cause) >>> 0 : base;
  }

  /** Takes the highest-priority pending and enabled interrupt (MEI > MSI > MTI), if any. */
  private takeInterrupt(): boolean {
    const p = this.mip & this.mie;
    if (p === 0) return false;
    if (this.priv === Priv.Machine && (this.mstatus & Mstatus.MIE) === 0) return false;
    const cause = (p & Mip.MEIP) !== 0 ? Irq.MExternal : (p & Mip.MSIP) !== 0 ? Irq.MSoft : Irq.MTimer;
    this.trap(cause, 0, true);
    return true;
  }

  // ---- state ----

  saveState(w: StateWriter): void {
    w.i32s(this.x);
    w.u32(this.pc);
    w.u8(this.priv);
    w.f64(this.instret);
    w.u32(this.mstatus);
    w.u32(this.mie);
    w.u32(this.mip);
    w.u32(this.mtvec);
    w.u32(this.mscratch);
    w.u32(this.mepc);
    w.u32(this.mcause);
    w.u32(this.mtval);
    w.u32(this.mcounteren);
    w.u32(this.mcountinhibit);
    this.cycle.save(w);
    this.minstret.save(w);
    w.raw(this.pmpcfg);
    for (let i = 0; i < 16; i++) w.u32(this.pmpaddr[i]!);
    w.bool(this.resValid);
    w.i32(this.resAddr);
    w.i32(this.resValue);
  }

  /** Reads everything and validates it before changing anything: a bad state is refused whole. */
  restoreState(r: StateReader, version: number): void {
    if (version !== 1) r.fail(`unsupported cpu state version ${version} (this build reads version 1)`);
    const x = new Int32Array(32);
    r.i32sInto(x);
    const pc = r.u32();
    const priv = r.u8();
    if (priv !== Priv.Machine && priv !== Priv.User) r.fail(`privilege level ${priv} does not exist on this hart`);
    const instret = r.f64();
    if (!Number.isSafeInteger(instret) || instret < 0) r.fail(`instret ${instret} is not a count`);
    const mstatus = r.u32();
    const mpp = (mstatus & Mstatus.MPP) >>> Mstatus.MPP_SHIFT;
    if ((mstatus & ~Mstatus.WRITABLE) !== 0 || (mpp !== Priv.Machine && mpp !== Priv.User)) r.fail(`mstatus 0x${mstatus.toString(16)} has bits this hart cannot hold`);
    const mie = r.u32();
    const mip = r.u32();
    const mtvec = r.u32();
    const mscratch = r.u32();
    const mepc = r.u32();
    const mcause = r.u32();
    const mtval = r.u32();
    const mcounteren = r.u32();
    const mcountinhibit = r.u32();
    const cycle = Counter64.read(r);
    const minstret = Counter64.read(r);
    const pmpcfg = r.raw(16).slice();
    const pmpaddr = new Uint32Array(16);
    for (let i = 0; i < 16; i++) pmpaddr[i] = r.u32();
    const resValid = r.bool();
    const resAddr = r.i32();
    const resValue = r.i32();
    r.end();

    this.x.set(x);
    this.x[0] = 0;
    this.pc = pc;
    this.priv = priv;
    this.instret = instret;
    this.mstatus = mstatus;
    this.mie = mie & Mip.ALL;
    this.mip = mip & Mip.ALL;
    this.mtvec = (mtvec & 3) < 2 ? mtvec : mtvec & ~3;
    this.mscratch = mscratch;
    this.mepc = (mepc & ~3) >>> 0;
    this.mcause = mcause;
    this.mtval = mtval;
    this.mcounteren = mcounteren;
    this.mcountinhibit = (mcountinhibit & ~2) >>> 0;
    this.cycle.copyFrom(cycle);
    this.minstret.copyFrom(minstret);
    this.pmpcfg.set(pmpcfg);
    this.pmpaddr.set(pmpaddr);
    this.resValid = resValid;
    this.resAddr = resAddr;
    this.resValue = resValue;
    this.mmioWrote = false;
  }
}

/** New memory value of an AMO. */
function amoResult(f5: number, a: number, b: number): number {
  switch (f5) {
    case Amo.Swap:
      return b;
    case Amo.Add:
      return (a + b) | 0;
    case Amo.Xor:
      return a ^ b;
    case Amo.Or:
      return a | b;
    case Amo.And:
      return a & b;
    case Amo.Min:
      return a < b ? a : b;
    case Amo.Max:
      return a > b ? a : b;
    case Amo.Minu:
      return (a ^ U32_ORDER) < (b ^ U32_ORDER) ? a : b;
    default:
      return (a ^ U32_ORDER) > (b ^ U32_ORDER) ? a : b;
  }
}

/**
 * V8 compiles run()'s loop on the stack (OSR) during the first long call, before its exit and
 * slow paths have ever executed; those paths then lack type feedback and deoptimise on every
 * later call (measured: a deopt per run() call, ~40% slower). Running a scratch hart through
 * every path with short budgets first gives them feedback. Once per thread, about a millisecond.
 */
let warmedUp = false;

const WARM_UP_PROGRAM = [
  0x80000437, // lui s0, 0x80000
  0x40040413, // addi s0, s0, 0x400     (data)
  0x100004b7, // lui s1, 0x10000         (device)
  0x00300293, // addi t0, zero, 3
  0x00042303, // loop: lw t1, 0(s0)
  0x00241383, // lh t2, 2(s0)
  0x00245e03, // lhu t3, 2(s0)
  0x00140e03, // lb t3, 1(s0)
  0x00144e03, // lbu t3, 1(s0)
  0x00730e33, // add t3, t1, t2
  0x40730e33, // sub t3, t1, t2
  0x00731e33, // sll t3, t1, t2
  0x00732e33, // slt t3, t1, t2
  0x00733e33, // sltu t3, t1, t2
  0x00734e33, // xor t3, t1, t2
  0x00735e33, // srl t3, t1, t2
  0x40735e33, // sra t3, t1, t2
  0x00736e33, // or t3, t1, t2
  0x00737e33, // and t3, t1, t2
  0x02730e33, // mul t3, t1, t2
  0x02731e33, // mulh t3, t1, t2
  0x02732e33, // mulhsu t3, t1, t2
  0x02733e33, // mulhu t3, t1, t2
  0x02734e33, // div t3, t1, t2
  0x02735e33, // divu t3, t1, t2
  0x02736e33, // rem t3, t1, t2
  0x02737e33, // remu t3, t1, t2
  0xffb30e13, // addi t3, t1, -5
  0x00732e13, // slti t3, t1, 7
  0xfff33e13, // sltiu t3, t1, -1
  0x05534e13, // xori t3, t1, 85
  0x00f36e13, // ori t3, t1, 15
  0x7f037e13, // andi t3, t1, 2032
  0x00331e13, // slli t3, t1, 3
  0x00535e13, // srli t3, t1, 5
  0x40735e13, // srai t3, t1, 7
  0x12345eb7, // lui t4, 0x12345
  0x00000e97, // auipc t4, 0
  0x00642023, // sw t1, 0(s0)
  0x01c41223, // sh t3, 4(s0)
  0x01c40323, // sb t3, 6(s0)
  0x08742e2f, // amoswap.w t3, t2, (s0)
  0x00742e2f, // amoadd.w t3, t2, (s0)
  0x20742e2f, // amoxor.w t3, t2, (s0)
  0x60742e2f, // amoand.w t3, t2, (s0)
  0x40742e2f, // amoor.w t3, t2, (s0)
  0x80742e2f, // amomin.w t3, t2, (s0)
  0xa0742e2f, // amomax.w t3, t2, (s0)
  0xc0742e2f, // amominu.w t3, t2, (s0)
  0xe0742e2f, // amomaxu.w t3, t2, (s0)
  0x10042e2f, // lr.w t3, (s0)
  0x18642e2f, // sc.w t3, t1, (s0)
  0x0004ae03, // lw t3, 0(s1)            (MMIO)
  0x01c4a023, // sw t3, 0(s1)            (MMIO; may request exit)
  0x34031e73, // csrrw t3, mscratch, t1
  0x3403ae73, // csrrs t3, mscratch, t2
  0x3403be73, // csrrc t3, mscratch, t2
  0x3402de73, // csrrwi t3, mscratch, 5
  0x34016e73, // csrrsi t3, mscratch, 2
  0x3400fe73, // csrrci t3, mscratch, 1
  0x0ff0000f, // fence
  0x00730263, // beq t1, t2, +4
  0x00731263, // bne t1, t2, +4
  0x00734263, // blt t1, t2, +4
  0x00735263, // bge t1, t2, +4
  0x00736263, // bltu t1, t2, +4
  0x00737263, // bgeu t1, t2, +4
  0x008000ef, // jal ra, +8
  0x00000073, // ecall                   (skipped)
  0x00c08067, // jalr zero, 12(ra)
  0x00000073, // ecall                   (skipped)
  0xfff28293, // addi t0, t0, -1
  0xee0298e3, // bne t0, zero, loop
  0x00000073, // ecall                   (trap)
  0x10500073, // wfi                     (stop)
];
const WARM_UP_HANDLER = [
  0x34102ff3, // csrr t6, mepc
  0x004f8f93, // addi t6, t6, 4
  0x341f9073, // csrw mepc, t6
  0x30200073, // mret
];

function warmUp(): void {
  warmedUp = true;
  const ram = GuestRam.allocate(MIN_RAM_BYTES);
  ram.i32.set(WARM_UP_PROGRAM, 0);
  ram.i32.set(WARM_UP_HANDLER, 0x200 >>> 2);
  const bus = new Bus(ram);
  let exitOnWrite = false;
  bus.map(0x1000_0000, 0x100, {
    name: 'warm-up',
    read: () => 0,
    write: () => {
      if (exitOnWrite) bus.requestExit(0);
    },
  });
  const h = new Hart(bus, { ticks: () => 0 });
  for (let i = 0; i < 400; i++) {
    h.reset(RAM_BASE, 0, 0);
    h.mtvec = RAM_BASE + 0x200;
    h.dirtyLogOn = (i & 1) !== 0;
    h.presenceOn = (i & 2) !== 0;
    exitOnWrite = i % 3 === 0;
    bus.exitRequested = false;
    if (i % 5 === 0) {
      h.mie = Mip.MSIP;
      h.mstatus = Mstatus.MIE;
      h.setPending(Mip.MSIP, i % 10 === 0);
    }
    h.run(1 + (i % 7));
    h.run(200);
  }
}
