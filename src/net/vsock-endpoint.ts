/**
 * The host side (CID 2) of a VM's vsock stream connections. The gateway asks for connections to
 * guest ports (open), the endpoint speaks virtio-vsock to the guest through the device's packet
 * channel: REQUEST → RESPONSE/RST, RW with credit-based flow control both ways, SHUTDOWN, RST.
 * Each connection carries byte offsets end to end (the gateway's connection id names it), and
 * every byte not yet acknowledged is held here so the stream can resume from any offset after
 * a migration. A guest that misbehaves gets RST or a dropped packet and a log line, never a crash.
 */
import type { Logger } from '../util/log.js';
import { MAX_WARM_SAMPLES, MAX_WARM_SAMPLE_BYTES } from '../migration/wire/constants.js';
import type { TrafficSample } from '../migration/wire/messages.js';
import { ByteQueue } from './byte-queue.js';
import { ResetReason } from './link-protocol.js';
import { HDR_BYTES, HOST_CID, Hdr, OP_NAMES, Op, RING_RECORD_OVERHEAD, Shut, VSOCK_TYPE_STREAM, type VsockHostPort, u16At, u32At, writeHdr } from './vsock-port.js';

/** Largest payload we put in one packet: the guest posts 4 KiB rx buffers. */
export const MAX_PACKET_PAYLOAD = 4096;
/** Our receive buffer per connection (buf_alloc we advertise): VM→client bytes held until the gateway acknowledges them. */
export const OUT_BUF_ALLOC = 256 * 1024;
/** Client→VM bytes the endpoint accepts beyond what the guest has taken (the gateway's window). */
export const IN_WINDOW = 256 * 1024;
/** Advertise new credit once the guest's view of our fwd_cnt lags by this much. */
const CREDIT_UPDATE_THRESHOLD = 16 * 1024;
/** ...or as soon as it moves at all while the guest sees less than this free. */
const LOW_CREDIT = 64 * 1024;
/** Retry sending to a full host→guest ring, or re-ask a silent guest for credit, after this long. */
const RETRY_MS = 2;
const CREDIT_REQUEST_RETRY_MS = 200;
/** Local (host-side) vsock ports we use for the connections we open. */
const FIRST_HOST_PORT = 49152;

const TWO_32 = 0x1_0000_0000;

/** What the endpoint tells the gateway side, per connection id. */
export interface StreamUpstream {
  /** The guest accepted the connection. */
  opened(connId: number): void;
  /** VM→client bytes at stream offset `seq` (a view: copy it to keep it). */
  data(connId: number, seq: number, bytes: Uint8Array): void;
  /** The guest sends no more: the VM→client stream ends at `seq`. */
  fin(connId: number, seq: number): void;
  /** Client→VM bytes up to `seq` are held by this VM (FIN counts as one byte past the end). */
  ack(connId: number, seq: number): void;
  /** The connection is gone here abnormally; the gateway resets the client. */
  reset(connId: number, reason: ResetReason): void;
  /** The connection's state is dropped here (after reset or a clean close on both sides). */
  closed(connId: number): void;
}

export const enum ConnState {
  Connecting = 1,
  Open = 2,
}

/** One relayed connection; every field travels with the VM (see encodeEndpointState). */
export interface VsockConn {
  readonly connId: number;
  readonly guestPort: number;
  readonly hostPort: number;
  state: ConnState;
  /** Client→VM bytes accepted but not yet given to the guest: [ackSeq = sent to guest, endSeq = accepted). */
  inQ: ByteQueue;
  /** Stream offset of the client's FIN, or -1. */
  inFin: number;
  /** SHUTDOWN(SEND) has been queued for the guest. */
  finToGuest: boolean;
  /** VM→client bytes not yet acknowledged by the gateway: [ackSeq = our fwd_cnt, endSeq = received from the guest]. */
  outQ: ByteQueue;
  /** Stream offset where the guest stopped sending (SHUTDOWN SEND or RST), or -1. */
  outFin: number;
  /** The gateway acknowledged our FIN. */
  outFinAcked: boolean;
  /** The guest will not receive any more (SHUTDOWN RCV or RST). */
  guestRcvShut: boolean;
  /** The guest reset the connection (no RST back to it). */
  guestReset: boolean;
  peerBufAlloc: number;
  peerFwdCnt: number;
  /** fwd_cnt we last told the guest. */
  fwdAdvertised: number;
  // ---- not migrated: what has been told upstream since it was last (re)attached ----
  outSent: number;
  ackSent: number;
  openedSent: boolean;
  finSent: boolean;
  creditRequestedAt: number;
  /** A connection this host opened for itself (openLocal): its own upstream; never migrated. */
  local?: StreamUpstream;
}

