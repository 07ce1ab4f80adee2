/**
 * The gateway link protocol (docs/networking.md): what a host daemon and the gateway say to
 * each other over one TCP connection. Frames are {length u32 LE, type u8, body}; `length`
 * counts type + body. One codec per message; decoders check every field and throw LinkError,
 * nothing else, so a caller can tell a misbehaving peer from a local bug.
 */
import { PayloadReader, utf8BytesTruncated } from '../migration/wire/bytes.js';
import { WireError } from '../migration/wire/errors.js';

export const LINK_MAGIC = 0x4c574754; // 'TGWL' little-endian
export const LINK_MAJOR = 1;
export const LINK_MINOR = 0;
/** length u32 + type u8. */
export const LINK_HEADER_BYTES = 5;
/** Largest frame body (type excluded); ATTACH with many connections is the big one. */
export const MAX_LINK_BODY = 4 * 1024 * 1024;
/** DATA carries at most this many stream bytes. */
export const MAX_DATA_BYTES = 64 * 1024;
const MAX_NAME_BYTES = 255;
const MAX_TEXT_BYTES = 1024;
const MAX_EXPOSURES = 1024;

export const enum LinkType {
  Hello = 1,
  Welcome = 2,
  Attach = 3,
  Attached = 4,
  Detach = 5,
  Open = 6,
  Opened = 7,
  Data = 8,
  Ack = 9,
  Fin = 10,
  Reset = 11,
  Ping = 12,
  Pong = 13,
  Error = 14,
  /** A status client's first (and only) frame, instead of HELLO. */
  StatusRequest = 15,
  /** The gateway's answer to STATUS_REQUEST: its status as JSON. */
  Status = 16,
}

const TYPE_NAMES: Readonly<Record<number, string>> = {
  1: 'HELLO', 2: 'WELCOME', 3: 'ATTACH', 4: 'ATTACHED', 5: 'DETACH', 6: 'OPEN', 7: 'OPENED',
  8: 'DATA', 9: 'ACK', 10: 'FIN', 11: 'RESET', 12: 'PING', 13: 'PONG', 14: 'ERROR', 15: 'STATUS_REQUEST', 16: 'STATUS',
};

export function linkTypeName(t: number): string {
  return TYPE_NAMES[t] ?? `0x${t.toString(16).padStart(2, '0')}`;
}

/** Why a relayed connection was reset (RESET.reason). */
export const enum ResetReason {
  /** Nothing listens on that vsock port of the VM (or the VM refused it). */
  Refused = 1,
  /** The other end reset it (client RST, guest RST with data unsent, ...). */
  Reset = 2,
  /** The receiver does not know this connection id. */
  Unknown = 3,
  /** The VM is gone (stopped, or its host went away). */
  VmGone = 4,
  /** The peer broke the stream's rules (bytes beyond the window, a gap in sequence numbers). */
  Protocol = 5,
}

export class LinkError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LinkError';
  }
}

/** A port the gateway exposes for a VM: TCP hostPort on the gateway → vsock vmPort of the VM. */
export interface Exposure {
  readonly hostPort: number;
  readonly vmPort: number;
}

/** A connection a host holds for a VM, as ATTACH lists it. */
export interface AttachConn {
  readonly connId: number;
  readonly vmPort: number;
  /** The guest accepted it (RESPONSE seen). */
  readonly opened: boolean;
  /** Client→VM bytes the host holds (delivered to the guest or buffered): resend from here. */
  readonly inAcked: number;
}

/** A connection as ATTACHED answers: known to the gateway (resume) or not (reset it). */
export interface AttachedConn {
  readonly connId: number;
  readonly known: boolean;
  /** VM→client bytes the gateway has: the host resends from here. */
  readonly outReceived: number;
}

export type LinkMessage =
  | { type: LinkType.Hello; major: number; minor: number; hostName: string }
  | { type: LinkType.Welcome; major: number; minor: number; gatewayId: Uint8Array; name: string }
  | { type: LinkType.Attach; uuid: Uint8Array; epoch: number; name: string; exposures: Exposure[]; conns: AttachConn[] }
  | { type: LinkType.Attached; uuid: Uint8Array; ok: boolean; message: string; conns: AttachedConn[] }
  | { type: LinkType.Detach; uuid: Uint8Array }
  | { type: LinkType.Open; connId: number; uuid: Uint8Array; vmPort: number }
  | { type: LinkType.Opened; connId: number }
  | { type: LinkType.Data; connId: number; seq: number; bytes: Uint8Array }
  | { type: LinkType.Ack | LinkType.Fin; connId: number; seq: number }
  | { type: LinkType.Reset; connId: number; reason: number }
  | { type: LinkType.Ping | LinkType.Pong; nonce: number }
  | { type: LinkType.Error; text: string }
  | { type: LinkType.StatusRequest }
  | { type: LinkType.Status; json: string };

