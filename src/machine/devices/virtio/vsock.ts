import type { AccessSize } from '../../bus.js';
import { Sig } from '../../memory/signals.js';
import type { StateReader, StateWriter } from '../../state/codec.js';
import { DeviceId } from './constants.js';
import type { VirtioBackend, VirtioTransport } from './mmio-transport.js';
import { readConfigBytes } from './mmio-transport.js';
import { PacketRing } from './packet-ring.js';
import { DescriptorChain } from './split-queue.js';
import { VSOCK_HDR_BYTES, VSOCK_MAX_PACKET } from './vsock-packet.js';

export const VSOCK_RX = 0;
export const VSOCK_TX = 1;
export const VSOCK_EVENT = 2;
/** Events waiting for an event-queue buffer; more are dropped (they all mean "reset"). */
const MAX_PENDING_EVENTS = 16;

/** The two packet rings of a vsock device (created by the host with the VM; not machine state). */
export interface VsockRings {
  /** guest → host: the device produces, the host consumes. */
  readonly toHost: SharedArrayBuffer;
  /** host → guest: the host produces, the device consumes. */
  readonly toGuest: SharedArrayBuffer;
}

export function allocateVsockRings(): VsockRings {
  return { toHost: PacketRing.allocate(), toGuest: PacketRing.allocate() };
}

/**
 * virtio-vsock (device id 19, §5.10): rx/tx/event queues and guest_cid in config. It only moves
 * packets: each tx chain becomes one record in the guest→host ring; each record of the host→guest
 * ring goes whole into one posted rx chain. Connections (credit, states) are the host side's.
 */
export class VirtioVsock implements VirtioBackend {
  readonly stateId = 'virtio-vsock';
  readonly stateVersion = 1;
  readonly deviceId = DeviceId.Vsock;
  readonly queueCount = 3;
  /** No optional features: stream sockets only (§5.10.3: no feature bit means stream). */
  readonly featuresLo = 0;
  readonly featuresHi = 0;
  guestCid: number;
  readonly toHost: PacketRing;
  readonly toGuest: PacketRing;
  private readonly signals: Int32Array;
  private t!: VirtioTransport;
  private readonly chain = new DescriptorChain();
  private readonly scratch = new Uint8Array(VSOCK_MAX_PACKET);
  private readonly config = new Uint8Array(8);
  /** A tx chain is waiting for room in the guest→host ring. */
  private txWaiting = false;
  private readonly events: number[] = [];
  /** Packets dropped (too big for the posted buffer, or malformed tx) since the last log line. */
  private dropped = 0;
  private lastDropLog = -Infinity;

  constructor(opts: { guestCid: number; rings: VsockRings; signals: Int32Array }) {
    this.guestCid = opts.guestCid;
    this.toHost = new PacketRing(opts.rings.toHost);
    this.toGuest = new PacketRing(opts.rings.toGuest);
    this.signals = opts.signals;
    this.writeConfig8();
  }

  private writeConfig8(): void {
    const dv = new DataView(this.config.buffer);
    dv.setUint32(0, this.guestCid >>> 0, true);
    dv.setUint32(4, Math.floor(this.guestCid / 0x1_0000_0000) >>> 0, true);
  }

  attach(t: VirtioTransport): void {
    this.t = t;
  }

  readConfig(offset: number, size: AccessSize): number {
    return readConfigBytes(this.config, offset, size);
  }

  writeConfig(): void {
    // guest_cid is read-only.
  }

  reset(): void {
    this.txWaiting = false;
  }

  notify(queue: number): void {
    if (queue === VSOCK_TX) this.transmit();
    else if (queue === VSOCK_RX) this.receive();
    else if (queue === VSOCK_EVENT) this.deliverEvents();
  }

  poll(): void {
    if (this.txWaiting && this.toHost.free > 4 + VSOCK_HDR_BYTES) this.transmit();
    if (!this.toGuest.empty) this.receive();
    if (this.events.length > 0) this.deliverEvents();
  }

  /** Queues an event for the guest (the host's postEvent); delivered when an event buffer is posted. */
  postEvent(id: number): void {
    if (this.events.length < MAX_PENDING_EVENTS) this.events.push(id >>> 0);
    if (this.t.live) this.deliverEvents();
  }

  get pendingEvents(): number {
    return this.events.length;
  }

  private drop(why: string, bytes: number): void {
    this.dropped++;
    const now = performance.now();
    if (now - this.lastDropLog >= 1000) {
      this.t.log('warn', `vsock packet dropped: ${why}`, { slot: this.t.slot, bytes, droppedSinceLastLog: this.dropped });
      this.dropped = 0;
      this.lastDropLog = now;
    }
  }