export class VsockEndpoint {
  private readonly conns = new Map<number, VsockConn>();
  /** By host-side vsock port, for packets from the guest. */
  private readonly byHostPort = new Map<number, VsockConn>();
  private nextHostPort = FIRST_HOST_PORT;
  /** Ids of local connections count down from -1, apart from the gateway's (u32) ids. */
  private nextLocalId = -1;
  /** Control packets that found the ring full, sent first when space frees. */
  private backlog: Uint8Array[] = [];
  private readonly scratch = new Uint8Array(HDR_BYTES + MAX_PACKET_PAYLOAD);
  private frozen = false;
  private disposed = false;
  /** Resets decided while frozen, told upstream on thaw. */
  private pendingResets: { connId: number; reason: ResetReason }[] = [];
  private retryTimer: NodeJS.Timeout | undefined;
  private upstream: StreamUpstream | undefined;
  /**
   * Per guest port the gateway's clients connect to, the first bytes of the latest connection
   * that sent any (copied once per connection): what a destination's warm-up sends to the
   * throwaway boot of the guest image (docs/networking.md, "Warm-up traffic"). Bounded as a
   * WARM_TRAFFIC frame is: MAX_WARM_SAMPLES ports (the oldest goes), MAX_WARM_SAMPLE_BYTES each.
   */
  private readonly samples = new Map<number, Uint8Array>();
  /** Counters for status and tests. */
  readonly stats = { packetsIn: 0, packetsOut: 0, dropped: 0, resets: 0 };
  /** pumpUp's connection, for sendUp (made once: no closure per packet). */
  private upConn: VsockConn | undefined;
  private readonly sendUp = (bytes: Uint8Array, seq: number): boolean => {
    const c = this.upConn!;
    (c.local ?? this.upstream)!.data(c.connId, seq, bytes);
    return true;
  };

  constructor(
    private readonly port: VsockHostPort,
    private readonly log: Logger,
    private readonly vmName: string,
  ) {
    port.onPacket((p) => this.onGuestPacket(p));
  }

  /** Where connection events go; until set (or while frozen) nothing is told. */
  setUpstream(u: StreamUpstream | undefined): void {
    this.upstream = u;
  }

  /** The gateway's connections (local ones are this host's own business). */
  get connectionCount(): number {
    let n = 0;
    for (const c of this.conns.values()) if (c.local === undefined) n++;
    return n;
  }

  *connections(): IterableIterator<VsockConn> {
    for (const c of this.conns.values()) if (c.local === undefined) yield c;
  }

  has(connId: number): boolean {
    return this.conns.has(connId);
  }

  // ---- from the gateway side ----

  /**
   * A connection of this host's own to a guest port (the migration-assist channel): `upstream`
   * hears its events (ack the data it is given, as the gateway does). Returns its id for
   * data/fin/ack/reset; undefined once disposed. It never travels: freeze resets it.
   */
  openLocal(guestPort: number, upstream: StreamUpstream): number | undefined {
    if (this.disposed || this.frozen) return undefined;
    const connId = this.nextLocalId--;
    this.open(connId, guestPort, upstream);
    return connId;
  }

  /** A client connected to an exposed port: ask the guest (REQUEST). */
  open(connId: number, guestPort: number, local?: StreamUpstream): void {
    if (this.disposed) return;
    if (this.conns.has(connId)) {
      this.log.warn({ vm: this.vmName, connId }, 'vsock: OPEN for a connection id already in use; resetting it');
      this.resetConn(this.conns.get(connId)!, ResetReason.Protocol, true);
      return;
    }
    let hostPort = this.nextHostPort;
    while (this.byHostPort.has(hostPort)) hostPort = hostPort >= 0xffff_fffe ? FIRST_HOST_PORT : hostPort + 1;
    this.nextHostPort = hostPort >= 0xffff_fffe ? FIRST_HOST_PORT : hostPort + 1;
    const c: VsockConn = {
      connId, guestPort, hostPort, state: ConnState.Connecting,
      inQ: new ByteQueue(0), inFin: -1, finToGuest: false,
      outQ: new ByteQueue(0), outFin: -1, outFinAcked: false, guestRcvShut: false, guestReset: false,
      peerBufAlloc: 0, peerFwdCnt: 0, fwdAdvertised: 0,
      outSent: 0, ackSent: 0, openedSent: false, finSent: false, creditRequestedAt: -Infinity,
      ...(local !== undefined ? { local } : {}),
    };
    this.add(c);
    if (local === undefined && !this.samples.has(guestPort)) this.keepSample(guestPort, new Uint8Array(0));
    this.sendCtrl(c, Op.Request, 0);
  }

  /** The traffic samples (see `samples`), newest port last. */
  trafficSamples(): TrafficSample[] {
    const out: TrafficSample[] = [];
    for (const [vmPort, bytes] of this.samples) out.push({ vmPort, bytes });
    return out;
  }

