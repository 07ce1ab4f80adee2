/**
 * The gateway (`tern gateway serve`): holds the clients' real TCP connections on the exposed
 * ports and relays each one, with byte offsets, over a link to the host that runs the VM. Hosts
 * dial in and announce their VMs (ATTACH); a newer announcement (higher epoch) moves a VM, and
 * every open stream resumes there from the offsets both sides hold (docs/networking.md).
 */
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { createServer, type Server, type Socket } from 'node:net';
import type { Logger } from '../util/log.js';
import { ByteQueue } from './byte-queue.js';
import { TableWriter, loadTable, type TableEntry } from './gateway-table.js';
import {
  LINK_MAJOR,
  LinkType,
  MAX_DATA_BYTES,
  ResetReason,
  encodeAck,
  encodeAttached,
  encodeData,
  encodeFin,
  encodeOpen,
  encodeReset,
  encodeStatus,
  encodeWelcome,
  type AttachedConn,
  type Exposure,
  type LinkMessage,
} from './link-protocol.js';
import { LinkSocket } from './link-socket.js';

/** Client→VM bytes in flight per connection (unacknowledged by the host) before we stop reading the client. */
export const GATEWAY_WINDOW = 256 * 1024;
/** VM→client bytes queued in a client socket before we stop acknowledging (the host then stops the guest). */
const CLIENT_HIGH_WATER = 256 * 1024;
/** A client waiting for a VM that is not attached (gateway just restarted) is reset after this long. */
export const PENDING_OPEN_MS = 10_000;

export interface GatewayOptions {
  readonly name: string;
  /** Where to bind exposed ports (the link listen host by default). */
  readonly exposeHost: string;
  readonly stateFile?: string;
  readonly log: Logger;
  readonly pendingOpenMs?: number;
}

interface HostSession {
  readonly id: number;
  readonly link: LinkSocket;
  readonly remote: string;
  hostName: string | undefined;
  /** A `tern gateway status` client, not a host. */
  statusOnly: boolean;
}

interface GwVm {
  readonly uuid: string;
  readonly uuidBytes: Uint8Array;
  entry: TableEntry;
  session: HostSession | undefined;
  readonly conns: Set<GwConn>;
}

interface GwConn {
  readonly id: number;
  readonly vm: GwVm;
  readonly vmPort: number;
  readonly socket: Socket;
  /** Client→VM bytes the host has not yet acknowledged. */
  readonly inQ: ByteQueue;
  /** Sent on the current route up to here. */
  inSent: number;
  inFin: number;
  finSent: boolean;
  inFinAcked: boolean;
  /** VM→client bytes written to the client. */
  outReceived: number;
  outFin: number;
  outAcked: number;
  /** OPEN has gone to the VM's current host. */
  openSent: boolean;
  opened: boolean;
  readingPaused: boolean;
  dead: boolean;
  pendingTimer: NodeJS.Timeout | undefined;
}

export interface GatewayEvents {
  /** One status line (serve --json prints these). */
  status: [event: Record<string, unknown>];
}

export interface GatewayStatus {
  name: string;
  listen: string;
  hosts: { host: string; remote: string; vms: string[] }[];
  vms: { name: string; uuid: string; epoch: number; host: string | null; exposures: Exposure[]; connections: number }[];
  connections: number;
}

export class Gateway extends EventEmitter<GatewayEvents> {
  readonly id = new Uint8Array(randomBytes(8));
  private linkServer: Server | undefined;
  private listenAddr = '';
  private readonly sessions = new Set<HostSession>();
  private readonly vms = new Map<string, GwVm>();
  private readonly ports = new Map<number, { server: Server; vm: GwVm }>();
  private readonly conns = new Map<number, GwConn>();
  private nextConnId = randomBytes(4).readUInt32LE(0) & 0x7fff_ffff;
  private nextSessionId = 1;
  private readonly writer: TableWriter | undefined;
  private readonly log: Logger;
  private closing = false;
  /** pumpToVm's target, for sendToVm (made once: no closure per chunk). */
  private pumpConnId = 0;
  private pumpLink: LinkSocket | undefined;
  private pumpLimit = 0;
  private readonly sendToVm = (bytes: Uint8Array, seq: number): boolean => {
    if (seq >= this.pumpLimit) return false;
    this.pumpLink!.send(encodeData(this.pumpConnId, seq, bytes));
    return true;
  };

