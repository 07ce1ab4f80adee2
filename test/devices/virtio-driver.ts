// A tiny virtio-mmio driver for tests: lays out split virtqueues in guest RAM from hand-made
// descriptors and talks to a transport's registers (directly, or recorded as a script a guest runs).
import { RAM_BASE, VIRTIO_BASE, VIRTIO_SIZE } from '../../src/machine/memory/layout.js';
import type { GuestRam } from '../../src/machine/memory/ram.js';
import type { Machine } from '../../src/machine/machine.js';

export const R = {
  Magic: 0x000, Version: 0x004, DeviceId: 0x008, VendorId: 0x00c,
  DeviceFeatures: 0x010, DeviceFeaturesSel: 0x014, DriverFeatures: 0x020, DriverFeaturesSel: 0x024,
  QueueSel: 0x030, QueueNumMax: 0x034, QueueNum: 0x038, QueueReady: 0x044, QueueNotify: 0x050,
  InterruptStatus: 0x060, InterruptAck: 0x064, Status: 0x070,
  QueueDescLow: 0x080, QueueDescHigh: 0x084, QueueDriverLow: 0x090, QueueDriverHigh: 0x094,
  QueueDeviceLow: 0x0a0, QueueDeviceHigh: 0x0a4, ConfigGeneration: 0x0fc, Config: 0x100,
} as const;

export const ACK = 1, DRIVER = 2, DRIVER_OK = 4, FEATURES_OK = 8, NEEDS_RESET = 0x40;
export const F_NEXT = 1, F_WRITE = 2, F_INDIRECT = 4;

/** Register access to one slot. */
export interface MmioPort {
  read(off: number, size?: 1 | 2 | 4): number;
  write(off: number, v: number, size?: 1 | 2 | 4): void;
}

/** Registers through the machine's bus, as the hart would reach them. */
export function busPort(m: Machine, slot: number): MmioPort {
  const base = VIRTIO_BASE + slot * VIRTIO_SIZE;
  return {
    read: (off, size = 4) => {
      const v = m.bus.read(base + off, size);
      if (m.bus.fault) throw new Error(`bus fault reading 0x${(base + off).toString(16)}`);
      return v;
    },
    write: (off, v, size = 4) => {
      m.bus.write(base + off, size, v);
      if (m.bus.fault) throw new Error(`bus fault writing 0x${(base + off).toString(16)}`);
    },
  };
}

/** Records register writes as (address, value) pairs for a guest to replay; reads are not possible. */
export class ScriptPort implements MmioPort {
  readonly writes: Array<[number, number]> = [];
  constructor(private readonly slot: number) {}
  read(): number {
    throw new Error('a script cannot read registers');
  }
  write(off: number, v: number): void {
    this.writes.push([VIRTIO_BASE + this.slot * VIRTIO_SIZE + off, v >>> 0]);
  }
}

export interface QueueLayout {
  readonly num: number;
  readonly desc: number;
  readonly avail: number;
  readonly used: number;
  /** Next free descriptor (descriptors are handed out round-robin). */
  nextDesc: number;
  availIdx: number;
}

export interface Buf {
  /** Guest-physical address (allocated when absent). */
  addr?: number;
  /** Bytes to place there (for a readable buffer). */
  data?: Uint8Array;
  /** Length (defaults to data.length). */
  len?: number;
  write?: boolean;
}

export class TestDriver {
  readonly queues = new Map<number, QueueLayout>();
  private next: number;
  private readonly dv: DataView;

  constructor(readonly ram: GuestRam, readonly mmio: MmioPort, heapStart = RAM_BASE + 0x10_0000) {
    this.next = heapStart;
    this.dv = new DataView(ram.buffer);
  }

  alloc(bytes: number, align = 16): number {
    this.next = Math.ceil(this.next / align) * align;
    const a = this.next;
    this.next += bytes;
    return a;
  }

  off(addr: number): number {
    return addr - RAM_BASE;
  }
  u16(addr: number): number {
    return this.dv.getUint16(this.off(addr), true);
  }
  u32(addr: number): number {
    return this.dv.getUint32(this.off(addr), true);
  }
  setU16(addr: number, v: number): void {
    this.dv.setUint16(this.off(addr), v, true);
  }
  setU32(addr: number, v: number): void {
    this.dv.setUint32(this.off(addr), v >>> 0, true);
  }
  bytes(addr: number, len: number): Uint8Array {
    return this.ram.u8.slice(this.off(addr), this.off(addr) + len);
  }