  /** Samples the VM arrived with: kept for ports this endpoint has none of its own for. */
  adoptSamples(list: readonly TrafficSample[]): void {
    for (const s of list) {
      if (!this.samples.has(s.vmPort)) this.keepSample(s.vmPort, new Uint8Array(s.bytes.subarray(0, MAX_WARM_SAMPLE_BYTES)));
    }
  }

  private keepSample(port: number, bytes: Uint8Array): void {
    this.samples.delete(port);
    if (this.samples.size >= MAX_WARM_SAMPLES) this.samples.delete(this.samples.keys().next().value!);
    this.samples.set(port, bytes);
  }

  /** Client→VM bytes at offset `seq`. Bytes already held are skipped; a gap or an overrun resets. */
  data(connId: number, seq: number, bytes: Uint8Array): void {
    const c = this.conns.get(connId);
    if (c === undefined) {
      this.upstreamReset(connId, ResetReason.Unknown);
      return;
    }
    const end = c.inQ.endSeq;
    if (seq > end || c.inFin >= 0) {
      this.log.warn({ vm: this.vmName, connId, seq, expected: end, fin: c.inFin }, 'vsock: DATA out of sequence from the gateway; resetting the connection');
      this.resetConn(c, ResetReason.Protocol, true);
      return;
    }
    const skip = end - seq;
    if (skip >= bytes.length) return;
    // A connection's first bytes: the port's traffic sample (one copy per connection; `bytes` may
    // be a Buffer, whose slice() is a view).
    if (end === 0 && c.local === undefined) this.keepSample(c.guestPort, new Uint8Array(bytes.subarray(0, MAX_WARM_SAMPLE_BYTES)));
    if (c.inQ.length + bytes.length - skip > IN_WINDOW + 2 * 64 * 1024) {
      this.log.warn({ vm: this.vmName, connId, held: c.inQ.length }, 'vsock: the gateway overran the window; resetting the connection');
      this.resetConn(c, ResetReason.Protocol, true);
      return;
    }
    if (c.guestRcvShut) {
      // The guest reads no more: accept and drop, as a closed TCP receiver would.
      c.inQ.push(bytes.subarray(skip));
      c.inQ.ackTo(c.inQ.endSeq);
    } else {
      c.inQ.push(bytes.subarray(skip));
      this.pumpIn(c);
    }
    this.pumpUp(c);
    this.maybeDone(c);
  }

  /** The client sends no more: its stream ends at `seq`. */
  fin(connId: number, seq: number): void {
    const c = this.conns.get(connId);
    if (c === undefined) {
      this.upstreamReset(connId, ResetReason.Unknown);
      return;
    }
    if (c.inFin >= 0) return;
    if (seq !== c.inQ.endSeq) {
      this.log.warn({ vm: this.vmName, connId, seq, held: c.inQ.endSeq }, 'vsock: FIN at an offset other than the stream end; resetting the connection');
      this.resetConn(c, ResetReason.Protocol, true);
      return;
    }
    c.inFin = seq;
    this.pumpIn(c);
    this.pumpUp(c);
    this.maybeDone(c);
  }

  /** The gateway holds VM→client bytes up to `seq` (our FIN acknowledged at outFin + 1). */
  ack(connId: number, seq: number): void {
    const c = this.conns.get(connId);
    if (c === undefined) return;
    if (c.outFin >= 0 && seq > c.outFin) {
      c.outFinAcked = true;
      seq = c.outFin;
    }
    if (seq > c.outQ.endSeq) {
      this.log.warn({ vm: this.vmName, connId, seq, sent: c.outQ.endSeq }, 'vsock: ACK beyond what was sent; ignored');
      return;
    }
    c.outQ.ackTo(seq);
    // New credit for the guest once it is worth a packet, or at once when the guest may be short of it.
    const guestSeesFree = OUT_BUF_ALLOC - (c.outQ.endSeq - c.fwdAdvertised);
    const moved = c.outQ.ackSeq - c.fwdAdvertised;
    if (!c.guestReset && c.state === ConnState.Open && c.outFin < 0 && (moved >= CREDIT_UPDATE_THRESHOLD || (moved > 0 && guestSeesFree < LOW_CREDIT))) {
      this.sendCtrl(c, Op.CreditUpdate, 0);
    }
    this.maybeDone(c);
  }

  /** The client reset (or the gateway dropped) the connection: RST to the guest. */
  reset(connId: number): void {
    const c = this.conns.get(connId);
    if (c === undefined) return;
    this.resetConn(c, ResetReason.Reset, false);
  }

