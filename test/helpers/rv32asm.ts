/**
 * A tiny RV32IMA + Zicsr encoder for tests: each helper returns one instruction word (uint32).
 * Offsets of branches and jumps are byte offsets relative to the instruction itself.
 * Immediates are range-checked so a test cannot silently encode something else.
 */

/** ABI register names. */
export const enum Reg {
  zero = 0, ra = 1, sp = 2, gp = 3, tp = 4, t0 = 5, t1 = 6, t2 = 7, s0 = 8, s1 = 9,
  a0 = 10, a1 = 11, a2 = 12, a3 = 13, a4 = 14, a5 = 15, a6 = 16, a7 = 17,
  s2 = 18, s3 = 19, s4 = 20, s5 = 21, s6 = 22, s7 = 23, s8 = 24, s9 = 25, s10 = 26, s11 = 27,
  t3 = 28, t4 = 29, t5 = 30, t6 = 31,
}

function reg(r: number): number {
  if (!Number.isInteger(r) || r < 0 || r > 31) throw new RangeError(`register ${r}`);
  return r;
}

function signed(v: number, bits: number, what: string): number {
  const min = -(2 ** (bits - 1));
  const max = 2 ** (bits - 1) - 1;
  if (!Number.isInteger(v) || v < min || v > max) throw new RangeError(`${what} ${v} does not fit ${bits} signed bits`);
  return v;
}

export function rType(f7: number, rs2: number, rs1: number, f3: number, rd: number, opcode: number): number {
  return ((f7 << 25) | (reg(rs2) << 20) | (reg(rs1) << 15) | (f3 << 12) | (reg(rd) << 7) | opcode) >>> 0;
}

export function iType(imm: number, rs1: number, f3: number, rd: number, opcode: number): number {
  signed(imm, 12, 'I immediate');
  return (((imm & 0xfff) << 20) | (reg(rs1) << 15) | (f3 << 12) | (reg(rd) << 7) | opcode) >>> 0;
}

export function sType(imm: number, rs2: number, rs1: number, f3: number, opcode: number): number {
  signed(imm, 12, 'S immediate');
  return ((((imm >> 5) & 0x7f) << 25) | (reg(rs2) << 20) | (reg(rs1) << 15) | (f3 << 12) | ((imm & 0x1f) << 7) | opcode) >>> 0;
}

/** B-type; `off` must be even (bit 1 may be set: that is how tests make misaligned targets). */
export function bType(off: number, rs2: number, rs1: number, f3: number, opcode: number): number {
  signed(off, 13, 'branch offset');
  if (off & 1) throw new RangeError(`branch offset ${off} is odd`);
  return (
    ((((off >> 12) & 1) << 31) |
      (((off >> 5) & 0x3f) << 25) |
      (reg(rs2) << 20) |
      (reg(rs1) << 15) |
      (f3 << 12) |
      (((off >> 1) & 0xf) << 8) |
      (((off >> 11) & 1) << 7) |
      opcode) >>>
    0
  );
}

export function uType(imm20: number, rd: number, opcode: number): number {
  if (!Number.isInteger(imm20) || imm20 < 0 || imm20 > 0xfffff) throw new RangeError(`U immediate ${imm20}`);
  return ((imm20 << 12) | (reg(rd) << 7) | opcode) >>> 0;
}

export function jType(off: number, rd: number, opcode: number): number {
  signed(off, 21, 'jump offset');
  if (off & 1) throw new RangeError(`jump offset ${off} is odd`);
  return (
    ((((off >> 20) & 1) << 31) | (((off >> 1) & 0x3ff) << 21) | (((off >> 11) & 1) << 20) | (((off >> 12) & 0xff) << 12) | (reg(rd) << 7) | opcode) >>>
    0
  );
}

