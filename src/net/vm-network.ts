/**
 * One VM's network side on its host: its config (gateway, exposed ports, location epoch), its
 * vsock endpoint, and its place on the gateway link. It announces the VM (ATTACH), resumes the
 * streams the gateway answers for, and relays frames between the link and the endpoint. While
 * the VM is paused for migration it is frozen: frames from the gateway wait, nothing is sent.
 */
import type { Logger } from '../util/log.js';
import type { GatewayClient, LinkedVm } from './gateway-client.js';
import {
  LinkType,
  encodeAck,
  encodeAttach,
  encodeData,
  encodeDetach,
  encodeFin,
  encodeOpened,
  encodeReset,
  type AttachConn,
  type Exposure,
  type LinkMessage,
  ResetReason,
} from './link-protocol.js';
import { ConnState, VsockEndpoint, type StreamUpstream } from './vsock-endpoint.js';
import type { VsockHostPort } from './vsock-port.js';

/** What a VM's network is configured with; travels with it. */
export interface NetConfig {
  /** The gateway's link address, host:port; undefined = no gateway. */
  readonly gateway: string | undefined;
  readonly exposures: readonly Exposure[];
  /** Location epoch: 0 at boot, +1 at every activation elsewhere. */
  readonly epoch: number;
}

export class NetConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** Parses `HOSTPORT:VMPORT` (the CLI's --expose and the API's expose items). */
export function parseExposure(text: string, what = 'expose'): Exposure {
  const m = /^(\d{1,5}):(\d{1,10})$/.exec(text.trim());
  if (m === null) throw new NetConfigError(`${what}: '${text}' is not HOSTPORT:VMPORT (example: 6379:6379)`);
  const hostPort = Number(m[1]);
  const vmPort = Number(m[2]);
  if (hostPort < 1 || hostPort > 65535) throw new NetConfigError(`${what}: host port ${hostPort} is outside 1..65535`);
  if (vmPort > 0xffff_fffe) throw new NetConfigError(`${what}: VM port ${vmPort} is outside 0..4294967294`);
  return { hostPort, vmPort };
}

/** Checks a list of exposures: no host port twice. */
export function checkExposures(list: readonly Exposure[]): void {
  const seen = new Set<number>();
  for (const x of list) {
    if (seen.has(x.hostPort)) throw new NetConfigError(`expose: host port ${x.hostPort} is given twice`);
    seen.add(x.hostPort);
  }
}

export class VmNetwork implements StreamUpstream, LinkedVm {
  readonly uuidHex: string;
  readonly endpoint: VsockEndpoint;
  private frozen = false;
  private disposed = false;
  /** Frames from the gateway that arrived while frozen, in order. */
  private held: LinkMessage[] = [];
  private attached = false;
  /** Set when the gateway refused the announcement. */
  lastError: string | undefined;

  constructor(
    readonly uuid: Uint8Array,
    readonly name: string,
    public config: NetConfig,
    port: VsockHostPort,
    private readonly client: GatewayClient | undefined,
    private readonly log: Logger,
  ) {
    this.uuidHex = Buffer.from(uuid).toString('hex');
    this.endpoint = new VsockEndpoint(port, log, name);
  }

  /** Joins the gateway link (announces the VM as soon as the link is up). */
  start(): void {
    this.endpoint.start();
    this.client?.add(this);
  }

  get isAttached(): boolean {
    return this.attached;
  }

  // ---- LinkedVm ----

  linked(): void {
    if (this.disposed) return;
    this.attached = false;
    this.endpoint.setUpstream(undefined);
    this.sendAttach();
  }

  unlinked(): void {
    if (this.disposed) return;
    this.attached = false;
    this.endpoint.setUpstream(undefined);
    this.held = [];
    // The gateway reset every client of ours when the link dropped: the guest's ends go too.
    const n = this.endpoint.connectionCount;
    this.endpoint.resetAll();
    if (n > 0) this.log.warn({ vm: this.name, connections: n }, 'gateway link lost: connections reset');
  }

  receive(m: LinkMessage): void {
    if (this.disposed) return;
    if (this.frozen) {
      // Held, not handled: if the migration fails they are handled here; if it commits, the
      // gateway sends them again to the destination from the offsets it announces.
      this.held.push(m.type === LinkType.Data ? { ...m, bytes: m.bytes.slice() } : m);
      return;
    }
    this.handle(m);
  }

  private handle(m: LinkMessage): void {
    const ep = this.endpoint;
    switch (m.type) {
      case LinkType.Attached:
        this.onAttached(m.ok, m.message, m.conns);
        return;
      case LinkType.Open:
        if (!this.attached) {
          this.client?.send(encodeReset(m.connId, ResetReason.VmGone));
          return;
        }
        ep.open(m.connId, m.vmPort);
        return;
      case LinkType.Data:
        ep.data(m.connId, m.seq, m.bytes);
        return;
      case LinkType.Fin:
        ep.fin(m.connId, m.seq);
        return;
      case LinkType.Ack:
        ep.ack(m.connId, m.seq);
        return;
      case LinkType.Reset:
        ep.reset(m.connId);
        return;
      default:
        return;
    }
  }

  private sendAttach(): void {
    const conns: AttachConn[] = [];
    for (const c of this.endpoint.connections()) {
      conns.push({ connId: c.connId, vmPort: c.guestPort, opened: c.state === ConnState.Open, inAcked: c.inFin >= 0 ? c.inFin + 1 : c.inQ.endSeq });
      this.client?.route(c.connId, this);
    }
    this.client?.send(encodeAttach(this.uuid, this.config.epoch, this.name, this.config.exposures, conns));
  }