  /**
   * After a (re)attach: the gateway has VM→client bytes up to `outReceived`; send the rest again,
   * and tell it everything else (opened, acks, FIN) afresh.
   */
  resumeConn(connId: number, outReceived: number): void {
    const c = this.conns.get(connId);
    if (c === undefined) return;
    const finEnd = c.outFin >= 0 ? c.outFin + 1 : -1;
    if (finEnd >= 0 && outReceived >= finEnd) c.outFinAcked = true;
    const recv = Math.min(outReceived, c.outQ.endSeq);
    if (recv < c.outQ.ackSeq) {
      this.log.error({ vm: this.vmName, connId, outReceived, held: c.outQ.ackSeq }, 'vsock: the gateway lacks bytes this host no longer holds; resetting the connection');
      this.resetConn(c, ResetReason.Protocol, true);
      return;
    }
    c.outQ.ackTo(recv);
    c.outSent = recv;
    c.openedSent = false;
    c.finSent = c.outFinAcked;
    c.ackSent = -1;
    this.pumpUp(c);
    this.maybeDone(c);
  }

  /** The gateway does not know this connection (it restarted, or the client is gone): RST the guest. */
  forget(connId: number): void {
    const c = this.conns.get(connId);
    if (c !== undefined) this.resetConn(c, ResetReason.Unknown, false);
  }

  /** Resets every gateway connection (the gateway link is gone for good, the VM is deleted). */
  resetAll(): void {
    for (const c of [...this.connections()]) this.resetConn(c, ResetReason.VmGone, false);
  }

  // ---- migration ----

  /**
   * The VM is paused for migration: take what the guest already sent and pass it on, take back
   * what it has not yet received, and stop telling the gateway anything.
   */
  freeze(): void {
    // Local connections end here: their RST reaches the guest (or travels in the backlog).
    for (const c of [...this.conns.values()]) if (c.local !== undefined) this.resetConn(c, ResetReason.VmGone, true);
    // What the guest sent before it stopped leaves now, not after the downtime: a reply or an
    // update the guest wrote just before the pause reaches its client at once. The bytes stay in
    // the state until acknowledged, and the destination sends again only from what the gateway
    // says it has (ATTACHED outReceived), so nothing is doubled or lost.
    this.port.flushFromGuest();
    for (const c of this.conns.values()) this.pumpUp(c);
    this.frozen = true;
    const undelivered = this.port.takeUndelivered();
    this.backlog = undelivered.concat(this.backlog);
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
  }

  /** The migration failed: the VM runs here again. Requeue what was taken back and catch up. */
  thaw(): void {
    if (!this.frozen) return;
    this.frozen = false;
    this.flushBacklog();
    for (const r of this.pendingResets.splice(0)) {
      this.upstream?.reset(r.connId, r.reason);
      this.upstream?.closed(r.connId);
    }
    for (const c of [...this.conns.values()]) {
      this.pumpIn(c);
      this.pumpUp(c);
    }
  }

  /** The VM left this host (committed elsewhere): drop everything without a word to anyone. */
  dispose(): void {
    this.disposed = true;
    this.frozen = true;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    const locals = [...this.conns.values()].filter((c) => c.local !== undefined);
    this.conns.clear();
    for (const c of locals) {
      c.local!.reset(c.connId, ResetReason.VmGone);
      c.local!.closed(c.connId);
    }
    this.byHostPort.clear();
    this.backlog = [];
    this.upstream = undefined;
  }

  /** The state that travels with the VM (only while frozen). */
  saveState(): Uint8Array {
    if (!this.frozen) throw new Error('vsock endpoint state is saved only while frozen');
    return encodeEndpointState({ nextHostPort: this.nextHostPort, conns: [...this.connections()], packets: this.backlog });
  }

  /** Restores a saved state into this (fresh) endpoint, frozen; `start()` sends the held packets. */
  restoreState(bytes: Uint8Array): void {
    const s = decodeEndpointState(bytes);
    this.nextHostPort = s.nextHostPort;
    for (const c of s.conns) this.add(c);
    this.backlog = s.packets;
    this.frozen = true;
  }

  /** Starts a restored endpoint: the packets the guest had not received go first. */
  start(): void {
    this.thaw();
  }

  // ---- from the guest ----

  private onGuestPacket(p: Uint8Array): void {
    if (this.disposed) return;
    this.stats.packetsIn++;
    try {
      this.handleGuestPacket(p);
    } catch (e) {
      // A bug here must not take the host down; the packet is dropped.
      this.stats.dropped++;
      this.log.error({ vm: this.vmName, err: e instanceof Error ? (e.stack ?? e.message) : String(e) }, 'vsock: error handling a guest packet');
    }
  }

  private drop(why: string, p: Uint8Array): void {
    this.stats.dropped++;
    this.log.warn({ vm: this.vmName, bytes: p.length, why }, 'vsock: dropped a malformed packet from the guest');
  }