  /** Guest → host: each tx chain is one packet; a full ring leaves the chain for later. */
  private transmit(): void {
    const t = this.t;
    const q = t.queue(VSOCK_TX);
    const dma = t.dma;
    const c = this.chain;
    const ring = this.toHost;
    let moved = 0;
    this.txWaiting = false;
    while (q.peek(dma, c)) {
      const total = c.readableBytes;
      if (total < VSOCK_HDR_BYTES || total > VSOCK_MAX_PACKET) {
        this.drop(total < VSOCK_HDR_BYTES ? 'tx chain shorter than the header' : `tx chain longer than ${VSOCK_MAX_PACKET} bytes`, total);
        q.take();
        q.pushUsed(dma, c.head, 0);
        moved++;
        continue;
      }
      if (!ring.beginRecord(total)) {
        this.txWaiting = true;
        break;
      }
      const u8 = dma.ram.u8;
      for (let i = 0; i < c.count; i++) {
        if (c.writable[i] !== 0 || c.len[i] === 0) continue;
        const off = c.off[i]!;
        dma.touch(off, c.len[i]!);
        ring.writeChunk(u8.subarray(off, off + c.len[i]!));
      }
      ring.commit();
      q.take();
      q.pushUsed(dma, c.head, 0);
      moved++;
    }
    if (moved > 0) {
      t.usedBuffers(VSOCK_TX);
      Atomics.add(this.signals, Sig.VsockToHost, 1);
      Atomics.notify(this.signals, Sig.VsockToHost);
    }
  }

  /** Host → guest: each record goes whole into one posted rx chain, never split. */
  private receive(): void {
    const t = this.t;
    const q = t.queue(VSOCK_RX);
    const dma = t.dma;
    const c = this.chain;
    const ring = this.toGuest;
    const buf = this.scratch;
    let delivered = 0;
    let taken = 0;
    for (;;) {
      const len = ring.peekLength();
      if (len < 0) break;
      if (len > buf.length || len < VSOCK_HDR_BYTES) {
        this.drop(`host packet of ${len} bytes is not a vsock packet`, len);
        ring.skip();
        taken++;
        continue;
      }
      if (!q.peek(dma, c)) break;
      if (c.writableBytes < len) {
        this.drop(`packet bigger than the posted rx buffer (${c.writableBytes} bytes)`, len);
        ring.skip();
        taken++;
        continue;
      }
      ring.readInto(buf);
      taken++;
      let at = 0;
      for (let i = 0; i < c.count && at < len; i++) {
        if (c.writable[i] === 0) continue;
        const n = Math.min(c.len[i]!, len - at);
        dma.write(c.off[i]!, buf.subarray(at, at + n));
        at += n;
      }
      q.take();
      q.pushUsed(dma, c.head, len);
      delivered++;
    }
    if (taken > 0) {
      Atomics.add(this.signals, Sig.VsockToGuestTaken, 1);
      Atomics.notify(this.signals, Sig.VsockToGuestTaken);
    }
    if (delivered > 0) t.usedBuffers(VSOCK_RX);
  }

  private deliverEvents(): void {
    const t = this.t;
    const q = t.queue(VSOCK_EVENT);
    if (!q.ready) return;
    const dma = t.dma;
    const c = this.chain;
    let delivered = 0;
    while (this.events.length > 0 && q.peek(dma, c)) {
      if (c.writableBytes < 4) {
        // Not even room for the id: give the buffer back empty.
        q.take();
        q.pushUsed(dma, c.head, 0);
        delivered++;
        continue;
      }
      const id = this.events.shift()!;
      const b = this.scratch;
      b[0] = id & 0xff;
      b[1] = (id >>> 8) & 0xff;
      b[2] = (id >>> 16) & 0xff;
      b[3] = (id >>> 24) & 0xff;
      let at = 0;
      for (let i = 0; i < c.count && at < 4; i++) {
        if (c.writable[i] === 0) continue;
        const n = Math.min(c.len[i]!, 4 - at);
        dma.write(c.off[i]!, b.subarray(at, at + n));
        at += n;
      }
      q.take();
      q.pushUsed(dma, c.head, 4);
      delivered++;
    }
    if (delivered > 0) t.usedBuffers(VSOCK_EVENT);
  }

  saveState(w: StateWriter): void {
    w.f64(this.guestCid);
    w.u32(this.events.length);
    for (const e of this.events) w.u32(e);
  }

  restoreState(r: StateReader, version: number): void {
    if (version !== 1) r.fail(`unsupported virtio-vsock state version ${version}`);
    const cid = r.f64();
    if (cid !== this.guestCid) r.fail(`the state's guest_cid ${cid} differs from this VM's configured ${this.guestCid}`);
    const n = r.u32();
    if (n > MAX_PENDING_EVENTS) r.fail(`${n} pending events exceeds ${MAX_PENDING_EVENTS}`);
    this.events.length = 0;
    for (let i = 0; i < n; i++) this.events.push(r.u32());
    // Retry tx once: a chain may have been waiting for room when the state was saved.
    this.txWaiting = true;
  }
}