  /** ACKNOWLEDGE, DRIVER, features, FEATURES_OK. Returns whether the device kept FEATURES_OK (not checked for scripts). */
  negotiate(lo = 0, hi = 1): boolean {
    this.mmio.write(R.Status, 0);
    this.mmio.write(R.Status, ACK);
    this.mmio.write(R.Status, ACK | DRIVER);
    this.mmio.write(R.DriverFeaturesSel, 0);
    this.mmio.write(R.DriverFeatures, lo);
    this.mmio.write(R.DriverFeaturesSel, 1);
    this.mmio.write(R.DriverFeatures, hi);
    this.mmio.write(R.Status, ACK | DRIVER | FEATURES_OK);
    if (this.mmio instanceof ScriptPort) return true;
    return (this.mmio.read(R.Status) & FEATURES_OK) !== 0;
  }

  setupQueue(q: number, num: number): QueueLayout {
    const desc = this.alloc(16 * num, 16);
    const avail = this.alloc(6 + 2 * num, 2);
    const used = this.alloc(6 + 8 * num, 4);
    this.ram.u8.fill(0, this.off(desc), this.off(used) + 6 + 8 * num);
    const m = this.mmio;
    m.write(R.QueueSel, q);
    m.write(R.QueueNum, num);
    m.write(R.QueueDescLow, desc);
    m.write(R.QueueDescHigh, 0);
    m.write(R.QueueDriverLow, avail);
    m.write(R.QueueDriverHigh, 0);
    m.write(R.QueueDeviceLow, used);
    m.write(R.QueueDeviceHigh, 0);
    m.write(R.QueueReady, 1);
    const l: QueueLayout = { num, desc, avail, used, nextDesc: 0, availIdx: 0 };
    this.queues.set(q, l);
    return l;
  }

  driverOk(): void {
    this.mmio.write(R.Status, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
  }

  /** Writes one descriptor. */
  setDesc(l: QueueLayout, i: number, addr: number, len: number, flags: number, next: number, addrHi = 0): void {
    const d = l.desc + 16 * i;
    this.setU32(d, addr);
    this.setU32(d + 4, addrHi);
    this.setU32(d + 8, len);
    this.setU16(d + 12, flags);
    this.setU16(d + 14, next);
  }

  /** Publishes `head` in the available ring. */
  publish(l: QueueLayout, head: number): void {
    this.setU16(l.avail + 4 + 2 * (l.availIdx % l.num), head);
    l.availIdx = (l.availIdx + 1) & 0xffff;
    this.setU16(l.avail + 2, l.availIdx);
  }

  /** Builds a chain from `bufs` and makes it available; returns the head and each buffer's address. */
  add(q: number, bufs: Buf[]): { head: number; addrs: number[] } {
    const l = this.queues.get(q)!;
    const ids = bufs.map(() => {
      const i = l.nextDesc;
      l.nextDesc = (l.nextDesc + 1) % l.num;
      return i;
    });
    const addrs: number[] = [];
    bufs.forEach((b, k) => {
      const len = b.len ?? b.data?.length ?? 0;
      const addr = b.addr ?? this.alloc(Math.max(len, 1), 8);
      if (b.data) this.ram.u8.set(b.data, this.off(addr));
      addrs.push(addr);
      const last = k === bufs.length - 1;
      this.setDesc(l, ids[k]!, addr, len, (last ? 0 : F_NEXT) | (b.write ? F_WRITE : 0), last ? 0 : ids[k + 1]!);
    });
    this.publish(l, ids[0]!);
    return { head: ids[0]!, addrs };
  }

  notify(q: number): void {
    this.mmio.write(R.QueueNotify, q);
  }

  usedIdx(q: number): number {
    return this.u16(this.queues.get(q)!.used + 2);
  }

  usedElem(q: number, i: number): { id: number; len: number } {
    const l = this.queues.get(q)!;
    const e = l.used + 4 + 8 * (i % l.num);
    return { id: this.u32(e), len: this.u32(e + 4) };
  }
}
