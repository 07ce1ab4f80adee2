import type { StateReader, StateWriter } from '../../state/codec.js';
import { AVAIL_F_NO_INTERRUPT, DescFlag, QUEUE_NUM_MAX } from './constants.js';
import type { GuestDma } from './guest-dma.js';

/** A malformed virtqueue (bad index, loop, address outside RAM ...): the device must be reset. */
export class VirtqueueError extends Error {
  constructor(readonly queue: number, message: string) {
    super(`virtqueue ${queue}: ${message}`);
    this.name = 'VirtqueueError';
  }
}

/**
 * One descriptor chain as the device sees it, with every buffer already checked to lie inside RAM.
 * Preallocated and refilled by SplitQueue.peek, so walking a chain allocates nothing.
 */
export class DescriptorChain {
  head = 0;
  count = 0;
  /** RAM offsets of the buffers. */
  readonly off = new Uint32Array(QUEUE_NUM_MAX);
  readonly len = new Uint32Array(QUEUE_NUM_MAX);
  /** 1 = device-writable, 0 = device-readable. */
  readonly writable = new Uint8Array(QUEUE_NUM_MAX);
  readableBytes = 0;
  writableBytes = 0;
}

/**
 * A split virtqueue (virtio 1.x §2.7): the driver's descriptor table and available ring, the
 * device's used ring. Every index, length and address is checked before use; anything wrong
 * throws VirtqueueError (the transport turns it into DEVICE_NEEDS_RESET).
 */
export class SplitQueue {
  readonly index: number;
  num = 0;
  ready = false;
  descLo = 0;
  descHi = 0;
  driverLo = 0;
  driverHi = 0;
  deviceLo = 0;
  deviceHi = 0;
  /** Next available-ring entry the device will take (free-running u16). */
  lastAvail = 0;
  /** The used ring's idx as the device last wrote it (free-running u16). */
  usedIdx = 0;
  // RAM offsets, resolved (and checked) on first use after the queue became ready.
  private resolved = false;
  private descOff = 0;
  private availOff = 0;
  private usedOff = 0;

  constructor(index: number) {
    this.index = index;
  }

  reset(): void {
    this.num = 0;
    this.ready = false;
    this.descLo = this.descHi = this.driverLo = this.driverHi = this.deviceLo = this.deviceHi = 0;
    this.lastAvail = 0;
    this.usedIdx = 0;
    this.resolved = false;
  }

  setReady(ready: boolean): void {
    this.ready = ready;
    this.resolved = false;
  }

  private fail(message: string): never {
    throw new VirtqueueError(this.index, message);
  }

  private resolve(dma: GuestDma): void {
    if (this.resolved) return;
    const num = this.num;
    if (num < 1 || num > QUEUE_NUM_MAX) this.fail(`queue size ${num} is not in 1..${QUEUE_NUM_MAX}`);
    const ram = dma.ram;
    const area = (lo: number, hi: number, bytes: number, align: number, what: string): number => {
      const off = hi === 0 ? ram.offsetOf(lo, bytes) : -1;
      if (off < 0) this.fail(`${what} at 0x${hi.toString(16)}_${(lo >>> 0).toString(16).padStart(8, '0')} (${bytes} bytes) is not inside RAM`);
      if ((lo & (align - 1)) !== 0) this.fail(`${what} at 0x${(lo >>> 0).toString(16)} is not ${align}-byte aligned`);
      return off;
    };
    this.descOff = area(this.descLo, this.descHi, 16 * num, 16, 'descriptor table');
    this.availOff = area(this.driverLo, this.driverHi, 6 + 2 * num, 2, 'available ring');
    this.usedOff = area(this.deviceLo, this.deviceHi, 6 + 8 * num, 4, 'used ring');
    this.resolved = true;
  }

  /** How many chains the driver has made available and the device has not taken. */
  pending(dma: GuestDma): number {
    if (!this.ready) return 0;
    this.resolve(dma);
    const n = (dma.u16(this.availOff + 2) - this.lastAvail) & 0xffff;
    if (n > this.num) this.fail(`available index moved ${n} entries ahead of the device, more than the queue size ${this.num}`);
    return n;
  }