// ---- encoding ----

class Writer {
  readonly bytes: Uint8Array;
  private readonly view: DataView;
  private pos = LINK_HEADER_BYTES;

  constructor(type: LinkType, bodyBytes: number) {
    this.bytes = new Uint8Array(LINK_HEADER_BYTES + bodyBytes);
    this.view = new DataView(this.bytes.buffer);
    this.view.setUint32(0, bodyBytes + 1, true);
    this.bytes[4] = type;
  }
  u8(v: number): this {
    this.bytes[this.pos++] = v;
    return this;
  }
  u16(v: number): this {
    this.view.setUint16(this.pos, v, true);
    this.pos += 2;
    return this;
  }
  u32(v: number): this {
    this.view.setUint32(this.pos, v >>> 0, true);
    this.pos += 4;
    return this;
  }
  u64(v: number): this {
    this.view.setUint32(this.pos, v % 0x1_0000_0000, true);
    this.view.setUint32(this.pos + 4, Math.floor(v / 0x1_0000_0000), true);
    this.pos += 8;
    return this;
  }
  raw(b: Uint8Array): this {
    this.bytes.set(b, this.pos);
    this.pos += b.length;
    return this;
  }
  /** u16 length + UTF-8. */
  str(b: Uint8Array): this {
    return this.u16(b.length).raw(b);
  }
  finish(): Uint8Array {
    if (this.pos !== this.bytes.length) throw new Error(`link writer: wrote ${this.pos} of ${this.bytes.length} bytes`);
    return this.bytes;
  }
}

function checkUuid(u: Uint8Array): void {
  if (u.length !== 16) throw new LinkError(`a VM uuid is 16 bytes, not ${u.length}`);
}

function checkSeq(what: string, v: number): void {
  if (!Number.isSafeInteger(v) || v < 0) throw new LinkError(`${what}: ${v} is not a stream offset`);
}

export function encodeHello(hostName: string): Uint8Array {
  const n = utf8BytesTruncated(hostName, MAX_NAME_BYTES);
  return new Writer(LinkType.Hello, 4 + 2 + 2 + n.length).u32(LINK_MAGIC).u8(LINK_MAJOR).u8(LINK_MINOR).str(n).finish();
}

export function encodeWelcome(gatewayId: Uint8Array, name: string): Uint8Array {
  if (gatewayId.length !== 8) throw new LinkError('a gateway id is 8 bytes');
  const n = utf8BytesTruncated(name, MAX_NAME_BYTES);
  return new Writer(LinkType.Welcome, 2 + 8 + 2 + n.length).u8(LINK_MAJOR).u8(LINK_MINOR).raw(gatewayId).str(n).finish();
}

export function encodeAttach(uuid: Uint8Array, epoch: number, name: string, exposures: readonly Exposure[], conns: readonly AttachConn[]): Uint8Array {
  checkUuid(uuid);
  if (exposures.length > MAX_EXPOSURES) throw new LinkError(`at most ${MAX_EXPOSURES} exposed ports per VM`);
  const n = utf8BytesTruncated(name, MAX_NAME_BYTES);
  const w = new Writer(LinkType.Attach, 16 + 4 + 2 + n.length + 2 + exposures.length * 6 + 4 + conns.length * 17);
  w.raw(uuid).u32(epoch).str(n).u16(exposures.length);
  for (const e of exposures) w.u16(e.hostPort).u32(e.vmPort);
  w.u32(conns.length);
  for (const c of conns) {
    checkSeq('ATTACH inAcked', c.inAcked);
    w.u32(c.connId).u32(c.vmPort).u8(c.opened ? 1 : 0).u64(c.inAcked);
  }
  return w.finish();
}

export function encodeAttached(uuid: Uint8Array, ok: boolean, message: string, conns: readonly AttachedConn[]): Uint8Array {
  checkUuid(uuid);
  const m = utf8BytesTruncated(message, MAX_TEXT_BYTES);
  const w = new Writer(LinkType.Attached, 16 + 1 + 2 + m.length + 4 + conns.length * 13);
  w.raw(uuid).u8(ok ? 1 : 0).str(m).u32(conns.length);
  for (const c of conns) w.u32(c.connId).u8(c.known ? 1 : 0).u64(c.outReceived);
  return w.finish();
}

export function encodeDetach(uuid: Uint8Array): Uint8Array {
  checkUuid(uuid);
  return new Writer(LinkType.Detach, 16).raw(uuid).finish();
}

export function encodeOpen(connId: number, uuid: Uint8Array, vmPort: number): Uint8Array {
  checkUuid(uuid);
  return new Writer(LinkType.Open, 4 + 16 + 4).u32(connId).raw(uuid).u32(vmPort).finish();
}

