import { RAM_BASE } from './memory/layout.js';
import type { GuestRam } from './memory/ram.js';

/**
 * Loads a guest image into RAM the way QEMU's `-kernel` does with `-bios none`: an ELF32
 * RISC-V executable by its PT_LOAD segments (at their physical addresses), or a raw binary at
 * the start of RAM. Everything is validated before the first byte is copied.
 */

/** How to read an image: 'auto' = ELF if it has the ELF magic, raw if the name ends in .bin. */
export type ImageFormat = 'auto' | 'elf' | 'raw';
export type LoadedFormat = 'elf' | 'raw';

export interface LoadOptions {
  readonly format?: ImageFormat;
  /** File name, for format detection (.bin = raw) and error messages. */
  readonly name?: string;
}

export interface LoadedImage {
  readonly entry: number;
  /** Lowest guest-physical address written. */
  readonly lowAddr: number;
  /** One past the highest guest-physical address written (where the image ends). */
  readonly highAddr: number;
  readonly format: LoadedFormat;
}

/** A guest image that cannot be loaded; the message says what is wrong with which file. */
export class ImageError extends Error {
  constructor(
    readonly file: string,
    readonly reason: string,
  ) {
    super(`${file}: ${reason}`);
    this.name = 'ImageError';
  }
}

const ELF_MAGIC = 0x464c457f; // "\x7fELF" read little-endian
const ELFCLASS32 = 1;
const ELFCLASS64 = 2;
const ELFDATA2LSB = 1;
const ELFDATA2MSB = 2;
const ET_EXEC = 2;
const EM_RISCV = 243;
const PT_LOAD = 1;
const PF_X = 1;
const EHDR32_SIZE = 52;
const PHDR32_SIZE = 32;
const PN_XNUM = 0xffff;
const ADDRESS_SPACE_END = 0x1_0000_0000;

const MACHINES: Record<number, string> = {
  0: 'no machine (EM_NONE)',
  2: 'SPARC',
  3: 'x86 (i386)',
  4: 'Motorola 68000',
  8: 'MIPS',
  18: 'SPARC32+',
  20: 'PowerPC',
  21: 'PowerPC 64',
  22: 'IBM S/390',
  40: 'ARM (32-bit)',
  42: 'SuperH',
  43: 'SPARC V9',
  50: 'IA-64',
  62: 'x86-64',
  83: 'Atmel AVR',
  92: 'OpenRISC',
  94: 'Xtensa',
  105: 'TI MSP430',
  164: 'Hexagon',
  183: 'AArch64',
  243: 'RISC-V',
  247: 'eBPF',
  258: 'LoongArch',
};

const ELF_TYPES: Record<number, string> = {
  0: 'ET_NONE, no file type',
  1: 'ET_REL, a relocatable object: link it into an executable first',
  3: 'ET_DYN, a shared object or position-independent executable: link with -static -no-pie at a fixed address',
  4: 'ET_CORE, a core dump',
};

const hex = (n: number): string => `0x${n.toString(16)}`;

interface Segment {
  readonly index: number;
  readonly offset: number;
  readonly paddr: number;
  readonly vaddr: number;
  readonly filesz: number;
  readonly memsz: number;
  readonly flags: number;
}

export function loadImage(bytes: Uint8Array, ram: GuestRam, opts: LoadOptions = {}): LoadedImage {
  const file = opts.name ?? '<image>';
  const format = opts.format ?? 'auto';
  if (bytes.length === 0) throw new ImageError(file, 'the file is empty (0 bytes)');
  const isElf = bytes.length >= 4 && readU32(bytes, 0) === ELF_MAGIC;

  if (format === 'raw') return loadRaw(bytes, ram, file);
  if (format === 'elf' || isElf) {
    if (!isElf) throw new ImageError(file, notElfMessage(bytes));
    return loadElf(bytes, ram, file);
  }
  if (/\.bin$/i.test(file)) return loadRaw(bytes, ram, file);
  throw new ImageError(file, `${notElfMessage(bytes)}; to load a raw binary at ${hex(RAM_BASE)} (entry there too), give it a .bin name or ask for the raw format`);
}

