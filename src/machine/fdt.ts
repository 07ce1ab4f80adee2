import {
  CLINT_BASE,
  CLINT_SIZE,
  PLIC_BASE,
  PLIC_SIZE,
  RAM_BASE,
  TEST_BASE,
  TEST_SIZE,
  TIMEBASE_HZ,
  UART0_BASE,
  UART0_IRQ,
  UART0_SIZE,
  VIRTIO_BASE,
  VIRTIO_COUNT,
  VIRTIO_IRQ,
  VIRTIO_SIZE,
} from './memory/layout.js';
import type { GuestRam } from './memory/ram.js';

/**
 * Flattened Device Tree (devicetree specification v0.4, DTB format version 17): a builder with
 * a small node/property API, a parser, and the tree of this board as QEMU's virt writes it.
 */

const FDT_MAGIC = 0xd00dfeed;
const FDT_BEGIN_NODE = 1;
const FDT_END_NODE = 2;
const FDT_PROP = 3;
const FDT_NOP = 4;
const FDT_END = 9;
const HEADER_SIZE = 40;
const FDT_VERSION = 17;
const FDT_LAST_COMP_VERSION = 16;

export class FdtFormatError extends Error {
  constructor(message: string) {
    super(`device tree: ${message}`);
    this.name = 'FdtFormatError';
  }
}

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: true });

/** One node: properties in insertion order (raw big-endian bytes) and child nodes. */
export class FdtNode {
  readonly props = new Map<string, Uint8Array>();
  readonly children: FdtNode[] = [];

  constructor(readonly name: string) {}

  /** Adds a child node (or returns the existing one of that name). */
  addChild(name: string): FdtNode {
    const existing = this.child(name);
    if (existing !== undefined) return existing;
    const n = new FdtNode(name);
    this.children.push(n);
    return n;
  }

  child(name: string): FdtNode | undefined {
    return this.children.find((c) => c.name === name);
  }

  /** Looks a node up by path relative to this node ("cpus/cpu@0", "/soc/serial@10000000"). */
  find(path: string): FdtNode | undefined {
    let node: FdtNode | undefined = this;
    for (const part of path.split('/')) {
      if (part === '') continue;
      node = node.child(part);
      if (node === undefined) return undefined;
    }
    return node;
  }

  set(name: string, value: Uint8Array): this {
    this.props.set(name, value);
    return this;
  }
  setEmpty(name: string): this {
    return this.set(name, new Uint8Array(0));
  }
  setString(name: string, value: string): this {
    return this.setStrings(name, [value]);
  }
  /** A string list: each string NUL-terminated, concatenated. */
  setStrings(name: string, values: readonly string[]): this {
    const parts = values.map((v) => utf8.encode(v));
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length + 1, 0));
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length + 1;
    }
    return this.set(name, out);
  }
  setU32(name: string, value: number): this {
    return this.setCells(name, [value]);
  }
  /** 32-bit big-endian cells. */
  setCells(name: string, cells: readonly number[]): this {
    const out = new Uint8Array(cells.length * 4);
    const dv = new DataView(out.buffer);
    cells.forEach((c, i) => dv.setUint32(i * 4, c >>> 0));
    return this.set(name, out);
  }
  /** One 64-bit value as two cells (values up to 2^53). */
  setU64(name: string, value: number): this {
    return this.setCells(name, [Math.floor(value / 0x1_0000_0000), value >>> 0]);
  }

  has(name: string): boolean {
    return this.props.has(name);
  }
  getBytes(name: string): Uint8Array | undefined {
    return this.props.get(name);
  }
  getCells(name: string): number[] | undefined {
    const b = this.props.get(name);
    if (b === undefined) return undefined;
    if (b.length % 4 !== 0) throw new FdtFormatError(`property '${name}' of node '${this.name}' is ${b.length} bytes, not a whole number of cells`);
    const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
    const out: number[] = [];
    for (let i = 0; i < b.length; i += 4) out.push(dv.getUint32(i));
    return out;
  }
  getU32(name: string): number | undefined {
    const c = this.getCells(name);
    if (c === undefined) return undefined;
    if (c.length !== 1) throw new FdtFormatError(`property '${name}' of node '${this.name}' has ${c.length} cells, expected 1`);
    return c[0];
  }
  getStrings(name: string): string[] | undefined {
    const b = this.props.get(name);
    if (b === undefined) return undefined;
    if (b.length === 0 || b[b.length - 1] !== 0) throw new FdtFormatError(`property '${name}' of node '${this.name}' is not a NUL-terminated string list`);
    return decodeUtf8(b.subarray(0, b.length - 1), `property '${name}' of node '${this.name}'`).split('\0');
  }
  getString(name: string): string | undefined {
    const s = this.getStrings(name);
    return s === undefined ? undefined : s.join('\0');
  }
}

