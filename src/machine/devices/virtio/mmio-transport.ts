import type { AccessSize, IrqSink, MmioDevice } from '../../bus.js';
import type { StateReader, StateWriter, Stateful } from '../../state/codec.js';
import {
  FEATURE_VERSION_1_HI,
  Isr,
  QUEUE_NUM_MAX,
  Reg,
  Status,
  VIRTIO_MMIO_MAGIC,
  VIRTIO_MMIO_VERSION,
  VIRTIO_VENDOR_QEMU,
} from './constants.js';
import type { GuestDma } from './guest-dma.js';
import { SplitQueue, VirtqueueError } from './split-queue.js';

/** Reports a device problem (a malformed chain, a dropped packet) to whoever logs for the machine. */
export type DeviceLog = (level: 'warn' | 'info', message: string, fields: Record<string, string | number>) => void;

/** What a device behind the transport may use: its queues, guest RAM, interrupts. */
export interface VirtioTransport {
  readonly slot: number;
  readonly dma: GuestDma;
  queue(index: number): SplitQueue;
  /** DRIVER_OK is set and the device has not failed: queues may be processed. */
  readonly live: boolean;
  /** Whether the driver accepted feature `bit` (0..63). */
  driverHas(bit: number): boolean;
  /** Raises the used-buffer interrupt for a queue (unless the driver suppressed it). */
  usedBuffers(queue: number): void;
  /** The device changed its config space: bump the generation and raise the config interrupt. */
  configChanged(): void;
  readonly log: DeviceLog;
}

/** A virtio device type behind a virtio-mmio transport (vsock, balloon ...). */
export interface VirtioBackend extends Stateful {
  readonly deviceId: number;
  readonly queueCount: number;
  /** Offered feature bits: low word (bits 0..31) and high word (bits 32..63). */
  readonly featuresLo: number;
  readonly featuresHi: number;
  attach(t: VirtioTransport): void;
  readConfig(offset: number, size: AccessSize): number;
  writeConfig(offset: number, size: AccessSize, value: number): void;
  /** The driver notified a queue (or DRIVER_OK was just set). May throw VirtqueueError. */
  notify(queue: number): void;
  /** Called before every slice: host-side work (incoming packets, commands). May throw VirtqueueError. */
  poll(): void;
  /** The driver reset the device (Status = 0). */
  reset(): void;
}

/** Reads `size` bytes little-endian from a config byte array (0 beyond its end). */
export function readConfigBytes(config: Uint8Array, offset: number, size: AccessSize): number {
  let v = 0;
  for (let i = size - 1; i >= 0; i--) v = (v << 8) | (offset + i < config.length ? config[offset + i]! : 0);
  return v >>> 0;
}

/**
 * A virtio-mmio version 2 transport (virtio 1.x §4.2.2) in one of the virt board's slots, with or
 * without a device behind it. An empty slot reads magic/version/vendor and device id 0, as QEMU's.
 * Registers below the config space take 32-bit accesses only (others read 0 and are ignored, as
 * QEMU does); the config space takes 8-, 16- and 32-bit accesses.
 */
export class VirtioMmio implements MmioDevice, Stateful, VirtioTransport {
  readonly name: string;
  readonly stateId: string;
  readonly stateVersion = 1;
  readonly slot: number;
  readonly dma: GuestDma;
  readonly log: DeviceLog;
  private readonly backend: VirtioBackend | undefined;
  private readonly queues: SplitQueue[] = [];
  private readonly irq: IrqSink;
  private readonly irqLine: number;

  status = 0;
  deviceFeaturesSel = 0;
  driverFeaturesSel = 0;
  driverFeaturesLo = 0;
  driverFeaturesHi = 0;
  queueSel = 0;
  interruptStatus = 0;
  configGeneration = 0;
  private irqLevel = false;

  constructor(opts: { slot: number; irq: IrqSink; irqLine: number; dma: GuestDma; backend?: VirtioBackend; log?: DeviceLog }) {
    this.slot = opts.slot;
    this.name = `virtio-mmio${opts.slot}`;
    this.stateId = `virtio-mmio${opts.slot}`;
    this.irq = opts.irq;
    this.irqLine = opts.irqLine;
    this.dma = opts.dma;
    this.log = opts.log ?? (() => {});
    this.backend = opts.backend;
    if (this.backend !== undefined) {
      for (let i = 0; i < this.backend.queueCount; i++) this.queues.push(new SplitQueue(i));
      this.backend.attach(this);
    }
  }

  get device(): VirtioBackend | undefined {
    return this.backend;
  }

  queue(index: number): SplitQueue {
    return this.queues[index]!;
  }

  get live(): boolean {
    return (this.status & (Status.DriverOk | Status.DeviceNeedsReset | Status.Failed)) === Status.DriverOk;
  }