function notElfMessage(bytes: Uint8Array): string {
  const head = Array.from(bytes.subarray(0, 4), (b) => b.toString(16).padStart(2, '0')).join(' ');
  return `not an ELF file: it starts with ${head}, not the ELF magic 7f 45 4c 46`;
}

function loadRaw(bytes: Uint8Array, ram: GuestRam, file: string): LoadedImage {
  if (bytes.length > ram.bytes) {
    throw new ImageError(file, `the raw image of ${bytes.length} bytes does not fit in the configured RAM of ${ram.bytes} bytes (${describeSize(ram.bytes)}) at ${hex(RAM_BASE)}`);
  }
  ram.u8.set(bytes, 0);
  ram.dirty.markRange(0, bytes.length);
  ram.markWritten(0, bytes.length);
  return { entry: RAM_BASE, lowAddr: RAM_BASE, highAddr: RAM_BASE + bytes.length, format: 'raw' };
}

function loadElf(bytes: Uint8Array, ram: GuestRam, file: string): LoadedImage {
  const len = bytes.length;
  if (len < 6) throw new ImageError(file, `truncated ELF header: the file is ${len} bytes, an ELF32 header needs ${EHDR32_SIZE}`);
  const cls = bytes[4]!;
  const data = bytes[5]!;
  if (cls === ELFCLASS64) throw new ImageError(file, 'tern runs RV32 images; this is ELF64 (build it for rv32, e.g. -march=rv32ima -mabi=ilp32)');
  if (cls !== ELFCLASS32) throw new ImageError(file, `invalid ELF class ${cls} (expected 1, ELFCLASS32)`);
  if (data === ELFDATA2MSB) throw new ImageError(file, 'the ELF file is big-endian; RISC-V images are little-endian');
  if (data !== ELFDATA2LSB) throw new ImageError(file, `invalid ELF data encoding ${data} (expected 1, little-endian)`);
  if (len < EHDR32_SIZE) throw new ImageError(file, `truncated ELF header: the file is ${len} bytes, an ELF32 header needs ${EHDR32_SIZE}`);

  const type = readU16(bytes, 16);
  const machine = readU16(bytes, 18);
  const entryV = readU32(bytes, 24);
  const phoff = readU32(bytes, 28);
  const phentsize = readU16(bytes, 42);
  const phnum = readU16(bytes, 44);

  if (machine !== EM_RISCV) {
    const what = MACHINES[machine] ?? 'an unknown machine';
    throw new ImageError(file, `the ELF file is built for ${what} (e_machine ${machine}), not RISC-V (e_machine ${EM_RISCV})`);
  }
  if (type !== ET_EXEC) {
    throw new ImageError(file, `the ELF file is not an executable: e_type ${type} (${ELF_TYPES[type] ?? 'unknown type'}); tern needs ET_EXEC (2)`);
  }
  if (phnum === 0) throw new ImageError(file, 'the ELF file has no program headers, so nothing to load');
  if (phnum === PN_XNUM) throw new ImageError(file, 'the ELF file has 65535 or more program headers (PN_XNUM), which tern does not support');
  if (phentsize !== PHDR32_SIZE) throw new ImageError(file, `program header entry size is ${phentsize} bytes, ELF32 needs ${PHDR32_SIZE}`);
  const phEnd = phoff + phnum * PHDR32_SIZE;
  if (phEnd > len) {
    throw new ImageError(file, `truncated program headers: ${phnum} entries of ${PHDR32_SIZE} bytes at offset ${phoff} end at ${phEnd}, but the file is ${len} bytes`);
  }

  const ramEnd = RAM_BASE + ram.bytes;
  const segs: Segment[] = [];
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * PHDR32_SIZE;
    if (readU32(bytes, at) !== PT_LOAD) continue;
    const s: Segment = {
      index: i,
      offset: readU32(bytes, at + 4),
      vaddr: readU32(bytes, at + 8),
      paddr: readU32(bytes, at + 12),
      filesz: readU32(bytes, at + 16),
      memsz: readU32(bytes, at + 20),
      flags: readU32(bytes, at + 24),
    };
    const label = `segment ${i} (PT_LOAD at ${hex(s.paddr)}, ${s.memsz} bytes)`;
    if (s.filesz > s.memsz) throw new ImageError(file, `${label} has a file size of ${s.filesz} bytes, larger than its memory size of ${s.memsz}`);
    if (s.offset + s.filesz > len) {
      throw new ImageError(file, `truncated ${label}: its ${s.filesz} file bytes at offset ${s.offset} end at ${s.offset + s.filesz}, but the file is ${len} bytes`);
    }
    if (s.memsz === 0) continue;
    const end = s.paddr + s.memsz;
    if (s.paddr < RAM_BASE || end > ADDRESS_SPACE_END) {
      throw new ImageError(file, `${label} spans ${hex(s.paddr)}..${hex(end)}, outside RAM (RAM starts at ${hex(RAM_BASE)}); link the image for the virt board's RAM`);
    }
    if (end > ramEnd) {
      throw new ImageError(
        file,
        `${label} spans ${hex(s.paddr)}..${hex(end)} and does not fit in the configured RAM of ${ram.bytes} bytes (${describeSize(ram.bytes)}, ${hex(RAM_BASE)}..${hex(ramEnd)}); it needs at least ${describeSize(end - RAM_BASE)}`,
      );
    }
    segs.push(s);
  }
  if (segs.length === 0) throw new ImageError(file, 'the ELF file has no PT_LOAD segment with contents, so nothing to load');

  const sorted = [...segs].sort((a, b) => a.paddr - b.paddr);
  for (let i = 1; i < sorted.length; i++) {
    const a = sorted[i - 1]!;
    const b = sorted[i]!;
    if (b.paddr < a.paddr + a.memsz) {
      throw new ImageError(file, `segments ${a.index} (${hex(a.paddr)}..${hex(a.paddr + a.memsz)}) and ${b.index} (${hex(b.paddr)}..${hex(b.paddr + b.memsz)}) overlap`);
    }
  }

  // Entry from the header; if linked with vaddr != paddr, translate it as QEMU's ELF loader does.
  let entry = entryV;
  for (const s of segs) {
    if (s.vaddr !== s.paddr && (s.flags & PF_X) !== 0 && entryV >= s.vaddr && entryV < s.vaddr + s.filesz) {
      entry = (entryV - s.vaddr + s.paddr) >>> 0;
      break;
    }
  }
  if (entry < RAM_BASE || entry >= ramEnd) {
    throw new ImageError(file, `the entry point ${hex(entry)} is outside RAM (${hex(RAM_BASE)}..${hex(ramEnd)})`);
  }

  let low = ADDRESS_SPACE_END;
  let high = 0;
  for (const s of segs) {
    const off = s.paddr - RAM_BASE;
    ram.u8.set(bytes.subarray(s.offset, s.offset + s.filesz), off);
    ram.u8.fill(0, off + s.filesz, off + s.memsz);
    ram.dirty.markRange(off, s.memsz);
    ram.markWritten(off, s.memsz);
    low = Math.min(low, s.paddr);
    high = Math.max(high, s.paddr + s.memsz);
  }
  return { entry, lowAddr: low, highAddr: high, format: 'elf' };
}

function describeSize(n: number): string {
  const MiB = 1024 * 1024;
  return n % MiB === 0 ? `${n / MiB} MiB` : `${(n / MiB).toFixed(2)} MiB`;
}

function readU16(b: Uint8Array, at: number): number {
  return b[at]! | (b[at + 1]! << 8);
}
function readU32(b: Uint8Array, at: number): number {
  return (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0;
}