  private handleGuestPacket(p: Uint8Array): void {
    if (p.length < HDR_BYTES) return this.drop(`shorter than the ${HDR_BYTES}-byte header`, p);
    const len = u32At(p, Hdr.Len);
    if (len !== p.length - HDR_BYTES) return this.drop(`len field ${len} but ${p.length - HDR_BYTES} payload bytes`, p);
    const type = u16At(p, Hdr.Type);
    const op = u16At(p, Hdr.Op);
    const srcCid = u32At(p, Hdr.SrcCid);
    const dstCid = u32At(p, Hdr.DstCid);
    const srcPort = u32At(p, Hdr.SrcPort);
    const dstPort = u32At(p, Hdr.DstPort);
    if (u32At(p, Hdr.SrcCid + 4) !== 0 || u32At(p, Hdr.DstCid + 4) !== 0 || srcCid !== this.port.guestCid || dstCid !== HOST_CID) {
      return this.drop(`addresses cid ${srcCid} → ${dstCid} (expected ${this.port.guestCid} → ${HOST_CID})`, p);
    }
    if (type !== VSOCK_TYPE_STREAM) {
      if (op !== Op.Rst) this.rawRst(dstPort, srcPort);
      return this.drop(`socket type ${type}; only stream sockets are supported`, p);
    }
    if (op !== Op.Rw && len !== 0) return this.drop(`${OP_NAMES[op] ?? op} with a ${len}-byte payload`, p);
    const c = this.byHostPort.get(dstPort);
    if (c === undefined || c.guestPort !== srcPort) {
      // No such connection (the guest connecting to the host, or a stale one): RST, as Linux does.
      if (op !== Op.Rst) this.rawRst(dstPort, srcPort);
      return;
    }
    c.peerBufAlloc = u32At(p, Hdr.BufAlloc);
    c.peerFwdCnt = u32At(p, Hdr.FwdCnt);
    switch (op) {
      case Op.Response:
        if (c.state !== ConnState.Connecting) {
          this.log.warn({ vm: this.vmName, connId: c.connId }, 'vsock: RESPONSE on an open connection; resetting it');
          this.resetConn(c, ResetReason.Protocol, true);
          return;
        }
        c.state = ConnState.Open;
        this.pumpIn(c);
        this.pumpUp(c);
        return;
      case Op.Rst:
        c.guestReset = true;
        if (c.state === ConnState.Connecting) {
          this.resetConn(c, ResetReason.Refused, false);
          return;
        }
        // The guest closed: what it sent is delivered, then the client sees the end (as TCP's FIN).
        c.guestRcvShut = true;
        if (c.outFin < 0) c.outFin = c.outQ.endSeq;
        c.inQ.ackTo(c.inQ.endSeq);
        this.pumpUp(c);
        this.maybeDone(c);
        return;
      case Op.Shutdown: {
        const flags = u32At(p, Hdr.Flags);
        if ((flags & Shut.Send) !== 0 && c.outFin < 0) c.outFin = c.outQ.endSeq;
        if ((flags & Shut.Rcv) !== 0) {
          c.guestRcvShut = true;
          c.inQ.ackTo(c.inQ.endSeq);
        }
        this.pumpUp(c);
        this.maybeDone(c);
        return;
      }
      case Op.Rw: {
        if (c.state !== ConnState.Open || c.outFin >= 0) {
          this.log.warn({ vm: this.vmName, connId: c.connId, state: c.state, fin: c.outFin }, 'vsock: RW on a connection that is not open for sending; resetting it');
          this.resetConn(c, ResetReason.Protocol, true);
          return;
        }
        if (c.outQ.length + len > OUT_BUF_ALLOC) {
          this.log.warn({ vm: this.vmName, connId: c.connId, held: c.outQ.length, len }, 'vsock: the guest sent beyond the credit we gave; resetting the connection');
          this.resetConn(c, ResetReason.Protocol, true);
          return;
        }
        c.outQ.push(p.subarray(HDR_BYTES));
        this.pumpIn(c);
        this.pumpUp(c);
        return;
      }
      case Op.CreditUpdate:
        this.pumpIn(c);
        this.pumpUp(c);
        this.maybeDone(c);
        return;
      case Op.CreditRequest:
        this.sendCtrl(c, Op.CreditUpdate, 0);
        return;
      case Op.Request:
        // A REQUEST on a port pair we use: the guest is confused; reset.
        this.resetConn(c, ResetReason.Protocol, true);
        return;
      default:
        this.drop(`unknown op ${op}`, p);
        this.resetConn(c, ResetReason.Protocol, true);
    }
  }

  // ---- towards the guest ----