// RV32I
export const lui = (rd: number, imm20: number) => uType(imm20, rd, 0x37);
export const auipc = (rd: number, imm20: number) => uType(imm20, rd, 0x17);
export const jal = (rd: number, off: number) => jType(off, rd, 0x6f);
export const jalr = (rd: number, rs1: number, imm: number) => iType(imm, rs1, 0, rd, 0x67);
export const beq = (rs1: number, rs2: number, off: number) => bType(off, rs2, rs1, 0, 0x63);
export const bne = (rs1: number, rs2: number, off: number) => bType(off, rs2, rs1, 1, 0x63);
export const blt = (rs1: number, rs2: number, off: number) => bType(off, rs2, rs1, 4, 0x63);
export const bge = (rs1: number, rs2: number, off: number) => bType(off, rs2, rs1, 5, 0x63);
export const bltu = (rs1: number, rs2: number, off: number) => bType(off, rs2, rs1, 6, 0x63);
export const bgeu = (rs1: number, rs2: number, off: number) => bType(off, rs2, rs1, 7, 0x63);
export const lb = (rd: number, rs1: number, imm: number) => iType(imm, rs1, 0, rd, 0x03);
export const lh = (rd: number, rs1: number, imm: number) => iType(imm, rs1, 1, rd, 0x03);
export const lw = (rd: number, rs1: number, imm: number) => iType(imm, rs1, 2, rd, 0x03);
export const lbu = (rd: number, rs1: number, imm: number) => iType(imm, rs1, 4, rd, 0x03);
export const lhu = (rd: number, rs1: number, imm: number) => iType(imm, rs1, 5, rd, 0x03);
export const sb = (rs2: number, rs1: number, imm: number) => sType(imm, rs2, rs1, 0, 0x23);
export const sh = (rs2: number, rs1: number, imm: number) => sType(imm, rs2, rs1, 1, 0x23);
export const sw = (rs2: number, rs1: number, imm: number) => sType(imm, rs2, rs1, 2, 0x23);
export const addi = (rd: number, rs1: number, imm: number) => iType(imm, rs1, 0, rd, 0x13);
export const slti = (rd: number, rs1: number, imm: number) => iType(imm, rs1, 2, rd, 0x13);
export const sltiu = (rd: number, rs1: number, imm: number) => iType(imm, rs1, 3, rd, 0x13);
export const xori = (rd: number, rs1: number, imm: number) => iType(imm, rs1, 4, rd, 0x13);
export const ori = (rd: number, rs1: number, imm: number) => iType(imm, rs1, 6, rd, 0x13);
export const andi = (rd: number, rs1: number, imm: number) => iType(imm, rs1, 7, rd, 0x13);
function shamt(s: number): number {
  if (!Number.isInteger(s) || s < 0 || s > 31) throw new RangeError(`shift amount ${s}`);
  return s;
}
export const slli = (rd: number, rs1: number, s: number) => rType(0, shamt(s), rs1, 1, rd, 0x13);
export const srli = (rd: number, rs1: number, s: number) => rType(0, shamt(s), rs1, 5, rd, 0x13);
export const srai = (rd: number, rs1: number, s: number) => rType(0x20, shamt(s), rs1, 5, rd, 0x13);
export const add = (rd: number, rs1: number, rs2: number) => rType(0, rs2, rs1, 0, rd, 0x33);
export const sub = (rd: number, rs1: number, rs2: number) => rType(0x20, rs2, rs1, 0, rd, 0x33);
export const sll = (rd: number, rs1: number, rs2: number) => rType(0, rs2, rs1, 1, rd, 0x33);
export const slt = (rd: number, rs1: number, rs2: number) => rType(0, rs2, rs1, 2, rd, 0x33);
export const sltu = (rd: number, rs1: number, rs2: number) => rType(0, rs2, rs1, 3, rd, 0x33);
export const xor = (rd: number, rs1: number, rs2: number) => rType(0, rs2, rs1, 4, rd, 0x33);
export const srl = (rd: number, rs1: number, rs2: number) => rType(0, rs2, rs1, 5, rd, 0x33);
export const sra = (rd: number, rs1: number, rs2: number) => rType(0x20, rs2, rs1, 5, rd, 0x33);
export const or = (rd: number, rs1: number, rs2: number) => rType(0, rs2, rs1, 6, rd, 0x33);
export const and = (rd: number, rs1: number, rs2: number) => rType(0, rs2, rs1, 7, rd, 0x33);
export const fence = () => 0x0ff0000f;
export const fence_i = () => 0x0000100f;
export const ecall = () => 0x00000073;
export const ebreak = () => 0x00100073;