  get needsReset(): boolean {
    return (this.status & Status.DeviceNeedsReset) !== 0;
  }

  driverHas(bit: number): boolean {
    return bit < 32 ? ((this.driverFeaturesLo >>> bit) & 1) === 1 : ((this.driverFeaturesHi >>> (bit - 32)) & 1) === 1;
  }

  usedBuffers(queue: number): void {
    const q = this.queues[queue];
    if (q === undefined || q.interruptSuppressed(this.dma)) return;
    this.interruptStatus |= Isr.UsedBuffer;
    this.updateIrq();
  }

  configChanged(): void {
    this.configGeneration = (this.configGeneration + 1) >>> 0;
    if ((this.status & Status.DriverOk) === 0) return;
    this.interruptStatus |= Isr.ConfigChange;
    this.updateIrq();
  }

  private updateIrq(): void {
    const level = this.interruptStatus !== 0;
    if (level !== this.irqLevel) {
      this.irqLevel = level;
      this.irq.setIrq(this.irqLine, level);
    }
  }

  /** A malformed queue: set DEVICE_NEEDS_RESET, tell the driver, and stop the device until reset. */
  private broken(e: VirtqueueError): void {
    this.status |= Status.DeviceNeedsReset;
    this.log('warn', 'virtio device needs reset: malformed virtqueue', { slot: this.slot, queue: e.queue, reason: e.message });
    this.configChanged();
  }

  /** Runs device work; a malformed queue (or any device error) stops this device, never the vCPU. */
  private guarded(queue: number): void {
    try {
      if (queue < 0) this.backend!.poll();
      else this.backend!.notify(queue);
    } catch (e) {
      this.broken(e instanceof VirtqueueError ? e : new VirtqueueError(queue, `device error: ${e instanceof Error ? e.message : String(e)}`));
    }
  }

  /** Host-side device work before each slice (packets from the host, balloon commands). */
  poll(): void {
    if (this.backend !== undefined && this.live) this.guarded(-1);
  }

  read(offset: number, size: AccessSize): number {
    if (offset >= Reg.Config) {
      if (this.backend === undefined) return 0;
      return this.backend.readConfig(offset - Reg.Config, size);
    }
    if (size !== 4 || (offset & 3) !== 0) return 0;
    if (this.backend === undefined) {
      switch (offset) {
        case Reg.MagicValue: return VIRTIO_MMIO_MAGIC;
        case Reg.Version: return VIRTIO_MMIO_VERSION;
        case Reg.VendorId: return VIRTIO_VENDOR_QEMU;
        default: return 0;
      }
    }
    const b = this.backend;
    const q = this.queues[this.queueSel];
    switch (offset) {
      case Reg.MagicValue: return VIRTIO_MMIO_MAGIC;
      case Reg.Version: return VIRTIO_MMIO_VERSION;
      case Reg.DeviceId: return b.deviceId;
      case Reg.VendorId: return VIRTIO_VENDOR_QEMU;
      case Reg.DeviceFeatures:
        return this.deviceFeaturesSel === 0 ? b.featuresLo >>> 0 : this.deviceFeaturesSel === 1 ? (b.featuresHi | FEATURE_VERSION_1_HI) >>> 0 : 0;
      case Reg.QueueNumMax: return q !== undefined ? QUEUE_NUM_MAX : 0;
      case Reg.QueueNum: return q?.num ?? 0;
      case Reg.QueueReady: return q?.ready === true ? 1 : 0;
      case Reg.QueueDescLow: return q?.descLo ?? 0;
      case Reg.QueueDescHigh: return q?.descHi ?? 0;
      case Reg.QueueDriverLow: return q?.driverLo ?? 0;
      case Reg.QueueDriverHigh: return q?.driverHi ?? 0;
      case Reg.QueueDeviceLow: return q?.deviceLo ?? 0;
      case Reg.QueueDeviceHigh: return q?.deviceHi ?? 0;
      case Reg.InterruptStatus: return this.interruptStatus;
      case Reg.Status: return this.status;
      case Reg.ConfigGeneration: return this.configGeneration;
      default: return 0;
    }
  }