export function encodeOpened(connId: number): Uint8Array {
  return new Writer(LinkType.Opened, 4).u32(connId).finish();
}

/** DATA: header + connId + seq, then the bytes (copied once, into the frame). */
export function encodeData(connId: number, seq: number, bytes: Uint8Array): Uint8Array {
  if (bytes.length > MAX_DATA_BYTES) throw new LinkError(`DATA carries at most ${MAX_DATA_BYTES} bytes, not ${bytes.length}`);
  return new Writer(LinkType.Data, 12 + bytes.length).u32(connId).u64(seq).raw(bytes).finish();
}

export function encodeAck(connId: number, seq: number): Uint8Array {
  return new Writer(LinkType.Ack, 12).u32(connId).u64(seq).finish();
}

export function encodeFin(connId: number, seq: number): Uint8Array {
  return new Writer(LinkType.Fin, 12).u32(connId).u64(seq).finish();
}

export function encodeReset(connId: number, reason: ResetReason): Uint8Array {
  return new Writer(LinkType.Reset, 5).u32(connId).u8(reason).finish();
}

export function encodePing(nonce: number): Uint8Array {
  return new Writer(LinkType.Ping, 4).u32(nonce).finish();
}

export function encodePong(nonce: number): Uint8Array {
  return new Writer(LinkType.Pong, 4).u32(nonce).finish();
}

export function encodeError(text: string): Uint8Array {
  const t = utf8BytesTruncated(text, MAX_TEXT_BYTES);
  return new Writer(LinkType.Error, 2 + t.length).str(t).finish();
}

export function encodeStatusRequest(): Uint8Array {
  return new Writer(LinkType.StatusRequest, 0).finish();
}

export function encodeStatus(json: string): Uint8Array {
  const t = Buffer.from(json, 'utf8');
  if (t.length > MAX_LINK_BODY - 4) throw new LinkError('status too large');
  return new Writer(LinkType.Status, 4 + t.length).u32(t.length).raw(t).finish();
}

// ---- decoding ----

function str(r: PayloadReader, field: string, max: number): string {
  const n = r.u16(`${field}.length`);
  if (n > max) r.fail('oversized', field, `${n} bytes; at most ${max}`);
  return r.utf8(n, field);
}

/** Decodes one frame body (type already split off). Throws LinkError on anything malformed. */
export function decodeLinkMessage(type: number, body: Uint8Array): LinkMessage {
  const r = new PayloadReader(body, linkTypeName(type));
  try {
    const m = decodeBody(type, r);
    r.end();
    return m;
  } catch (e) {
    if (e instanceof WireError) throw new LinkError(`${linkTypeName(type)}: ${e.message}`);
    throw e;
  }
}