  /** Sends client→VM bytes as far as the guest's credit and the ring allow; then SHUTDOWN at the end. */
  private pumpIn(c: VsockConn): void {
    if (this.frozen || c.state !== ConnState.Open || c.guestRcvShut) return;
    if (this.backlog.length > 0 && !this.flushBacklog()) return;
    const port = this.port;
    while (c.inQ.length > 0) {
      const inFlight = ((c.inQ.ackSeq - c.peerFwdCnt) % TWO_32 + TWO_32) % TWO_32;
      const credit = c.peerBufAlloc - inFlight;
      if (credit <= 0) {
        this.askCredit(c);
        return;
      }
      const room = port.freeBytes - RING_RECORD_OVERHEAD - HDR_BYTES;
      const n = Math.min(c.inQ.length, credit, MAX_PACKET_PAYLOAD, room);
      if (n <= 0) {
        this.retryLater();
        return;
      }
      c.inQ.copyOut(c.inQ.ackSeq, this.scratch, HDR_BYTES, n);
      if (!this.sendPacket(c, Op.Rw, 0, n)) {
        this.retryLater();
        return;
      }
      c.inQ.ackTo(c.inQ.ackSeq + n);
    }
    if (c.inFin >= 0 && !c.finToGuest && c.inQ.ackSeq === c.inFin) {
      c.finToGuest = true;
      this.sendCtrl(c, Op.Shutdown, Shut.Send);
    }
  }

  private askCredit(c: VsockConn): void {
    const now = performance.now();
    if (now - c.creditRequestedAt < CREDIT_REQUEST_RETRY_MS) return;
    c.creditRequestedAt = now;
    this.sendCtrl(c, Op.CreditRequest, 0);
    // A guest that never answers is re-asked; one that does wakes pumpIn itself.
    if (!this.retryTimer) this.retryTimer = setTimeout(() => this.retry(), CREDIT_REQUEST_RETRY_MS);
  }

  /** Sends scratch[0, HDR_BYTES + n): the header is written here, the payload (if any) is already in place. */
  private sendPacket(c: VsockConn, op: Op, flags: number, n: number): boolean {
    const b = this.scratch;
    c.fwdAdvertised = c.outQ.ackSeq;
    writeHdr(b, HOST_CID, this.port.guestCid, c.hostPort, c.guestPort, n, op, flags, OUT_BUF_ALLOC, c.outQ.ackSeq >>> 0);
    const ok = this.port.send(b.subarray(0, HDR_BYTES + n));
    if (ok) this.stats.packetsOut++;
    return ok;
  }

  /** A control packet (no payload): sent now, or held in order until the ring has room. */
  private sendCtrl(c: VsockConn, op: Op, flags: number): void {
    if (!this.frozen && this.backlog.length === 0 && this.sendPacket(c, op, flags, 0)) return;
    c.fwdAdvertised = c.outQ.ackSeq;
    const b = new Uint8Array(HDR_BYTES);
    writeHdr(b, HOST_CID, this.port.guestCid, c.hostPort, c.guestPort, 0, op, flags, OUT_BUF_ALLOC, c.outQ.ackSeq >>> 0);
    this.backlog.push(b);
    if (!this.frozen) this.retryLater();
  }

  private rawRst(hostPort: number, guestPort: number): void {
    const b = new Uint8Array(HDR_BYTES);
    writeHdr(b, HOST_CID, this.port.guestCid, hostPort, guestPort, 0, Op.Rst, 0, 0, 0);
    if (this.frozen || this.backlog.length > 0 || !this.port.send(b)) this.backlog.push(b);
  }

  /** Sends held packets in order; true once none are left. */
  private flushBacklog(): boolean {
    if (this.frozen) return false;
    let i = 0;
    while (i < this.backlog.length && this.port.send(this.backlog[i]!)) i++;
    this.stats.packetsOut += i;
    if (i > 0) this.backlog.splice(0, i);
    if (this.backlog.length > 0) {
      this.retryLater();
      return false;
    }
    return true;
  }

  private retryLater(): void {
    if (this.retryTimer !== undefined || this.frozen) return;
    this.retryTimer = setTimeout(() => this.retry(), RETRY_MS);
  }

  private retry(): void {
    this.retryTimer = undefined;
    if (this.frozen || this.disposed) return;
    if (!this.flushBacklog()) return;
    for (const c of [...this.conns.values()]) {
      this.pumpIn(c);
      this.pumpUp(c);
      this.maybeDone(c);
    }
  }

  // ---- towards the gateway ----

  /** Tells upstream whatever it has not yet heard: opened, new bytes, the FIN, the ack. */
  private pumpUp(c: VsockConn): void {
    const u = c.local ?? this.upstream;
    if (this.frozen || u === undefined) return;
    if (c.state === ConnState.Open && !c.openedSent) {
      c.openedSent = true;
      u.opened(c.connId);
    }
    if (c.outSent < c.outQ.endSeq) {
      this.upConn = c;
      c.outSent = c.outQ.forEachFrom(c.outSent, 64 * 1024, this.sendUp);
    }
    if (c.outFin >= 0 && !c.finSent && c.outSent >= c.outFin) {
      c.finSent = true;
      u.fin(c.connId, c.outFin);
    }
    // Acknowledged = given to the guest (or dropped after it stopped reading): the gateway's window
    // then bounds what waits here. The FIN counts once the guest has been told.
    let acked = c.inQ.ackSeq;
    if (c.inFin >= 0 && acked === c.inFin && (c.finToGuest || c.guestRcvShut)) acked = c.inFin + 1;
    if (acked !== c.ackSent) {
      c.ackSent = acked;
      u.ack(c.connId, acked);
    }
  }