  private onAttached(ok: boolean, message: string, conns: readonly { connId: number; known: boolean; outReceived: number }[]): void {
    if (!ok) {
      this.lastError = message;
      this.log.error({ vm: this.name, gateway: this.client?.address, why: message }, 'the gateway refused the VM');
      for (const c of conns) this.endpoint.forget(c.connId);
      return;
    }
    this.lastError = undefined;
    this.attached = true;
    this.endpoint.setUpstream(this);
    let resumed = 0;
    for (const c of conns) {
      if (c.known) {
        resumed++;
        this.endpoint.resumeConn(c.connId, c.outReceived);
      } else {
        this.endpoint.forget(c.connId);
      }
    }
    this.log.info({ vm: this.name, gateway: this.client?.address, epoch: this.config.epoch, resumed, dropped: conns.length - resumed }, 'VM announced to the gateway');
  }

  // ---- StreamUpstream (endpoint → gateway) ----

  opened(connId: number): void {
    this.client?.send(encodeOpened(connId));
  }
  data(connId: number, seq: number, bytes: Uint8Array): void {
    this.client?.send(encodeData(connId, seq, bytes));
  }
  fin(connId: number, seq: number): void {
    this.client?.send(encodeFin(connId, seq));
  }
  ack(connId: number, seq: number): void {
    this.client?.send(encodeAck(connId, seq));
  }
  reset(connId: number, reason: ResetReason): void {
    this.client?.send(encodeReset(connId, reason));
  }
  closed(connId: number): void {
    this.client?.unroute(connId, this);
  }

  // ---- migration and lifecycle ----

  /** The VM is paused for migration: stop relaying. */
  freeze(): void {
    if (this.frozen || this.disposed) return;
    this.frozen = true;
    this.endpoint.freeze();
  }

  /** The migration failed: relay again, starting with what arrived meanwhile. */
  thaw(): void {
    if (!this.frozen || this.disposed) return;
    this.frozen = false;
    this.endpoint.thaw();
    const held = this.held;
    this.held = [];
    for (const m of held) this.handle(m);
  }

  /** The VM runs elsewhere now (or the host stops): forget everything, tell nobody. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.endpoint.dispose();
    this.client?.remove(this);
    this.held = [];
  }

  /** The VM is deleted: the gateway stops exposing it and resets its clients. */
  withdraw(): void {
    if (this.disposed) return;
    this.endpoint.resetAll();
    this.client?.send(encodeDetach(this.uuid));
    this.dispose();
  }

  /** The network section of the VM's migration envelope (only while frozen). */
  saveState(): Uint8Array {
    return encodeNetState(this.config, this.endpoint.saveState());
  }

  describe(): { gateway: string | null; expose: string[]; epoch: number; attached: boolean; connections: number; error?: string } {
    const d: { gateway: string | null; expose: string[]; epoch: number; attached: boolean; connections: number; error?: string } = {
      gateway: this.config.gateway ?? null,
      expose: this.config.exposures.map((x) => `${x.hostPort}:${x.vmPort}`),
      epoch: this.config.epoch,
      attached: this.attached,
      connections: this.endpoint.connectionCount,
    };
    if (this.lastError !== undefined) d.error = this.lastError;
    return d;
  }
}

// ---- the network section (docs/networking.md, "Migration envelope") ----

export const NET_STATE_VERSION = 1;

export class NetStateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StateFormatError';
  }
}

export function encodeNetState(config: NetConfig, endpoint: Uint8Array): Uint8Array {
  const gw = Buffer.from(config.gateway ?? '', 'utf8');
  const size = 2 + 2 + 4 + 2 + gw.length + 2 + config.exposures.length * 6 + 4 + endpoint.length;
  const b = new Uint8Array(size);
  const v = new DataView(b.buffer);
  let o = 0;
  v.setUint16(o, NET_STATE_VERSION, true);
  v.setUint16(o + 2, 0, true);
  v.setUint32(o + 4, config.epoch, true);
  v.setUint16(o + 8, gw.length, true);
  b.set(gw, o + 10);
  o += 10 + gw.length;
  v.setUint16(o, config.exposures.length, true);
  o += 2;
  for (const x of config.exposures) {
    v.setUint16(o, x.hostPort, true);
    v.setUint32(o + 2, x.vmPort, true);
    o += 6;
  }
  v.setUint32(o, endpoint.length, true);
  b.set(endpoint, o + 4);
  return b;
}

export function decodeNetState(b: Uint8Array): { config: NetConfig; endpoint: Uint8Array } {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const need = (at: number, n: number, what: string): void => {
    if (b.length < at + n) throw new NetStateError(`network state: truncated in ${what}`);
  };
  need(0, 10, 'header');
  const version = v.getUint16(0, true);
  if (version !== NET_STATE_VERSION) throw new NetStateError(`network state version ${version} is not supported (this tern reads version ${NET_STATE_VERSION})`);
  const epoch = v.getUint32(4, true);
  const gl = v.getUint16(8, true);
  need(10, gl, 'gateway');
  const gateway = Buffer.from(b.subarray(10, 10 + gl)).toString('utf8');
  let o = 10 + gl;
  need(o, 2, 'exposure count');
  const n = v.getUint16(o, true);
  o += 2;
  need(o, n * 6, 'exposures');
  const exposures: Exposure[] = [];
  for (let i = 0; i < n; i++) {
    exposures.push({ hostPort: v.getUint16(o, true), vmPort: v.getUint32(o + 2, true) });
    o += 6;
  }
  need(o, 4, 'endpoint length');
  const el = v.getUint32(o, true);
  o += 4;
  need(o, el, 'endpoint state');
  if (o + el !== b.length) throw new NetStateError(`network state: ${b.length - o - el} trailing bytes`);
  return { config: { gateway: gateway === '' ? undefined : gateway, exposures, epoch }, endpoint: b.subarray(o, o + el) };
}