function decodeBody(type: number, r: PayloadReader): LinkMessage {
  switch (type) {
    case LinkType.Hello: {
      const magic = r.u32('magic');
      if (magic !== LINK_MAGIC) throw new LinkError(`not a tern gateway link (magic 0x${magic.toString(16)})`);
      const major = r.u8('major');
      const minor = r.u8('minor');
      return { type, major, minor, hostName: str(r, 'hostName', MAX_NAME_BYTES) };
    }
    case LinkType.Welcome: {
      const major = r.u8('major');
      const minor = r.u8('minor');
      const gatewayId = r.fixed(8, 'gatewayId');
      return { type, major, minor, gatewayId, name: str(r, 'name', MAX_NAME_BYTES) };
    }
    case LinkType.Attach: {
      const uuid = r.fixed(16, 'uuid');
      const epoch = r.u32('epoch');
      const name = str(r, 'name', MAX_NAME_BYTES);
      const ne = r.u16('exposures');
      if (ne > MAX_EXPOSURES) r.fail('bad-count', 'exposures', `${ne} exposures; at most ${MAX_EXPOSURES}`);
      if (r.remaining < ne * 6) r.fail('bad-count', 'exposures', `${ne} exposures do not fit in ${r.remaining} bytes`);
      const exposures: Exposure[] = [];
      for (let i = 0; i < ne; i++) {
        const hostPort = r.u16(`exposure[${i}].hostPort`);
        const vmPort = r.u32(`exposure[${i}].vmPort`);
        if (hostPort === 0) r.fail('bad-value', `exposure[${i}].hostPort`, 'port 0');
        exposures.push({ hostPort, vmPort });
      }
      const nc = r.u32('conns');
      if (r.remaining !== nc * 17) r.fail('bad-count', 'conns', `${nc} connections need ${nc * 17} bytes, ${r.remaining} left`);
      const conns: AttachConn[] = [];
      for (let i = 0; i < nc; i++) {
        const connId = r.u32(`conn[${i}].connId`);
        const vmPort = r.u32(`conn[${i}].vmPort`);
        const flags = r.u8(`conn[${i}].flags`);
        if (flags > 1) r.fail('reserved-bits', `conn[${i}].flags`, `flags 0x${flags.toString(16)}`);
        conns.push({ connId, vmPort, opened: flags === 1, inAcked: r.u64(`conn[${i}].inAcked`) });
      }
      return { type, uuid, epoch, name, exposures, conns };
    }
    case LinkType.Attached: {
      const uuid = r.fixed(16, 'uuid');
      const ok = r.u8('ok');
      if (ok > 1) r.fail('bad-value', 'ok', `${ok}`);
      const message = str(r, 'message', MAX_TEXT_BYTES);
      const nc = r.u32('conns');
      if (r.remaining !== nc * 13) r.fail('bad-count', 'conns', `${nc} connections need ${nc * 13} bytes, ${r.remaining} left`);
      const conns: AttachedConn[] = [];
      for (let i = 0; i < nc; i++) {
        const connId = r.u32(`conn[${i}].connId`);
        const known = r.u8(`conn[${i}].known`);
        if (known > 1) r.fail('bad-value', `conn[${i}].known`, `${known}`);
        conns.push({ connId, known: known === 1, outReceived: r.u64(`conn[${i}].outReceived`) });
      }
      return { type, uuid, ok: ok === 1, message, conns };
    }
    case LinkType.Detach:
      return { type, uuid: r.fixed(16, 'uuid') };
    case LinkType.Open:
      return { type, connId: r.u32('connId'), uuid: r.fixed(16, 'uuid'), vmPort: r.u32('vmPort') };
    case LinkType.Opened:
      return { type, connId: r.u32('connId') };
    case LinkType.Data: {
      const connId = r.u32('connId');
      const seq = r.u64('seq');
      if (r.remaining > MAX_DATA_BYTES) r.fail('oversized', 'bytes', `${r.remaining} bytes; at most ${MAX_DATA_BYTES}`);
      return { type, connId, seq, bytes: r.counted(r.remaining, 'bytes') };
    }
    case LinkType.Ack:
    case LinkType.Fin:
      return { type, connId: r.u32('connId'), seq: r.u64('seq') };
    case LinkType.Reset: {
      const connId = r.u32('connId');
      const reason = r.u8('reason');
      if (reason < ResetReason.Refused || reason > ResetReason.Protocol) r.fail('bad-value', 'reason', `unknown reset reason ${reason}`);
      return { type, connId, reason };
    }
    case LinkType.Ping:
    case LinkType.Pong:
      return { type, nonce: r.u32('nonce') };
    case LinkType.Error:
      return { type, text: str(r, 'text', MAX_TEXT_BYTES) };
    case LinkType.StatusRequest:
      return { type };
    case LinkType.Status:
      return { type, json: r.utf8(r.u32('json.length'), 'json') };
    default:
      throw new LinkError(`unknown frame type ${linkTypeName(type)}`);
  }
}

/**
 * Turns stream chunks into messages. A length is checked before its body is buffered, so a
 * peer cannot make us hold more than one maximal frame.
 */
export class LinkReader {
  private pending: Uint8Array[] = [];
  private pendingBytes = 0;

  /** Feeds one chunk; calls `onMessage` for each whole frame. Throws LinkError on a bad frame. */
  push(chunk: Uint8Array, onMessage: (m: LinkMessage) => void): void {
    let buf: Uint8Array;
    if (this.pendingBytes === 0) {
      buf = chunk;
    } else {
      buf = new Uint8Array(this.pendingBytes + chunk.length);
      let o = 0;
      for (const p of this.pending) {
        buf.set(p, o);
        o += p.length;
      }
      buf.set(chunk, o);
      this.pending = [];
      this.pendingBytes = 0;
    }
    let at = 0;
    while (buf.length - at >= LINK_HEADER_BYTES) {
      const len = (buf[at]! | (buf[at + 1]! << 8) | (buf[at + 2]! << 16) | (buf[at + 3]! << 24)) >>> 0;
      if (len < 1 || len - 1 > MAX_LINK_BODY) throw new LinkError(`frame length ${len} is outside 1..${MAX_LINK_BODY + 1}`);
      if (buf.length - at < 4 + len) break;
      const type = buf[at + 4]!;
      onMessage(decodeLinkMessage(type, buf.subarray(at + LINK_HEADER_BYTES, at + 4 + len)));
      at += 4 + len;
    }
    if (at < buf.length) {
      // Keep a copy: the chunk's memory may be reused by the socket.
      const rest = buf.slice(at);
      this.pending.push(rest);
      this.pendingBytes += rest.length;
    }
  }

  /** Bytes of an incomplete frame held. */
  get buffered(): number {
    return this.pendingBytes;
  }
}