  constructor(private readonly opts: GatewayOptions) {
    super();
    this.log = opts.log;
    this.writer = opts.stateFile !== undefined ? new TableWriter(opts.stateFile) : undefined;
  }

  /** Loads the table (re-listening on its ports), then listens for host links. */
  async start(host: string, port: number): Promise<{ host: string; port: number }> {
    if (this.opts.stateFile !== undefined) {
      for (const e of await loadTable(this.opts.stateFile)) {
        const vm = this.vmFor(e.uuid, e.name);
        vm.entry = e;
        for (const x of e.exposures) {
          try {
            await this.listenPort(vm, x.hostPort);
          } catch (err) {
            this.log.error({ vm: e.name, port: x.hostPort, err: (err as Error).message }, 'gateway: cannot listen again on an exposed port from the state file');
          }
        }
      }
      if (this.vms.size > 0) this.log.info({ vms: this.vms.size, ports: this.ports.size }, 'gateway: table restored; waiting for hosts to relink');
    }
    const server = createServer((s) => this.onLink(s));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (e) => this.log.error({ err: e.message }, 'gateway: link listener error'));
    this.linkServer = server;
    const a = server.address();
    const bound = typeof a === 'object' && a !== null ? { host: a.address, port: a.port } : { host, port };
    this.listenAddr = `${bound.host.includes(':') ? `[${bound.host}]` : bound.host}:${bound.port}`;
    return bound;
  }

  async close(): Promise<void> {
    this.closing = true;
    for (const c of [...this.conns.values()]) this.killConn(c, 'gateway stopping');
    for (const s of this.sessions) s.link.close('gateway stopping', true);
    await Promise.all([...this.ports.values()].map((l) => new Promise<void>((r) => l.server.close(() => r()))));
    this.ports.clear();
    if (this.linkServer !== undefined) await new Promise<void>((r) => this.linkServer!.close(() => r()));
  }

  status(): GatewayStatus {
    return {
      name: this.opts.name,
      listen: this.listenAddr,
      hosts: [...this.sessions].filter((s) => s.hostName !== undefined).map((s) => ({ host: s.hostName ?? '?', remote: s.remote, vms: [...this.vms.values()].filter((v) => v.session === s).map((v) => v.entry.name) })),
      vms: [...this.vms.values()].map((v) => ({ name: v.entry.name, uuid: v.uuid, epoch: v.entry.epoch, host: v.session?.hostName ?? null, exposures: v.entry.exposures, connections: v.conns.size })),
      connections: this.conns.size,
    };
  }

  // ---- links ----

  private onLink(socket: Socket): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    const remote = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
    const session: HostSession = {
      id: this.nextSessionId++,
      remote,
      hostName: undefined,
      statusOnly: false,
      link: new LinkSocket(socket, (m) => this.onMessage(session, m), (reason) => this.onLinkClosed(session, reason)),
    };
    this.sessions.add(session);
  }

  private onLinkClosed(s: HostSession, reason: string): void {
    this.sessions.delete(s);
    let reset = 0;
    const names: string[] = [];
    for (const vm of this.vms.values()) {
      if (vm.session !== s) continue;
      vm.session = undefined;
      names.push(vm.entry.name);
      for (const c of [...vm.conns]) {
        reset++;
        this.killConn(c, 'host gone');
      }
    }
    if (this.closing || s.statusOnly) return;
    if (s.hostName === undefined) {
      this.log.warn({ remote: s.remote, reason }, 'gateway: a link closed before HELLO');
      return;
    }
    this.log.warn({ host: s.hostName, remote: s.remote, reason, vms: names, connectionsReset: reset }, 'gateway: host link closed');
    this.emit('status', { event: 'host-lost', host: s.hostName ?? null, remote: s.remote, reason, vms: names, connectionsReset: reset });
  }

  private fail(s: HostSession, why: string): void {
    this.log.warn({ host: s.hostName, remote: s.remote, why }, 'gateway: closing a link that broke the protocol');
    s.link.close(why, true);
  }

  private onMessage(s: HostSession, m: LinkMessage): void {
    if (s.hostName === undefined) {
      if (m.type === LinkType.StatusRequest) {
        s.statusOnly = true;
        s.link.send(encodeStatus(JSON.stringify(this.status())));
        s.link.socket.end();
        return;
      }
      if (m.type !== LinkType.Hello) return this.fail(s, `expected HELLO first, got frame type ${m.type}`);
      if (m.major !== LINK_MAJOR) return this.fail(s, `link protocol ${m.major}.${m.minor} is not supported (this gateway speaks ${LINK_MAJOR}.x)`);
      s.hostName = m.hostName;
      s.link.send(encodeWelcome(this.id, this.opts.name));
      this.log.info({ host: m.hostName, remote: s.remote }, 'gateway: host linked');
      this.emit('status', { event: 'host-linked', host: m.hostName, remote: s.remote });
      return;
    }
    switch (m.type) {
      case LinkType.Attach:
        void this.attach(s, m.uuid, m.epoch, m.name, m.exposures, m.conns);
        return;
      case LinkType.Detach:
        this.detach(s, hex(m.uuid));
        return;
      case LinkType.Opened: {
        const c = this.routed(s, m.connId, false);
        if (c !== undefined) c.opened = true;
        return;
      }
      case LinkType.Data: {
        const c = this.routed(s, m.connId);
        if (c === undefined) return;
        this.fromVm(c, m.seq, m.bytes);
        return;
      }
      case LinkType.Fin: {
        const c = this.routed(s, m.connId);
        if (c === undefined) return;
        if (m.seq !== c.outReceived || c.outFin >= 0) {
          if (c.outFin === m.seq) return;
          this.log.warn({ connId: c.id, seq: m.seq, have: c.outReceived }, 'gateway: FIN at the wrong offset; resetting the connection');
          this.resetBoth(c, ResetReason.Protocol);
          return;
        }
        c.outFin = m.seq;
        c.socket.end();
        this.ackOut(c);
        this.maybeDone(c);
        return;
      }
      case LinkType.Ack: {
        // A late ACK for a connection both sides finished is harmless.
        const c = this.routed(s, m.connId, false);
        if (c === undefined) return;
        this.onAck(c, m.seq);
        return;
      }
      case LinkType.Reset: {
        const c = this.conns.get(m.connId);
        if (c === undefined || c.vm.session !== s) return;
        this.log.debug({ connId: c.id, reason: m.reason }, 'gateway: host reset a connection');
        this.killConn(c, 'reset by the VM side');
        return;
      }
      default:
        this.fail(s, `a host may not send frame type ${m.type}`);
    }
  }

  /** The connection, if it is routed over this session; otherwise the frame is stale (from a host the VM left). */
  private routed(s: HostSession, connId: number, resetIfUnknown = true): GwConn | undefined {
    const c = this.conns.get(connId);
    if (c === undefined || c.vm.session !== s) {
      if (c === undefined && resetIfUnknown) s.link.send(encodeReset(connId, ResetReason.Unknown));
      return undefined;
    }
    return c;
  }

  // ---- VMs ----

  private vmFor(uuid: string, name: string): GwVm {
    let vm = this.vms.get(uuid);
    if (vm === undefined) {
      vm = { uuid, uuidBytes: Uint8Array.from(Buffer.from(uuid, 'hex')), entry: { uuid, name, epoch: 0, exposures: [], host: '' }, session: undefined, conns: new Set() };
      this.vms.set(uuid, vm);
    }
    return vm;
  }

  private async attach(s: HostSession, uuidBytes: Uint8Array, epoch: number, name: string, exposures: Exposure[], hostConns: { connId: number; vmPort: number; opened: boolean; inAcked: number }[]): Promise<void> {
    const uuid = hex(uuidBytes);
    const existing = this.vms.get(uuid);
    const refuse = (why: string): void => {
      this.log.warn({ vm: name, host: s.hostName, why }, 'gateway: announcement refused');
      s.link.send(encodeAttached(uuidBytes, false, why, hostConns.map((c) => ({ connId: c.connId, known: false, outReceived: 0 }))));
    };
    if (existing !== undefined && epoch < existing.entry.epoch) {
      return refuse(`stale announcement: VM ${name} is at epoch ${existing.entry.epoch} (host ${existing.entry.host}), this one says ${epoch}`);
    }
    const ports = new Set<number>();
    for (const x of exposures) {
      if (ports.has(x.hostPort)) return refuse(`port ${x.hostPort} is exposed twice`);
      ports.add(x.hostPort);
      const owner = this.ports.get(x.hostPort);
      if (owner !== undefined && owner.vm.uuid !== uuid) return refuse(`port ${x.hostPort} is already exposed for VM ${owner.vm.entry.name}`);
    }
    const vm = this.vmFor(uuid, name);
    for (const x of exposures) {
      if (this.ports.has(x.hostPort)) continue;
      try {
        await this.listenPort(vm, x.hostPort);
      } catch (e) {
        if (vm.entry.exposures.length === 0 && vm.conns.size === 0 && existing === undefined) this.vms.delete(uuid);
        return refuse(`cannot listen on port ${x.hostPort} for VM ${name}: ${(e as Error).message}`);
      }
    }
    if (s.link.closed) return;
    // Ports it no longer exposes close (their open connections stay).
    for (const old of vm.entry.exposures) {
      if (!ports.has(old.hostPort)) this.unlistenPort(old.hostPort);
    }
    const moved = vm.session !== undefined && vm.session !== s;
    const from = vm.session?.hostName ?? null;
    vm.session = s;
    vm.entry = { uuid, name, epoch, exposures: exposures.map((x) => ({ ...x })), host: s.hostName ?? '' };
    void this.persist();

    // Resume every stream from what the host holds; the host resumes from what we hold.
    const answer: AttachedConn[] = [];
    const listed = new Set<number>();
    for (const hc of hostConns) {
      const c = this.conns.get(hc.connId);
      if (c === undefined || c.vm !== vm || c.dead) {
        answer.push({ connId: hc.connId, known: false, outReceived: 0 });
        continue;
      }
      listed.add(c.id);
      // The host holds (not necessarily delivered) up to `held`: send from there. Our ack stays
      // what the host delivered, so the window still bounds what waits at the host.
      const held = Math.min(hc.inAcked, c.inFin >= 0 ? c.inFin + 1 : c.inQ.endSeq);
      c.inSent = Math.max(c.inQ.ackSeq, Math.min(held, c.inQ.endSeq));
      c.finSent = c.inFinAcked || (c.inFin >= 0 && held > c.inFin);
      c.openSent = true;
      if (hc.opened) c.opened = true;
      answer.push({ connId: c.id, known: true, outReceived: c.outFin >= 0 ? c.outFin + 1 : c.outReceived });
    }
    s.link.send(encodeAttached(uuidBytes, true, '', answer));
    let resent = 0;
    let reopened = 0;
    let lost = 0;
    for (const c of [...vm.conns]) {
      if (listed.has(c.id)) {
        resent += c.inQ.endSeq - c.inSent;
        this.pumpToVm(c);
        this.resumeReading(c);
        this.maybeDone(c);
      } else if (!c.opened) {
        // The host never took the OPEN (it went to the old host during the move): ask again.
        c.openSent = false;
        c.inSent = c.inQ.ackSeq;
        c.finSent = false;
        reopened++;
        this.sendOpen(c);
      } else if (c.outFin >= 0 && c.outReceived === c.outFin) {
        // The VM side finished it cleanly and forgot it: nothing is lost.
        this.forgetConn(c);
      } else {
        lost++;
        this.killConn(c, 'the VM no longer has the connection');
      }
    }
    this.log.info({ vm: name, host: s.hostName, epoch, moved, from, connections: listed.size, reopened, lost, resentBytes: resent }, moved ? 'gateway: VM moved; streams resumed' : 'gateway: VM announced');
    this.emit('status', { event: moved ? 'vm-moved' : 'vm-attached', vm: name, host: s.hostName ?? null, from, epoch, connections: listed.size, reopened, lost });
  }

  private detach(s: HostSession, uuid: string): void {
    const vm = this.vms.get(uuid);
    if (vm === undefined || vm.session !== s) return;
    for (const c of [...vm.conns]) this.killConn(c, 'VM stopped');
    for (const x of vm.entry.exposures) this.unlistenPort(x.hostPort);
    this.vms.delete(uuid);
    void this.persist();
    this.log.info({ vm: vm.entry.name, host: s.hostName }, 'gateway: VM withdrawn');
    this.emit('status', { event: 'vm-detached', vm: vm.entry.name, host: s.hostName ?? null });
  }

  private async persist(): Promise<void> {
    if (this.writer === undefined) return;
    try {
      await this.writer.save([...this.vms.values()].map((v) => v.entry));
    } catch (e) {
      this.log.error({ file: this.opts.stateFile, err: (e as Error).message }, 'gateway: cannot write the state file');
    }
  }

  private listenPort(vm: GwVm, port: number): Promise<void> {
    const server = createServer({ allowHalfOpen: true }, (sock) => this.onClient(port, sock));
    return new Promise((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) => reject(new Error(e.code === 'EADDRINUSE' ? 'the port is already in use' : e.code === 'EACCES' ? 'permission denied' : (e.code ?? e.message))));
      server.listen(port, this.opts.exposeHost, () => {
        server.removeAllListeners('error');
        server.on('error', (e) => this.log.error({ port, err: e.message }, 'gateway: exposed port error'));
        this.ports.set(port, { server, vm });
        this.log.info({ vm: vm.entry.name, port }, 'gateway: listening on an exposed port');
        resolve();
      });
    });
  }

  private unlistenPort(port: number): void {
    const l = this.ports.get(port);
    if (l === undefined) return;
    this.ports.delete(port);
    l.server.close();
  }

  // ---- clients ----

  private onClient(port: number, socket: Socket): void {
    const l = this.ports.get(port);
    if (l === undefined || this.closing) {
      socket.resetAndDestroy();
      return;
    }
    const vm = l.vm;
    const x = vm.entry.exposures.find((e) => e.hostPort === port);
    if (x === undefined) {
      socket.resetAndDestroy();
      return;
    }
    socket.setNoDelay(true);
    let id = this.nextConnId;
    while (this.conns.has(id)) id = (id + 1) >>> 0;
    this.nextConnId = (id + 1) >>> 0;
    const c: GwConn = {
      id, vm, vmPort: x.vmPort, socket, inQ: new ByteQueue(0), inSent: 0, inFin: -1, finSent: false, inFinAcked: false,
      outReceived: 0, outFin: -1, outAcked: 0, openSent: false, opened: false, readingPaused: false, dead: false, pendingTimer: undefined,
    };
    this.conns.set(id, c);
    vm.conns.add(c);
    socket.on('data', (chunk: Buffer) => this.fromClient(c, chunk));
    socket.on('end', () => this.clientEnded(c));
    socket.on('error', () => {}); // 'close' says what happened
    socket.on('close', (hadError) => this.clientClosed(c, hadError));
    socket.on('drain', () => this.ackOut(c));
    this.sendOpen(c);
  }

  private sendOpen(c: GwConn): void {
    const s = c.vm.session;
    if (s === undefined) {
      // The VM is not attached (yet): hold the client a while.
      if (c.pendingTimer === undefined) {
        c.pendingTimer = setTimeout(() => {
          c.pendingTimer = undefined;
          if (!c.openSent && !c.dead) this.killConn(c, 'the VM did not come back in time');
        }, this.opts.pendingOpenMs ?? PENDING_OPEN_MS);
      }
      return;
    }
    clearTimeout(c.pendingTimer);
    c.pendingTimer = undefined;
    c.openSent = true;
    s.link.send(encodeOpen(c.id, c.vm.uuidBytes, c.vmPort));
    this.pumpToVm(c);
  }

  private fromClient(c: GwConn, chunk: Buffer): void {
    if (c.dead || c.inFin >= 0) return;
    c.inQ.push(chunk);
    this.pumpToVm(c);
    if (c.inQ.length >= GATEWAY_WINDOW && !c.readingPaused) {
      c.readingPaused = true;
      c.socket.pause();
    }
  }

  /** Sends client→VM bytes not yet sent on the current route, within the window; then the FIN. */
  private pumpToVm(c: GwConn): void {
    const s = c.vm.session;
    if (s === undefined || !c.openSent || c.dead) return;
    const limit = c.inQ.ackSeq + GATEWAY_WINDOW;
    if (c.inSent < c.inQ.endSeq && c.inSent < limit) {
      this.pumpConnId = c.id;
      this.pumpLink = s.link;
      this.pumpLimit = limit;
      c.inSent = c.inQ.forEachFrom(c.inSent, MAX_DATA_BYTES, this.sendToVm);
    }
    if (c.inFin >= 0 && !c.finSent && c.inSent === c.inFin) {
      c.finSent = true;
      s.link.send(encodeFin(c.id, c.inFin));
    }
  }

  private resumeReading(c: GwConn): void {
    if (c.readingPaused && c.inQ.length < GATEWAY_WINDOW / 2) {
      c.readingPaused = false;
      c.socket.resume();
    }
  }

  private onAck(c: GwConn, seq: number): void {
    if (c.inFin >= 0 && seq > c.inFin) {
      c.inFinAcked = true;
      seq = c.inFin;
    }
    if (seq > c.inSent) {
      this.log.warn({ connId: c.id, seq, sent: c.inSent }, 'gateway: ACK beyond what was sent; resetting the connection');
      this.resetBoth(c, ResetReason.Protocol);
      return;
    }
    c.inQ.ackTo(seq);
    this.pumpToVm(c);
    this.resumeReading(c);
    this.maybeDone(c);
  }

  private clientEnded(c: GwConn): void {
    if (c.dead || c.inFin >= 0) return;
    c.inFin = c.inQ.endSeq;
    this.pumpToVm(c);
  }

  private clientClosed(c: GwConn, hadError: boolean): void {
    if (c.dead) return;
    const finished = c.inFin >= 0 && c.outFin >= 0 && c.outReceived === c.outFin;
    if (!hadError && finished) return; // both ways done: maybeDone drops it once the host acks
    // The client went away abruptly: the guest gets RST.
    const s = c.vm.session;
    if (s !== undefined && c.openSent) s.link.send(encodeReset(c.id, ResetReason.Reset));
    this.forgetConn(c);
  }

  /** VM→client bytes at `seq`: skip what the client already has, write the rest. */
  private fromVm(c: GwConn, seq: number, bytes: Uint8Array): void {
    if (seq > c.outReceived || c.outFin >= 0) {
      this.log.warn({ connId: c.id, seq, have: c.outReceived }, 'gateway: DATA out of sequence from the host; resetting the connection');
      this.resetBoth(c, ResetReason.Protocol);
      return;
    }
    const skip = c.outReceived - seq;
    if (skip >= bytes.length) return;
    const part = bytes.subarray(skip);
    c.outReceived += part.length;
    // The frame's memory belongs to the link reader: hand the socket a copy.
    c.socket.write(Buffer.from(part));
    this.ackOut(c);
  }

  /** Acknowledges what the client socket has taken, unless it is backed up (then on 'drain'). */
  private ackOut(c: GwConn): void {
    const s = c.vm.session;
    if (s === undefined || c.dead) return;
    if (c.socket.writableLength > CLIENT_HIGH_WATER) return;
    const ack = c.outFin >= 0 && c.outReceived === c.outFin ? c.outFin + 1 : c.outReceived;
    if (ack === c.outAcked) return;
    c.outAcked = ack;
    s.link.send(encodeAck(c.id, ack));
  }

  private maybeDone(c: GwConn): void {
    if (c.inFin >= 0 && c.inFinAcked && c.outFin >= 0 && c.outReceived === c.outFin) this.forgetConn(c);
  }

  /** Reset towards both sides (a protocol violation on the stream). */
  private resetBoth(c: GwConn, reason: ResetReason): void {
    const s = c.vm.session;
    if (s !== undefined && c.openSent) s.link.send(encodeReset(c.id, reason));
    this.killConn(c, 'protocol error');
  }

  /** RST to the client and forget the connection. */
  private killConn(c: GwConn, why: string): void {
    if (c.dead) return;
    this.log.debug({ connId: c.id, vm: c.vm.entry.name, why }, 'gateway: resetting a client connection');
    this.forgetConn(c);
    if (!c.socket.destroyed) c.socket.resetAndDestroy();
  }

  private forgetConn(c: GwConn): void {
    c.dead = true;
    clearTimeout(c.pendingTimer);
    this.conns.delete(c.id);
    c.vm.conns.delete(c);
  }
}

function hex(b: Uint8Array): string {
  return Buffer.from(b).toString('hex');
}
