// Runs a guest image in an in-process Machine (by default with the virtio-vsock device) and plays
// the host's side by hand: packets built byte by byte go into the device's host→guest ring, and
// whatever the guest sends is read back from the guest→host ring.
import { PacketRing } from '../../src/machine/devices/virtio/packet-ring.js';
import {
  VSOCK_HDR_BYTES,
  VsockOp,
  VsockType,
  decodeVsockHeader,
  encodeVsockPacket,
  type VsockHeader,
} from '../../src/machine/devices/virtio/vsock-packet.js';
import { StopReason } from '../../src/machine/cpu/hart.js';
import { Machine } from '../../src/machine/machine.js';
import { GuestRam } from '../../src/machine/memory/ram.js';
import type { VirtioDeviceSpec } from '../../src/machine/devices/virtio/device-spec.js';
import { imageBytes, text } from '../helpers/images.js';

export const GUEST_CID = 3;
export const HOST_CID = 2;
const MiB = 1024 * 1024;

export interface Packet {
  readonly h: VsockHeader;
  readonly payload: Uint8Array;
}

export class VsockGuest {
  readonly m: Machine;
  private readonly toGuest: PacketRing | undefined;
  private readonly toHost: PacketRing | undefined;
  /** Everything the guest sent that no expect* call has taken yet. */
  inbox: Packet[] = [];

  /** By default the machine has one device, virtio-vsock with guest CID 3. */
  constructor(image: string, bootargs: string, memMiB = 64, devices: readonly VirtioDeviceSpec[] = [{ kind: 'virtio-vsock', guestCid: GUEST_CID }]) {
    this.m = new Machine(GuestRam.allocate(memMiB * MiB), undefined, { devices });
    this.m.boot({ image: imageBytes(image), imageName: `${image}.elf`, bootargs });
    this.toGuest = this.m.vsock?.toGuest;
    this.toHost = this.m.vsock?.toHost;
  }

  get console(): string {
    return text(this.m.console.contents());
  }

  /**
   * Runs the guest until it sleeps with nothing left to deliver (at most `maxInstr`).
   * With `advanceMs`, guest time then moves on by that much in timer-deadline steps.
   */
  run(maxInstr = 50_000_000, advanceMs = 0): void {
    const clock = this.m.clock;
    const until = clock.ticks() + advanceMs * 10_000;
    let left = maxInstr;
    while (left > 0) {
      const r = this.m.runSlice(Math.min(100_000, left));
      left -= this.m.hart.budgetUsed;
      this.collect();
      if (r === StopReason.Exit) throw new Error(`guest exited with ${this.m.bus.exitCode}: ${this.console}`);
      if (r === StopReason.Wfi && (this.toGuest?.empty ?? true)) {
        const d = this.m.clint.deadline();
        if (clock.ticks() >= until || !Number.isFinite(d)) return;
        clock.set(Math.min(Math.max(d, clock.ticks()), until));
        if (d > until) return;
      }
    }
    throw new Error(`guest did not settle within ${maxInstr} instructions: ${this.console}`);
  }

  /** Moves what the guest sent into the inbox (for callers that run the machine themselves). */
  pump(): void {
    this.collect();
  }

  private collect(): void {
    const ring = this.toHost;
    if (!ring) return;
    for (let p = ring.shift(); p !== undefined; p = ring.shift()) {
      this.inbox.push({ h: decodeVsockHeader(p), payload: p.slice(VSOCK_HDR_BYTES) });
    }
  }

  /** Puts raw bytes (a packet, well-formed or not) into the host→guest ring. */
  sendRaw(bytes: Uint8Array): void {
    if (!this.toGuest?.push(bytes)) throw new Error('no vsock device, or its host→guest ring is full');
  }

  send(h: Partial<VsockHeader> & { op: number }, payload: Uint8Array | string = new Uint8Array(0)): void {
    const body = typeof payload === 'string' ? Buffer.from(payload, 'latin1') : payload;
    this.sendRaw(encodeVsockPacket({
      srcCid: HOST_CID, dstCid: GUEST_CID, srcPort: 1000, dstPort: 6379, type: VsockType.Stream,
      flags: 0, bufAlloc: 256 * 1024, fwdCnt: 0, ...h,
    }, body));
  }

  /** Takes every packet the guest sent so far. */
  take(): Packet[] {
    const out = this.inbox;
    this.inbox = [];
    return out;
  }
}

/** One host-side connection: tracks the credit the host gives and the bytes it consumed. */
export class HostConn {
  fwdCnt = 0;
  received = '';
  constructor(
    readonly g: VsockGuest,
    readonly srcPort: number,
    readonly dstPort: number,
    readonly bufAlloc = 256 * 1024,
  ) {}

  hdr(op: number, flags = 0): Partial<VsockHeader> & { op: number } {
    return { op, flags, srcPort: this.srcPort, dstPort: this.dstPort, bufAlloc: this.bufAlloc, fwdCnt: this.fwdCnt };
  }

  connect(): Packet[] {
    this.g.send(this.hdr(VsockOp.Request));
    this.g.run();
    return this.mine();
  }

  /** Sends data in RW packets of at most 4 KiB (the guest's rx buffers). */
  write(data: string): void {
    for (let i = 0; i < data.length || i === 0; i += 4096) this.g.send(this.hdr(VsockOp.Rw), data.slice(i, i + 4096));
  }

  /** Packets the guest sent to this connection (taken out of the inbox); RW payloads are consumed. */
  mine(): Packet[] {
    const mine: Packet[] = [];
    const rest: Packet[] = [];
    for (const p of this.g.inbox) (p.h.dstPort === this.srcPort && p.h.srcPort === this.dstPort ? mine : rest).push(p);
    this.g.inbox = rest;
    for (const p of mine) {
      if (p.h.op === VsockOp.Rw) {
        this.received += Buffer.from(p.payload).toString('latin1');
        this.fwdCnt += p.payload.length;
      }
    }
    return mine;
  }

  /** Sends `data`, runs the guest, returns what it answered (all RW payload bytes so far, then cleared). */
  request(data: string): string {
    this.write(data);
    this.g.run();
    this.mine();
    const r = this.received;
    this.received = '';
    return r;
  }
}
