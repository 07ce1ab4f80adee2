/**
 * A host daemon's link to one gateway: dials it (and dials again, with backoff, whenever the
 * link drops), says HELLO, announces every VM that uses this gateway, and routes the gateway's
 * frames to the VM each connection belongs to.
 */
import { connect } from 'node:net';
import type { Logger } from '../util/log.js';
import { LINK_MAJOR, LinkReader, LinkType, ResetReason, encodeHello, encodeReset, encodeStatusRequest, type LinkMessage } from './link-protocol.js';
import { LinkSocket } from './link-socket.js';

/** A gateway's link address. */
export interface LinkAddress {
  readonly host: string;
  readonly port: number;
}

function formatLinkAddress(a: LinkAddress): string {
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

const RETRY_MIN_MS = 100;
const RETRY_MAX_MS = 2000;
const CONNECT_TIMEOUT_MS = 3000;

/** What the client needs of a VM's network side. */
export interface LinkedVm {
  readonly uuidHex: string;
  /** The link is up (again): announce yourself. */
  linked(): void;
  /** The link is down: the gateway has reset every client of this VM. */
  unlinked(): void;
  /** A frame for this VM (ATTACHED, or one naming one of its connections). */
  receive(m: LinkMessage): void;
}

export class GatewayClient {
  readonly address: string;
  private link: LinkSocket | undefined;
  private welcomed = false;
  private readonly vms = new Map<string, LinkedVm>();
  private readonly routes = new Map<number, LinkedVm>();
  private retryMs = RETRY_MIN_MS;
  private timer: NodeJS.Timeout | undefined;
  private connecting = false;
  private stopped = false;
  private lastError = '';

  constructor(
    private readonly target: LinkAddress,
    private readonly hostName: string,
    private readonly log: Logger,
  ) {
    this.address = formatLinkAddress(target);
  }

  get up(): boolean {
    return this.welcomed && this.link !== undefined && !this.link.closed;
  }

  add(vm: LinkedVm): void {
    this.vms.set(vm.uuidHex, vm);
    if (this.up) vm.linked();
    else this.ensure();
  }

  remove(vm: LinkedVm): void {
    if (this.vms.get(vm.uuidHex) === vm) this.vms.delete(vm.uuidHex);
    for (const [id, v] of this.routes) if (v === vm) this.routes.delete(id);
  }

  route(connId: number, vm: LinkedVm): void {
    this.routes.set(connId, vm);
  }

  unroute(connId: number, vm: LinkedVm): void {
    if (this.routes.get(connId) === vm) this.routes.delete(connId);
  }

  send(frame: Uint8Array): void {
    if (this.up) this.link!.send(frame);
  }

  /** Starts dialing if not linked or dialing already (pre-connect before a VM arrives). */
  ensure(): void {
    if (this.stopped || this.connecting || this.link !== undefined || this.timer !== undefined) return;
    this.dial();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.link?.close('host stopping', true);
  }

  private dial(): void {
    this.connecting = true;
    const socket = connect({ host: this.target.host, port: this.target.port });
    const t = setTimeout(() => socket.destroy(new Error('connect timed out')), CONNECT_TIMEOUT_MS);
    socket.once('connect', () => {
      clearTimeout(t);
      this.connecting = false;
      const link = new LinkSocket(socket, (m) => this.onMessage(m), (reason) => this.onClosed(link, reason));
      this.link = link;
      link.send(encodeHello(this.hostName));
    });
    socket.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(t);
      if (!this.connecting) return; // the LinkSocket reports errors after connect
      this.connecting = false;
      socket.destroy();
      const why = e.code ?? e.message;
      if (why !== this.lastError) this.log.warn({ gateway: this.address, err: why }, 'cannot reach the gateway; retrying');
      this.lastError = why;
      this.retry();
    });
  }

  private retry(): void {
    if (this.stopped || this.timer !== undefined) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.dial();
    }, this.retryMs);
    this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
  }

  private onClosed(link: LinkSocket, reason: string): void {
    if (this.link !== link) return;
    const wasUp = this.welcomed;
    this.link = undefined;
    this.welcomed = false;
    this.routes.clear();
    if (!this.stopped) this.log.warn({ gateway: this.address, reason }, 'gateway link closed');
    if (wasUp) for (const vm of [...this.vms.values()]) vm.unlinked();
    if (this.vms.size > 0 || !wasUp) this.retry();
  }

  private onMessage(m: LinkMessage): void {
    if (!this.welcomed) {
      if (m.type !== LinkType.Welcome) {
        this.link?.close(`expected WELCOME, got frame type ${m.type}`, true);
        return;
      }
      if (m.major !== LINK_MAJOR) {
        this.link?.close(`gateway speaks link protocol ${m.major}.${m.minor}; this host speaks ${LINK_MAJOR}.x`, true);
        return;
      }
      this.welcomed = true;
      this.retryMs = RETRY_MIN_MS;
      this.lastError = '';
      this.log.info({ gateway: this.address, gatewayName: m.name }, 'gateway linked');
      for (const vm of [...this.vms.values()]) vm.linked();
      return;
    }
    switch (m.type) {
      case LinkType.Attached:
      case LinkType.Open: {
        const vm = this.vms.get(Buffer.from(m.uuid).toString('hex'));
        if (vm === undefined) {
          if (m.type === LinkType.Open) this.link?.send(encodeReset(m.connId, ResetReason.VmGone));
          return;
        }
        if (m.type === LinkType.Open) this.routes.set(m.connId, vm);
        vm.receive(m);
        return;
      }
      case LinkType.Data:
      case LinkType.Fin:
      case LinkType.Ack:
      case LinkType.Reset: {
        const vm = this.routes.get(m.connId);
        if (vm === undefined) {
          if (m.type === LinkType.Data || m.type === LinkType.Fin) this.link?.send(encodeReset(m.connId, ResetReason.Unknown));
          return;
        }
        vm.receive(m);
        return;
      }
      default:
        this.link?.close(`a gateway may not send frame type ${m.type}`, true);
    }
  }
}