export interface FdtMemReserve {
  readonly address: number;
  readonly size: number;
}

/** Serializes a tree into a packed DTB (version 17). */
export function buildFdt(root: FdtNode, opts: { bootCpuId?: number; memReserve?: readonly FdtMemReserve[] } = {}): Uint8Array {
  // Strings block, each name once.
  const strOffsets = new Map<string, number>();
  const strParts: Uint8Array[] = [];
  let strSize = 0;
  const nameOffset = (name: string): number => {
    let off = strOffsets.get(name);
    if (off === undefined) {
      off = strSize;
      const enc = utf8.encode(name);
      strParts.push(enc);
      strSize += enc.length + 1;
      strOffsets.set(name, off);
    }
    return off;
  };

  // Structure block size first, then one pass to write it.
  const structSize = (n: FdtNode): number => {
    let s = 4 + align4(utf8.encode(n.name).length + 1);
    for (const [name, v] of n.props) {
      nameOffset(name);
      s += 12 + align4(v.length);
    }
    for (const c of n.children) s += structSize(c);
    return s + 4;
  };
  const sSize = structSize(root) + 4; // + FDT_END
  const reserves = opts.memReserve ?? [];
  const rsvSize = (reserves.length + 1) * 16;
  const offRsv = HEADER_SIZE;
  const offStruct = offRsv + rsvSize;
  const offStrings = offStruct + sSize;
  const total = offStrings + strSize;

  const out = new Uint8Array(total);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, FDT_MAGIC);
  dv.setUint32(4, total);
  dv.setUint32(8, offStruct);
  dv.setUint32(12, offStrings);
  dv.setUint32(16, offRsv);
  dv.setUint32(20, FDT_VERSION);
  dv.setUint32(24, FDT_LAST_COMP_VERSION);
  dv.setUint32(28, opts.bootCpuId ?? 0);
  dv.setUint32(32, strSize);
  dv.setUint32(36, sSize);

  let at = offRsv;
  for (const r of reserves) {
    setU64(dv, at, r.address);
    setU64(dv, at + 8, r.size);
    at += 16;
  }
  at = offStruct;
  const writeNode = (n: FdtNode): void => {
    dv.setUint32(at, FDT_BEGIN_NODE);
    at += 4;
    const nm = utf8.encode(n.name);
    out.set(nm, at);
    at += align4(nm.length + 1);
    for (const [name, v] of n.props) {
      dv.setUint32(at, FDT_PROP);
      dv.setUint32(at + 4, v.length);
      dv.setUint32(at + 8, strOffsets.get(name)!);
      out.set(v, at + 12);
      at += 12 + align4(v.length);
    }
    for (const c of n.children) writeNode(c);
    dv.setUint32(at, FDT_END_NODE);
    at += 4;
  };
  writeNode(root);
  dv.setUint32(at, FDT_END);

  at = offStrings;
  for (const p of strParts) {
    out.set(p, at);
    at += p.length + 1;
  }
  return out;
}

export interface ParsedFdt {
  readonly root: FdtNode;
  readonly version: number;
  readonly bootCpuId: number;
  readonly memReserve: FdtMemReserve[];
  /** totalsize from the header. */
  readonly totalSize: number;
}