// M
export const mul = (rd: number, rs1: number, rs2: number) => rType(1, rs2, rs1, 0, rd, 0x33);
export const mulh = (rd: number, rs1: number, rs2: number) => rType(1, rs2, rs1, 1, rd, 0x33);
export const mulhsu = (rd: number, rs1: number, rs2: number) => rType(1, rs2, rs1, 2, rd, 0x33);
export const mulhu = (rd: number, rs1: number, rs2: number) => rType(1, rs2, rs1, 3, rd, 0x33);
export const div = (rd: number, rs1: number, rs2: number) => rType(1, rs2, rs1, 4, rd, 0x33);
export const divu = (rd: number, rs1: number, rs2: number) => rType(1, rs2, rs1, 5, rd, 0x33);
export const rem = (rd: number, rs1: number, rs2: number) => rType(1, rs2, rs1, 6, rd, 0x33);
export const remu = (rd: number, rs1: number, rs2: number) => rType(1, rs2, rs1, 7, rd, 0x33);

// A (aq/rl bits left 0)
const amo = (f5: number, rd: number, rs1: number, rs2: number) => rType(f5 << 2, rs2, rs1, 2, rd, 0x2f);
export const lr_w = (rd: number, rs1: number) => amo(0x02, rd, rs1, 0);
export const sc_w = (rd: number, rs1: number, rs2: number) => amo(0x03, rd, rs1, rs2);
export const amoswap_w = (rd: number, rs1: number, rs2: number) => amo(0x01, rd, rs1, rs2);
export const amoadd_w = (rd: number, rs1: number, rs2: number) => amo(0x00, rd, rs1, rs2);
export const amoxor_w = (rd: number, rs1: number, rs2: number) => amo(0x04, rd, rs1, rs2);
export const amoand_w = (rd: number, rs1: number, rs2: number) => amo(0x0c, rd, rs1, rs2);
export const amoor_w = (rd: number, rs1: number, rs2: number) => amo(0x08, rd, rs1, rs2);
export const amomin_w = (rd: number, rs1: number, rs2: number) => amo(0x10, rd, rs1, rs2);
export const amomax_w = (rd: number, rs1: number, rs2: number) => amo(0x14, rd, rs1, rs2);
export const amominu_w = (rd: number, rs1: number, rs2: number) => amo(0x18, rd, rs1, rs2);
export const amomaxu_w = (rd: number, rs1: number, rs2: number) => amo(0x1c, rd, rs1, rs2);

// Zicsr and privileged
function csrNum(csr: number): number {
  if (!Number.isInteger(csr) || csr < 0 || csr > 0xfff) throw new RangeError(`csr ${csr}`);
  return csr;
}
function uimm(v: number): number {
  if (!Number.isInteger(v) || v < 0 || v > 31) throw new RangeError(`csr immediate ${v}`);
  return v;
}
const csrOp = (f3: number, rd: number, csr: number, src: number) => ((csrNum(csr) << 20) | (src << 15) | (f3 << 12) | (reg(rd) << 7) | 0x73) >>> 0;
export const csrrw = (rd: number, csr: number, rs1: number) => csrOp(1, rd, csr, reg(rs1));
export const csrrs = (rd: number, csr: number, rs1: number) => csrOp(2, rd, csr, reg(rs1));
export const csrrc = (rd: number, csr: number, rs1: number) => csrOp(3, rd, csr, reg(rs1));
export const csrrwi = (rd: number, csr: number, imm: number) => csrOp(5, rd, csr, uimm(imm));
export const csrrsi = (rd: number, csr: number, imm: number) => csrOp(6, rd, csr, uimm(imm));
export const csrrci = (rd: number, csr: number, imm: number) => csrOp(7, rd, csr, uimm(imm));
export const csrr = (rd: number, csr: number) => csrrs(rd, csr, 0);
export const csrw = (csr: number, rs1: number) => csrrw(0, csr, rs1);
export const mret = () => 0x30200073;
export const wfi = () => 0x10500073;

// Pseudo-instructions
export const nop = () => addi(0, 0, 0);
export const mv = (rd: number, rs: number) => addi(rd, rs, 0);
export const j = (off: number) => jal(0, off);

/** Loads any 32-bit constant: always two words (lui + addi) so program layouts stay predictable. */
export function li(rd: number, value: number): [number, number] {
  const v = value | 0;
  const lo = (v << 20) >> 20;
  const hi = ((v - lo) >>> 12) & 0xfffff;
  return [lui(rd, hi), addi(rd, rd, lo)];
}
export const csrwi = (csr: number, imm: number) => csrrwi(0, csr, imm);
export const csrsi = (csr: number, imm: number) => csrrsi(0, csr, imm);
export const csrci = (csr: number, imm: number) => csrrci(0, csr, imm);