/** The gateway links of one host, one per gateway address. */
export class GatewayClients {
  private readonly clients = new Map<string, GatewayClient>();

  constructor(
    private readonly hostName: string,
    private readonly log: Logger,
  ) {}

  get(target: LinkAddress): GatewayClient {
    const key = formatLinkAddress(target);
    let c = this.clients.get(key);
    if (c === undefined) {
      c = new GatewayClient(target, this.hostName, this.log);
      this.clients.set(key, c);
    }
    return c;
  }

  stopAll(): void {
    for (const c of this.clients.values()) c.stop();
    this.clients.clear();
  }
}

/** Asks a gateway for its status (`tern gateway status`): one STATUS_REQUEST, one STATUS back. */
export function fetchGatewayStatus(target: LinkAddress, timeoutMs = 5000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: target.host, port: target.port });
    const reader = new LinkReader();
    const t = setTimeout(() => socket.destroy(new Error(`no answer from ${formatLinkAddress(target)} within ${timeoutMs} ms`)), timeoutMs);
    socket.once('connect', () => socket.write(encodeStatusRequest()));
    socket.on('data', (chunk: Buffer) => {
      try {
        reader.push(chunk, (m) => {
          if (m.type === LinkType.Status) {
            clearTimeout(t);
            socket.destroy();
            resolve(JSON.parse(m.json) as unknown);
          } else if (m.type === LinkType.Error) {
            socket.destroy(new Error(`the gateway answered: ${m.text}`));
          }
        });
      } catch (e) {
        socket.destroy(e as Error);
      }
    });
    socket.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(t);
      reject(new Error(`cannot ask the gateway at ${formatLinkAddress(target)}: ${e.code ?? e.message}`));
    });
    socket.once('close', () => {
      clearTimeout(t);
      reject(new Error(`the gateway at ${formatLinkAddress(target)} closed the connection without a status (is it a tern gateway?)`));
    });
  });
}
