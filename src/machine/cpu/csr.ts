/** CSR numbers this hart implements (RV32, machine + user modes, no S-mode). */
export const enum Csr {
  // Unprivileged counters (read-only; U-mode access gated by mcounteren)
  Cycle = 0xc00,
  Time = 0xc01,
  Instret = 0xc02,
  CycleH = 0xc80,
  TimeH = 0xc81,
  InstretH = 0xc82,
  // Machine information (read-only)
  Mvendorid = 0xf11,
  Marchid = 0xf12,
  Mimpid = 0xf13,
  Mhartid = 0xf14,
  // Machine trap setup
  Mstatus = 0x300,
  Misa = 0x301,
  Mie = 0x304,
  Mtvec = 0x305,
  Mcounteren = 0x306,
  Mstatush = 0x310,
  Mcountinhibit = 0x320,
  // Machine trap handling
  Mscratch = 0x340,
  Mepc = 0x341,
  Mcause = 0x342,
  Mtval = 0x343,
  Mip = 0x344,
  // Physical memory protection (stored, not enforced)
  Pmpcfg0 = 0x3a0,
  Pmpcfg3 = 0x3a3,
  Pmpaddr0 = 0x3b0,
  Pmpaddr15 = 0x3bf,
  // Machine counters
  Mcycle = 0xb00,
  Minstret = 0xb02,
  McycleH = 0xb80,
  MinstretH = 0xb82,
}

/** mstatus fields. */
export const enum Mstatus {
  MIE = 1 << 3,
  MPIE = 1 << 7,
  MPP_SHIFT = 11,
  MPP = 3 << 11,
  MPRV = 1 << 17,
  TW = 1 << 21,
  /** Bits a csr write can change: no S-mode (SIE/SPIE/SPP/SUM/MXR/TVM/TSR read 0), no F/V (FS/VS/SD read 0). */
  WRITABLE = MIE | MPIE | MPP | MPRV | TW,
}

/** mip/mie bits this hart has: machine software, timer, external. */
export const enum Mip {
  MSIP = 1 << 3,
  MTIP = 1 << 7,
  MEIP = 1 << 11,
  ALL = MSIP | MTIP | MEIP,
}

export const enum Priv {
  User = 0,
  Machine = 3,
}

/** misa: MXL=1 (RV32), extensions A, I, M, U. */
export const MISA_RV32IMAU = (1 << 30) | (1 << 0) | (1 << 8) | (1 << 12) | (1 << 20);

/** pmpcfg entry bits used for WARL locking. */
export const enum Pmp {
  LOCK = 0x80,
  A_MASK = 0x18,
  A_TOR = 0x08,
}