  private upstreamReset(connId: number, reason: ResetReason): void {
    if (this.frozen) this.pendingResets.push({ connId, reason });
    else this.upstream?.reset(connId, reason);
  }

  /** Drops a connection: RST to the guest (unless it reset it), RESET upstream if `tellUpstream` or the gateway still expects data. */
  private resetConn(c: VsockConn, reason: ResetReason, tellUpstream: boolean): void {
    this.stats.resets++;
    if (!c.guestReset) this.sendCtrl(c, Op.Rst, 0);
    this.remove(c);
    if (c.local !== undefined) {
      if (tellUpstream || reason === ResetReason.Refused || reason === ResetReason.VmGone) c.local.reset(c.connId, reason);
      c.local.closed(c.connId);
      return;
    }
    if (tellUpstream || reason === ResetReason.Refused || reason === ResetReason.VmGone) this.upstreamReset(c.connId, reason);
    if (this.frozen) return;
    this.upstream?.closed(c.connId);
  }

  /** Both directions finished and acknowledged: a clean close; the guest gets its final RST. */
  private maybeDone(c: VsockConn): void {
    const inDone = c.guestRcvShut || (c.inFin >= 0 && c.finToGuest);
    const outDone = c.outFin >= 0 && c.outFinAcked;
    if (!inDone || !outDone) return;
    if (!c.guestReset) this.sendCtrl(c, Op.Rst, 0);
    this.remove(c);
    if (c.local !== undefined) c.local.closed(c.connId);
    else if (!this.frozen) this.upstream?.closed(c.connId);
  }

  private add(c: VsockConn): void {
    this.conns.set(c.connId, c);
    this.byHostPort.set(c.hostPort, c);
  }

  private remove(c: VsockConn): void {
    this.conns.delete(c.connId);
    if (this.byHostPort.get(c.hostPort) === c) this.byHostPort.delete(c.hostPort);
  }
}

// ---- state (docs/networking.md, "Endpoint state") ----

export const ENDPOINT_STATE_VERSION = 1;

export interface EndpointState {
  nextHostPort: number;
  conns: VsockConn[];
  /** Packets for the guest not yet in its rx queue, in order. */
  packets: Uint8Array[];
}

export class EndpointStateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StateFormatError';
  }
}

const FLAG_FIN_TO_GUEST = 1;
const FLAG_OUT_FIN_ACKED = 2;
const FLAG_GUEST_RCV_SHUT = 4;
const FLAG_GUEST_RESET = 8;
const CONN_FIXED_BYTES = 4 + 4 + 4 + 1 + 1 + 4 + 4 + 4 + 8 + 8 + 4 + 8 + 8 + 4;

function put64(v: DataView, at: number, n: number): void {
  v.setUint32(at, n % TWO_32, true);
  v.setUint32(at + 4, Math.floor(n / TWO_32), true);
}

function get64(v: DataView, at: number): number {
  const lo = v.getUint32(at, true);
  const hi = v.getUint32(at + 4, true);
  if (hi > 0x1f_ffff) throw new EndpointStateError(`endpoint state: a 64-bit value at offset ${at} exceeds 2^53`);
  return hi * TWO_32 + lo;
}

/** -1 travels as 2^53 - 1 ("none"). */
const NONE = Number.MAX_SAFE_INTEGER;

