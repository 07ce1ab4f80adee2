/**
 * Trap causes (mcause values) of the RISC-V privileged spec that an M+U hart without S-mode,
 * MMU or C extension can raise. Interrupts carry INTERRUPT_FLAG in mcause.
 */
export const enum Cause {
  InstMisaligned = 0,
  InstAccessFault = 1,
  IllegalInst = 2,
  Breakpoint = 3,
  LoadMisaligned = 4,
  LoadAccessFault = 5,
  /** Also used for SC and AMOs. */
  StoreMisaligned = 6,
  /** Also used for SC and AMOs. */
  StoreAccessFault = 7,
  EcallFromU = 8,
  EcallFromM = 11,
}

/** Interrupt numbers: mcause low bits when INTERRUPT_FLAG is set, and bit positions in mip/mie. */
export const enum Irq {
  MSoft = 3,
  MTimer = 7,
  MExternal = 11,
}

/** mcause bit 31: the trap is an interrupt. */
export const INTERRUPT_FLAG = 0x8000_0000;