  /**
   * Fills `chain` with the next available chain without taking it (`take` does), so a device that
   * cannot handle it now (a full ring) leaves it for later. Returns false when none is available.
   */
  peek(dma: GuestDma, chain: DescriptorChain): boolean {
    if (this.pending(dma) === 0) return false;
    const num = this.num;
    const head = dma.u16(this.availOff + 4 + 2 * (this.lastAvail % num));
    if (head >= num) this.fail(`available ring entry ${this.lastAvail % num} names descriptor ${head}, beyond the queue size ${num}`);
    const ram = dma.ram;
    const view = dma.view;
    let i = head;
    let n = 0;
    let readable = 0;
    let writable = 0;
    for (;;) {
      if (n === num) this.fail(`the chain starting at descriptor ${head} is longer than the queue size ${num} (a loop?)`);
      const d = this.descOff + 16 * i;
      dma.touch(d, 16);
      const addrLo = view.getUint32(d, true);
      const addrHi = view.getUint32(d + 4, true);
      const len = view.getUint32(d + 8, true);
      const flags = view.getUint16(d + 12, true);
      const next = view.getUint16(d + 14, true);
      if ((flags & DescFlag.Indirect) !== 0) this.fail(`descriptor ${i} is indirect, which was not negotiated`);
      const off = addrHi === 0 ? ram.offsetOf(addrLo, len) : -1;
      if (off < 0) this.fail(`descriptor ${i}: buffer at 0x${addrHi.toString(16)}_${addrLo.toString(16).padStart(8, '0')} (${len} bytes) is not inside RAM`);
      const w = (flags & DescFlag.Write) !== 0;
      if (!w && writable > 0) this.fail(`descriptor ${i} is device-readable but follows a device-writable one`);
      chain.off[n] = off;
      chain.len[n] = len;
      chain.writable[n] = w ? 1 : 0;
      if (w) writable += len;
      else readable += len;
      n++;
      if ((flags & DescFlag.Next) === 0) break;
      if (next >= num) this.fail(`descriptor ${i} chains to ${next}, beyond the queue size ${num}`);
      i = next;
    }
    chain.head = head;
    chain.count = n;
    chain.readableBytes = readable;
    chain.writableBytes = writable;
    return true;
  }

  /** Takes the chain `peek` returned. */
  take(): void {
    this.lastAvail = (this.lastAvail + 1) & 0xffff;
  }

  /** Returns a chain to the driver with `len` bytes written into it. */
  pushUsed(dma: GuestDma, head: number, len: number): void {
    this.resolve(dma);
    const slot = this.usedOff + 4 + 8 * (this.usedIdx % this.num);
    dma.setU32(slot, head);
    dma.setU32(slot + 4, len);
    this.usedIdx = (this.usedIdx + 1) & 0xffff;
    // The element is written before the index that publishes it.
    dma.setU16(this.usedOff + 2, this.usedIdx);
  }

  /** The driver asked not to be interrupted for used buffers (VIRTQ_AVAIL_F_NO_INTERRUPT). */
  interruptSuppressed(dma: GuestDma): boolean {
    this.resolve(dma);
    return (dma.u16(this.availOff) & AVAIL_F_NO_INTERRUPT) !== 0;
  }

  saveState(w: StateWriter): void {
    w.u16(this.num);
    w.bool(this.ready);
    w.u32(this.descLo);
    w.u32(this.descHi);
    w.u32(this.driverLo);
    w.u32(this.driverHi);
    w.u32(this.deviceLo);
    w.u32(this.deviceHi);
    w.u16(this.lastAvail);
    w.u16(this.usedIdx);
  }

  restoreState(r: StateReader): void {
    const num = r.u16();
    if (num > QUEUE_NUM_MAX) r.fail(`queue ${this.index} size ${num} exceeds ${QUEUE_NUM_MAX}`);
    this.num = num;
    this.ready = r.bool();
    this.descLo = r.u32();
    this.descHi = r.u32();
    this.driverLo = r.u32();
    this.driverHi = r.u32();
    this.deviceLo = r.u32();
    this.deviceHi = r.u32();
    this.lastAvail = r.u16();
    this.usedIdx = r.u16();
    this.resolved = false;
  }
}