export function encodeEndpointState(s: EndpointState): Uint8Array {
  const inBytes = s.conns.map((c) => c.inQ.toBytes());
  const outBytes = s.conns.map((c) => c.outQ.toBytes());
  let size = 2 + 2 + 4 + 4;
  for (let i = 0; i < s.conns.length; i++) size += CONN_FIXED_BYTES + inBytes[i]!.length + outBytes[i]!.length;
  size += 4;
  for (const p of s.packets) size += 4 + p.length;
  const b = new Uint8Array(size);
  const v = new DataView(b.buffer);
  let o = 0;
  v.setUint16(o, ENDPOINT_STATE_VERSION, true);
  v.setUint16(o + 2, 0, true);
  v.setUint32(o + 4, s.nextHostPort, true);
  v.setUint32(o + 8, s.conns.length, true);
  o += 12;
  s.conns.forEach((c, i) => {
    v.setUint32(o, c.connId, true);
    v.setUint32(o + 4, c.guestPort, true);
    v.setUint32(o + 8, c.hostPort, true);
    v.setUint8(o + 12, c.state);
    v.setUint8(o + 13, (c.finToGuest ? FLAG_FIN_TO_GUEST : 0) | (c.outFinAcked ? FLAG_OUT_FIN_ACKED : 0) | (c.guestRcvShut ? FLAG_GUEST_RCV_SHUT : 0) | (c.guestReset ? FLAG_GUEST_RESET : 0));
    v.setUint32(o + 14, c.peerBufAlloc, true);
    v.setUint32(o + 18, c.peerFwdCnt, true);
    v.setUint32(o + 22, c.fwdAdvertised >>> 0, true);
    put64(v, o + 26, c.inQ.ackSeq);
    put64(v, o + 34, c.inFin < 0 ? NONE : c.inFin);
    v.setUint32(o + 42, inBytes[i]!.length, true);
    put64(v, o + 46, c.outQ.ackSeq);
    put64(v, o + 54, c.outFin < 0 ? NONE : c.outFin);
    v.setUint32(o + 62, outBytes[i]!.length, true);
    o += CONN_FIXED_BYTES;
    b.set(inBytes[i]!, o);
    o += inBytes[i]!.length;
    b.set(outBytes[i]!, o);
    o += outBytes[i]!.length;
  });
  v.setUint32(o, s.packets.length, true);
  o += 4;
  for (const p of s.packets) {
    v.setUint32(o, p.length, true);
    b.set(p, o + 4);
    o += 4 + p.length;
  }
  return b;
}

export function decodeEndpointState(b: Uint8Array): EndpointState {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let o = 0;
  const need = (n: number, what: string): void => {
    if (b.length - o < n) throw new EndpointStateError(`endpoint state: truncated in ${what} (offset ${o}, ${b.length} bytes)`);
  };
  need(12, 'header');
  const version = v.getUint16(0, true);
  if (version !== ENDPOINT_STATE_VERSION) throw new EndpointStateError(`endpoint state version ${version} is not supported (this tern reads version ${ENDPOINT_STATE_VERSION})`);
  const nextHostPort = v.getUint32(4, true);
  const n = v.getUint32(8, true);
  o = 12;
  const conns: VsockConn[] = [];
  const ids = new Set<number>();
  for (let i = 0; i < n; i++) {
    need(CONN_FIXED_BYTES, `connection ${i}`);
    const state = v.getUint8(o + 12);
    if (state !== ConnState.Connecting && state !== ConnState.Open) throw new EndpointStateError(`endpoint state: connection ${i} has state ${state}`);
    const flags = v.getUint8(o + 13);
    const inSent = get64(v, o + 26);
    const inFinRaw = get64(v, o + 34);
    const inLen = v.getUint32(o + 42, true);
    const outAck = get64(v, o + 46);
    const outFinRaw = get64(v, o + 54);
    const outLen = v.getUint32(o + 62, true);
    const connId = v.getUint32(o, true);
    if (ids.has(connId)) throw new EndpointStateError(`endpoint state: connection id ${connId} appears twice`);
    ids.add(connId);
    const base = o;
    o += CONN_FIXED_BYTES;
    need(inLen + outLen, `connection ${i} bytes`);
    const inQ = ByteQueue.from(inSent, b.subarray(o, o + inLen));
    o += inLen;
    const outQ = ByteQueue.from(outAck, b.subarray(o, o + outLen));
    o += outLen;
    conns.push({
      connId,
      guestPort: v.getUint32(base + 4, true),
      hostPort: v.getUint32(base + 8, true),
      state,
      inQ,
      inFin: inFinRaw === NONE ? -1 : inFinRaw,
      finToGuest: (flags & FLAG_FIN_TO_GUEST) !== 0,
      outQ,
      outFin: outFinRaw === NONE ? -1 : outFinRaw,
      outFinAcked: (flags & FLAG_OUT_FIN_ACKED) !== 0,
      guestRcvShut: (flags & FLAG_GUEST_RCV_SHUT) !== 0,
      guestReset: (flags & FLAG_GUEST_RESET) !== 0,
      peerBufAlloc: v.getUint32(base + 14, true),
      peerFwdCnt: v.getUint32(base + 18, true),
      fwdAdvertised: outAck,
      outSent: outAck,
      ackSent: -1,
      openedSent: false,
      finSent: false,
      creditRequestedAt: -Infinity,
    });
  }
  need(4, 'packet count');
  const np = v.getUint32(o, true);
  o += 4;
  const packets: Uint8Array[] = [];
  for (let i = 0; i < np; i++) {
    need(4, `packet ${i}`);
    const len = v.getUint32(o, true);
    o += 4;
    need(len, `packet ${i}`);
    packets.push(b.slice(o, o + len));
    o += len;
  }
  if (o !== b.length) throw new EndpointStateError(`endpoint state: ${b.length - o} trailing bytes`);
  return { nextHostPort, conns, packets };
}
