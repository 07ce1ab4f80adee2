// A minimal TCP <-> vsock relay for tests of the guest services with real clients (redis-cli,
// redis-benchmark, curl, wrk): the guest runs in an in-process Machine driven from the event
// loop, and each TCP connection becomes one vsock stream to the guest's port, with credit-based
// flow control both ways. Not tern's gateway: just enough host side to exercise the guest.
import { createServer, type Server, type Socket } from 'node:net';
import { StopReason } from '../../src/machine/cpu/hart.js';
import { VsockOp, VsockShutdown } from '../../src/machine/devices/virtio/vsock-packet.js';
import type { VsockHeader } from '../../src/machine/devices/virtio/vsock-packet.js';
import { VsockGuest } from './vsock-harness.js';

const HOST_BUF = 1 << 20;          // what the relay advertises per connection
const MAX_RW = 4096;               // the guest posts 4 KiB rx buffers

interface Stream {
  readonly sock: Socket;
  readonly port: number;
  connected: boolean;
  guestBuf: number;
  guestFwd: number;
  sent: number;                    // bytes sent to the guest
  fwd: number;                     // bytes received from the guest (written to TCP)
  fwdAdvertised: number;
  pending: Buffer[];
  clientDone: boolean;
}

export class TcpRelay {
  readonly server: Server;
  private readonly streams = new Map<number, Stream>();
  private nextPort = 40000;
  private stopped = false;
  private loop: Promise<void> | undefined;
  errors: string[] = [];

  constructor(readonly g: VsockGuest, readonly guestPort: number) {
    this.server = createServer((sock) => this.accept(sock));
  }

  async start(): Promise<number> {
    this.g.m.clock.start();
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', () => r()));
    this.loop = this.run();
    const a = this.server.address();
    return typeof a === 'object' && a !== null ? a.port : 0;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const s of this.streams.values()) s.sock.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
    await this.loop;
  }

  private hdr(s: Stream, op: number, flags = 0): Partial<VsockHeader> & { op: number } {
    return { op, flags, srcPort: s.port, dstPort: this.guestPort, bufAlloc: HOST_BUF, fwdCnt: s.fwd };
  }

  private accept(sock: Socket): void {
    const s: Stream = { sock, port: this.nextPort++, connected: false, guestBuf: 0, guestFwd: 0, sent: 0, fwd: 0, fwdAdvertised: 0, pending: [], clientDone: false };
    this.streams.set(s.port, s);
    sock.on('data', (d: Buffer) => { s.pending.push(d); this.flush(s); });
    sock.on('end', () => { s.clientDone = true; this.flush(s); });
    sock.on('error', () => undefined);
    sock.on('close', () => {
      if (this.streams.get(s.port) === s) {
        this.g.send(this.hdr(s, VsockOp.Rst));
        this.streams.delete(s.port);
      }
    });
    this.g.send(this.hdr(s, VsockOp.Request));
  }

  /** Sends what the client wrote, within the guest's credit; then SHUTDOWN once the client is done. */
  private flush(s: Stream): void {
    if (!s.connected) return;
    while (s.pending.length > 0) {
      const credit = s.guestBuf - (s.sent - s.guestFwd);
      if (credit <= 0) return;
      const head = s.pending[0]!;
      const n = Math.min(credit, MAX_RW, head.length);
      this.g.send(this.hdr(s, VsockOp.Rw), head.subarray(0, n));
      s.sent += n;
      if (n === head.length) s.pending.shift();
      else s.pending[0] = head.subarray(n);
    }
    if (s.clientDone) {
      s.clientDone = false;
      this.g.send(this.hdr(s, VsockOp.Shutdown, VsockShutdown.Rcv | VsockShutdown.Send));
    }
  }

  private handle(): void {
    for (const p of this.g.take()) {
      const s = this.streams.get(p.h.dstPort);
      if (!s) {
        if (p.h.op !== VsockOp.Rst) this.g.send({ op: VsockOp.Rst, srcPort: p.h.dstPort, dstPort: p.h.srcPort });
        continue;
      }
      s.guestBuf = p.h.bufAlloc;
      s.guestFwd = p.h.fwdCnt;
      switch (p.h.op) {
        case VsockOp.Response:
          s.connected = true;
          break;
        case VsockOp.Rw:
          s.sock.write(p.payload);
          s.fwd += p.payload.length;
          if (s.fwd - s.fwdAdvertised > HOST_BUF / 4) {
            this.g.send(this.hdr(s, VsockOp.CreditUpdate));
            s.fwdAdvertised = s.fwd;
          }
          break;
        case VsockOp.CreditRequest:
          this.g.send(this.hdr(s, VsockOp.CreditUpdate));
          s.fwdAdvertised = s.fwd;
          break;
        case VsockOp.Shutdown:
          this.streams.delete(s.port);
          this.g.send(this.hdr(s, VsockOp.Rst));
          s.sock.end();
          continue;
        case VsockOp.Rst:
          this.streams.delete(s.port);
          s.sock.destroy();
          continue;
        case VsockOp.CreditUpdate:
          break;
        default:
          this.errors.push(`unexpected op ${p.h.op} from the guest`);
      }
      this.flush(s);
    }
  }

  private async run(): Promise<void> {
    const m = this.g.m;
    while (!this.stopped) {
      for (let i = 0; i < 50; i++) {
        const r = m.runSlice(100_000);
        this.g.pump();
        this.handle();
        if (r === StopReason.Exit) {
          this.errors.push(`guest exited: ${this.g.console}`);
          return;
        }
        if (r === StopReason.Wfi) break;
      }
      await new Promise((r) => setImmediate(r));
    }
  }
}