/** Parses a DTB (version 16 or later). Every offset is checked; a bad blob throws FdtFormatError. */
export function parseFdt(bytes: Uint8Array): ParsedFdt {
  if (bytes.length < HEADER_SIZE) throw new FdtFormatError(`blob of ${bytes.length} bytes is shorter than the 40-byte header`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = dv.getUint32(0);
  if (magic !== FDT_MAGIC) throw new FdtFormatError(`bad magic 0x${magic.toString(16)} (expected 0xd00dfeed)`);
  const totalSize = dv.getUint32(4);
  const offStruct = dv.getUint32(8);
  const offStrings = dv.getUint32(12);
  const offRsv = dv.getUint32(16);
  const version = dv.getUint32(20);
  const lastComp = dv.getUint32(24);
  const bootCpuId = dv.getUint32(28);
  const strSize = dv.getUint32(32);
  const structSize = dv.getUint32(36);
  if (version < 16 || lastComp > FDT_VERSION) throw new FdtFormatError(`unsupported version ${version} (last compatible ${lastComp})`);
  if (totalSize > bytes.length) throw new FdtFormatError(`header says ${totalSize} bytes but the blob has ${bytes.length}`);
  if (offStruct + structSize > totalSize || offStrings + strSize > totalSize || offRsv > totalSize) {
    throw new FdtFormatError(`block offsets/sizes (struct ${offStruct}+${structSize}, strings ${offStrings}+${strSize}, reserve ${offRsv}) exceed totalsize ${totalSize}`);
  }

  const memReserve: FdtMemReserve[] = [];
  for (let at = offRsv; ; at += 16) {
    if (at + 16 > totalSize) throw new FdtFormatError('memory reservation block is not terminated');
    const address = getU64(dv, at);
    const size = getU64(dv, at + 8);
    if (address === 0 && size === 0) break;
    memReserve.push({ address, size });
  }

  const structEnd = offStruct + structSize;
  let at = offStruct;
  const u32 = (): number => {
    if (at + 4 > structEnd) throw new FdtFormatError(`structure block truncated at offset ${at}`);
    const v = dv.getUint32(at);
    at += 4;
    return v;
  };
  /** The NUL-terminated string at `start` and its length in bytes (without the NUL). */
  let cstrLen = 0;
  const cstring = (start: number, end: number, what: string): string => {
    let e = start;
    while (e < end && bytes[e] !== 0) e++;
    if (e >= end) throw new FdtFormatError(`${what} at offset ${start} is not NUL-terminated`);
    cstrLen = e - start;
    return decodeUtf8(bytes.subarray(start, e), `${what} at offset ${start}`);
  };

  const stack: FdtNode[] = [];
  let root: FdtNode | undefined;
  for (;;) {
    const tok = u32();
    if (tok === FDT_BEGIN_NODE) {
      const name = cstring(at, structEnd, 'node name');
      at += align4(cstrLen + 1);
      const node = new FdtNode(name);
      const parent = stack[stack.length - 1];
      if (parent !== undefined) parent.children.push(node);
      else if (root === undefined) root = node;
      else throw new FdtFormatError('more than one root node');
      stack.push(node);
    } else if (tok === FDT_PROP) {
      const len = u32();
      const nameOff = u32();
      const node = stack[stack.length - 1];
      if (node === undefined) throw new FdtFormatError(`property outside any node at offset ${at - 12}`);
      if (at + len > structEnd) throw new FdtFormatError(`property value of ${len} bytes at offset ${at} runs past the structure block`);
      if (nameOff >= strSize) throw new FdtFormatError(`property name offset ${nameOff} is outside the strings block (${strSize} bytes)`);
      const name = cstring(offStrings + nameOff, offStrings + strSize, 'property name');
      node.props.set(name, bytes.slice(at, at + len));
      at += align4(len);
    } else if (tok === FDT_END_NODE) {
      if (stack.pop() === undefined) throw new FdtFormatError(`unbalanced end of node at offset ${at - 4}`);
    } else if (tok === FDT_NOP) {
      continue;
    } else if (tok === FDT_END) {
      break;
    } else {
      throw new FdtFormatError(`unknown token 0x${tok.toString(16)} at offset ${at - 4}`);
    }
  }
  if (root === undefined) throw new FdtFormatError('no root node');
  if (stack.length !== 0) throw new FdtFormatError(`${stack.length} node(s) not closed`);
  return { root, version, bootCpuId, memReserve, totalSize };
}

function decodeUtf8(b: Uint8Array, what: string): string {
  try {
    return utf8Decoder.decode(b);
  } catch {
    throw new FdtFormatError(`${what} is not valid UTF-8`);
  }
}

function align4(n: number): number {
  return (n + 3) & ~3;
}
function setU64(dv: DataView, at: number, v: number): void {
  dv.setUint32(at, Math.floor(v / 0x1_0000_0000));
  dv.setUint32(at + 4, v >>> 0);
}
function getU64(dv: DataView, at: number): number {
  return dv.getUint32(at) * 0x1_0000_0000 + dv.getUint32(at + 4);
}

// ---- this board ----

/** Phandles in the order QEMU's virt allocates them for one hart. */
export const enum Phandle {
  Cpu0 = 1,
  Cpu0Intc = 2,
  Plic = 3,
  Test = 4,
}

/** Interrupt numbers of the hart's local interrupt controller (mip bits). */
const IRQ_M_SOFT = 3;
const IRQ_M_TIMER = 7;
const IRQ_S_EXT = 9;
const IRQ_M_EXT = 11;

/** Sources of QEMU virt's PLIC (VIRT_IRQCHIP_NUM_SOURCES); riscv,ndev is one less (source 0 is reserved). */
export const PLIC_NUM_SOURCES = 96;
const UART_CLOCK_HZ = 3_686_400;
const FINISHER_PASS = 0x5555;
const FINISHER_RESET = 0x7777;

export interface BoardFdtOptions {
  readonly ramBytes: number;
  /** The kernel command line (QEMU's -append); omitted from /chosen when empty, as QEMU does. */
  readonly bootargs: string;
  /** How many virtio-mmio slots to describe (default all 8, as QEMU does). */
  readonly virtioSlots?: number;
}

/** The device tree of this board, as hw/riscv/virt.c create_fdt writes it for one rv32 hart. */
export function boardFdtTree(opts: BoardFdtOptions): FdtNode {
  const slots = opts.virtioSlots ?? VIRTIO_COUNT;
  if (!Number.isInteger(slots) || slots < 0 || slots > VIRTIO_COUNT) throw new RangeError(`virtioSlots must be 0..${VIRTIO_COUNT}, got ${slots}`);
  const hex = (n: number): string => n.toString(16);
  const root = new FdtNode('');
  root.setU32('#address-cells', 2).setU32('#size-cells', 2).setString('compatible', 'riscv-virtio').setString('model', 'riscv-virtio,qemu');

  const chosen = root.addChild('chosen');
  if (opts.bootargs !== '') chosen.setString('bootargs', opts.bootargs);
  chosen.setString('stdout-path', `/soc/serial@${hex(UART0_BASE)}`);

  root
    .addChild(`memory@${hex(RAM_BASE)}`)
    .setString('device_type', 'memory')
    .setCells('reg', [0, RAM_BASE, Math.floor(opts.ramBytes / 0x1_0000_0000), opts.ramBytes >>> 0]);

  const cpus = root.addChild('cpus');
  cpus.setU32('#address-cells', 1).setU32('#size-cells', 0).setU32('timebase-frequency', TIMEBASE_HZ);
  const cpu = cpus.addChild('cpu@0');
  cpu
    .setString('device_type', 'cpu')
    .setU32('reg', 0)
    .setString('status', 'okay')
    .setString('compatible', 'riscv')
    .setString('riscv,isa', 'rv32ima')
    .setString('mmu-type', 'riscv,none')
    .setU32('phandle', Phandle.Cpu0);
  cpu
    .addChild('interrupt-controller')
    .setU32('#interrupt-cells', 1)
    .setEmpty('interrupt-controller')
    .setString('compatible', 'riscv,cpu-intc')
    .setU32('phandle', Phandle.Cpu0Intc);
  cpus.addChild('cpu-map').addChild('cluster0').addChild('core0').setU32('cpu', Phandle.Cpu0);

  const soc = root.addChild('soc');
  soc.setU32('#address-cells', 2).setU32('#size-cells', 2).setString('compatible', 'simple-bus').setEmpty('ranges');

  soc
    .addChild(`clint@${hex(CLINT_BASE)}`)
    .setStrings('compatible', ['sifive,clint0', 'riscv,clint0'])
    .setCells('reg', [0, CLINT_BASE, 0, CLINT_SIZE])
    .setCells('interrupts-extended', [Phandle.Cpu0Intc, IRQ_M_SOFT, Phandle.Cpu0Intc, IRQ_M_TIMER]);

  soc
    .addChild(`plic@${hex(PLIC_BASE)}`)
    .setU32('#interrupt-cells', 1)
    .setU32('#address-cells', 0)
    .setStrings('compatible', ['sifive,plic-1.0.0', 'riscv,plic0'])
    .setEmpty('interrupt-controller')
    .setCells('interrupts-extended', [Phandle.Cpu0Intc, IRQ_M_EXT, Phandle.Cpu0Intc, IRQ_S_EXT])
    .setCells('reg', [0, PLIC_BASE, 0, PLIC_SIZE])
    .setU32('riscv,ndev', PLIC_NUM_SOURCES - 1)
    .setU32('phandle', Phandle.Plic);

  for (let i = 0; i < slots; i++) {
    const base = VIRTIO_BASE + i * VIRTIO_SIZE;
    soc
      .addChild(`virtio_mmio@${hex(base)}`)
      .setString('compatible', 'virtio,mmio')
      .setCells('reg', [0, base, 0, VIRTIO_SIZE])
      .setU32('interrupt-parent', Phandle.Plic)
      .setU32('interrupts', VIRTIO_IRQ + i);
  }

  soc
    .addChild(`test@${hex(TEST_BASE)}`)
    .setStrings('compatible', ['sifive,test1', 'sifive,test0', 'syscon'])
    .setCells('reg', [0, TEST_BASE, 0, TEST_SIZE])
    .setU32('phandle', Phandle.Test);
  root.addChild('reboot').setString('compatible', 'syscon-reboot').setU32('regmap', Phandle.Test).setU32('offset', 0).setU32('value', FINISHER_RESET);
  root.addChild('poweroff').setString('compatible', 'syscon-poweroff').setU32('regmap', Phandle.Test).setU32('offset', 0).setU32('value', FINISHER_PASS);

  soc
    .addChild(`serial@${hex(UART0_BASE)}`)
    .setString('compatible', 'ns16550a')
    .setCells('reg', [0, UART0_BASE, 0, UART0_SIZE])
    .setU32('clock-frequency', UART_CLOCK_HZ)
    .setU32('interrupt-parent', Phandle.Plic)
    .setU32('interrupts', UART0_IRQ);

  return root;
}

/** The DTB of this board. */
export function buildBoardFdt(opts: BoardFdtOptions): Uint8Array {
  return buildFdt(boardFdtTree(opts));
}

const MiB = 1024 * 1024;
const RV32_FDT_LIMIT = 3072 * MiB;

export class FdtPlacementError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FdtPlacementError';
  }
}