  write(offset: number, size: AccessSize, value: number): void {
    if (this.backend === undefined) return;
    if (offset >= Reg.Config) {
      this.backend.writeConfig(offset - Reg.Config, size, value);
      return;
    }
    if (size !== 4 || (offset & 3) !== 0) return;
    const v = value >>> 0;
    const q = this.queues[this.queueSel];
    // Queue registers are the driver's only while the queue is not live (§4.2.3.2).
    const qw = q !== undefined && !q.ready;
    switch (offset) {
      case Reg.DeviceFeaturesSel: this.deviceFeaturesSel = v; break;
      case Reg.DriverFeatures:
        // Features are fixed once FEATURES_OK is set.
        if ((this.status & Status.FeaturesOk) !== 0) break;
        if (this.driverFeaturesSel === 0) this.driverFeaturesLo = v;
        else if (this.driverFeaturesSel === 1) this.driverFeaturesHi = v;
        break;
      case Reg.DriverFeaturesSel: this.driverFeaturesSel = v; break;
      case Reg.QueueSel: this.queueSel = v; break;
      case Reg.QueueNum: if (qw) q.num = v <= QUEUE_NUM_MAX ? v : 0; break;
      case Reg.QueueReady: if (q !== undefined) q.setReady((v & 1) === 1); break;
      case Reg.QueueDescLow: if (qw) q.descLo = v; break;
      case Reg.QueueDescHigh: if (qw) q.descHi = v; break;
      case Reg.QueueDriverLow: if (qw) q.driverLo = v; break;
      case Reg.QueueDriverHigh: if (qw) q.driverHi = v; break;
      case Reg.QueueDeviceLow: if (qw) q.deviceLo = v; break;
      case Reg.QueueDeviceHigh: if (qw) q.deviceHi = v; break;
      case Reg.QueueNotify:
        if (this.live && v < this.queues.length && this.queues[v]!.ready) this.guarded(v);
        break;
      case Reg.InterruptAck:
        this.interruptStatus &= ~v;
        this.updateIrq();
        break;
      case Reg.Status: this.writeStatus(v & 0xff); break;
      default: break;
    }
  }

  private writeStatus(v: number): void {
    if (v === 0) {
      this.reset();
      return;
    }
    let next = v | (this.status & Status.DeviceNeedsReset);
    if ((v & Status.FeaturesOk) !== 0 && (this.status & Status.FeaturesOk) === 0 && !this.featuresAcceptable()) {
      // The driver re-reads Status and sees FEATURES_OK clear: the features were refused.
      next &= ~Status.FeaturesOk;
    }
    const wasOk = (this.status & Status.DriverOk) !== 0;
    this.status = next;
    if (!wasOk && this.live) {
      // Buffers the driver made available before DRIVER_OK are picked up now.
      for (let i = 0; i < this.queues.length && this.live; i++) if (this.queues[i]!.ready) this.guarded(i);
    }
  }

  /** virtio 1.x: VERSION_1 must be accepted, and nothing that was not offered. */
  private featuresAcceptable(): boolean {
    const b = this.backend!;
    if ((this.driverFeaturesHi & FEATURE_VERSION_1_HI) === 0) return false;
    return (this.driverFeaturesLo & ~b.featuresLo) === 0 && (this.driverFeaturesHi & ~(b.featuresHi | FEATURE_VERSION_1_HI)) === 0;
  }

  /** Device reset (Status written 0). */
  reset(): void {
    this.status = 0;
    this.deviceFeaturesSel = 0;
    this.driverFeaturesSel = 0;
    this.driverFeaturesLo = 0;
    this.driverFeaturesHi = 0;
    this.queueSel = 0;
    for (const q of this.queues) q.reset();
    this.interruptStatus = 0;
    this.updateIrq();
    this.backend?.reset();
  }

  saveState(w: StateWriter): void {
    w.u32(this.backend?.deviceId ?? 0);
    w.u8(this.status);
    w.u32(this.deviceFeaturesSel);
    w.u32(this.driverFeaturesSel);
    w.u32(this.driverFeaturesLo);
    w.u32(this.driverFeaturesHi);
    w.u32(this.queueSel);
    w.u8(this.interruptStatus);
    w.u32(this.configGeneration);
    w.u16(this.queues.length);
    for (const q of this.queues) q.saveState(w);
  }

  restoreState(r: StateReader, version: number): void {
    if (version !== 1) r.fail(`unsupported virtio-mmio state version ${version}`);
    const id = r.u32();
    const mine = this.backend?.deviceId ?? 0;
    if (id !== mine) r.fail(`the state is for virtio device id ${id}, this slot holds device id ${mine}`);
    this.status = r.u8();
    this.deviceFeaturesSel = r.u32();
    this.driverFeaturesSel = r.u32();
    this.driverFeaturesLo = r.u32();
    this.driverFeaturesHi = r.u32();
    this.queueSel = r.u32();
    const isr = r.u8();
    if ((isr & ~(Isr.UsedBuffer | Isr.ConfigChange)) !== 0) r.fail(`interrupt status 0x${isr.toString(16)} has unknown bits`);
    this.interruptStatus = isr;
    this.configGeneration = r.u32();
    const n = r.u16();
    if (n !== this.queues.length) r.fail(`the state has ${n} queues, the device has ${this.queues.length}`);
    for (const q of this.queues) q.restoreState(r);
    // The PLIC restores its own copy of the line level; only remember it here.
    this.irqLevel = this.interruptStatus !== 0;
  }
}
