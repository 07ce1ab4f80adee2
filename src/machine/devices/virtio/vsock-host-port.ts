import { Sig, ring } from '../../memory/signals.js';
import { PacketRing } from './packet-ring.js';
import type { VsockRings } from './vsock.js';

/** The host thread's side of a VM's virtio-vsock device. */
export interface VsockHostPort {
  readonly guestCid: number;
  /** Queues one packet (hdr + payload) for the guest; false (nothing queued) if the ring is full. */
  send(packet: Uint8Array): boolean;
  /** Bytes free in the host→guest ring (for the host side's own flow control); a packet takes its length + 4. */
  readonly freeBytes: number;
  /** Every packet the guest sends, in order. Packets wait in the ring until a callback is set. */
  onPacket(cb: (packet: Uint8Array) => void): void;
  /** Synchronously delivers everything still in the guest→host ring (call after pause). */
  flushFromGuest(): void;
  /** While paused: removes and returns the packets the device has not yet taken for the guest. */
  takeUndelivered(): Uint8Array[];
  /** Posts an event on the event queue (0 = VIRTIO_VSOCK_EVENT_TRANSPORT_RESET). */
  postEvent(id: number): void;
}

/** How long the watcher sleeps between checks when nothing wakes it. */
const WATCH_MS = 1000;

/**
 * VsockHostPort over the two packet rings: the host produces into toGuest (and rings the vCPU's
 * doorbell, which also wakes a guest in wfi) and consumes toHost, woken by Sig.VsockToHost.
 */
export class VsockHost implements VsockHostPort {
  readonly guestCid: number;
  private readonly toHost: PacketRing;
  private readonly toGuest: PacketRing;
  private readonly sig: Int32Array;
  private readonly sendEvent: (id: number) => void;
  private readonly callbacks: Array<(packet: Uint8Array) => void> = [];
  private watching = false;
  private closed = false;

  constructor(opts: { guestCid: number; rings: VsockRings; signals: Int32Array; postEvent: (id: number) => void }) {
    this.guestCid = opts.guestCid;
    this.toHost = new PacketRing(opts.rings.toHost);
    this.toGuest = new PacketRing(opts.rings.toGuest);
    this.sig = opts.signals;
    this.sendEvent = opts.postEvent;
  }

  send(packet: Uint8Array): boolean {
    if (!this.toGuest.push(packet)) return false;
    ring(this.sig);
    return true;
  }

  get freeBytes(): number {
    return this.toGuest.free;
  }

  onPacket(cb: (packet: Uint8Array) => void): void {
    this.callbacks.push(cb);
    if (!this.watching && !this.closed) {
      this.watching = true;
      void this.watch();
    }
  }

  flushFromGuest(): void {
    if (this.callbacks.length === 0) return;
    for (;;) {
      const p = this.toHost.shift();
      if (p === undefined) break;
      for (const cb of this.callbacks) cb(p);
    }
    // A tx chain waits for room: wake the vCPU (it may sleep in wfi) so it retries now.
    if (this.toHost.takeWaiting()) ring(this.sig);
  }

  takeUndelivered(): Uint8Array[] {
    const out: Uint8Array[] = [];
    for (;;) {
      const p = this.toGuest.shift();
      if (p === undefined) return out;
      out.push(p);
    }
  }

  postEvent(id: number): void {
    this.sendEvent(id);
  }

  /** Stops watching the ring (the VM's vCPU thread ended). */
  close(): void {
    this.closed = true;
    Atomics.add(this.sig, Sig.VsockToHost, 1);
    Atomics.notify(this.sig, Sig.VsockToHost);
  }

  private async watch(): Promise<void> {
    while (!this.closed) {
      // Read the counter before draining: a packet appended after the drain changes it, so the wait returns at once.
      const seen = Atomics.load(this.sig, Sig.VsockToHost);
      this.flushFromGuest();
      if (this.closed) break;
      const w = Atomics.waitAsync(this.sig, Sig.VsockToHost, seen, WATCH_MS);
      if (w.async) await w.value;
    }
  }
}