/**
 * Where the FDT goes in RAM, as QEMU's riscv_compute_fdt_addr for an RV32 hart: 2 MiB-aligned
 * below the lesser of the end of RAM and 3 GiB. With `imageHighAddr` (end of the loaded image,
 * exclusive) it refuses to overlap the image, as QEMU does.
 */
export function fdtAddress(ramBytes: number, fdtSize: number, imageHighAddr?: number): number {
  const ramEnd = RAM_BASE + ramBytes;
  const top = RAM_BASE < RV32_FDT_LIMIT ? Math.min(ramEnd, RV32_FDT_LIMIT) : ramEnd;
  const addr = Math.floor((top - fdtSize) / (2 * MiB)) * (2 * MiB);
  if (addr < RAM_BASE) {
    throw new FdtPlacementError(`not enough RAM to place the ${fdtSize}-byte device tree: ${ramBytes} bytes of RAM leave no 2 MiB-aligned slot below 0x${top.toString(16)}`);
  }
  if (imageHighAddr !== undefined && addr < imageHighAddr) {
    throw new FdtPlacementError(
      `not enough RAM to place the device tree after the image: it would go at 0x${addr.toString(16)}, but the image ends at 0x${imageHighAddr.toString(16)}; give the VM more RAM`,
    );
  }
  return addr;
}

/** Copies a DTB into RAM at fdtAddress and returns that address (the boot a1). */
export function placeFdt(ram: GuestRam, dtb: Uint8Array, imageHighAddr?: number): number {
  const addr = fdtAddress(ram.bytes, dtb.length, imageHighAddr);
  const off = addr - RAM_BASE;
  ram.u8.set(dtb, off);
  ram.dirty.markRange(off, dtb.length);
  ram.markWritten(off, dtb.length);
  return addr;
}
