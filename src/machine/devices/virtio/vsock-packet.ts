/**
 * `struct virtio_vsock_hdr` (virtio 1.x §5.10.6): 44 bytes, little-endian, followed by `len` bytes
 * of payload. Shared by the device (which only moves packets) and the host side (which runs the
 * connections). CIDs are u64 on the wire and numbers here (they stay below 2^53).
 *
 * | offset | size | field     |
 * |-------:|-----:|-----------|
 * | 0      | 8    | src_cid   |
 * | 8      | 8    | dst_cid   |
 * | 16     | 4    | src_port  |
 * | 20     | 4    | dst_port  |
 * | 24     | 4    | len       |
 * | 28     | 2    | type      |
 * | 30     | 2    | op        |
 * | 32     | 4    | flags     |
 * | 36     | 4    | buf_alloc |
 * | 40     | 4    | fwd_cnt   |
 */
export const VSOCK_HDR_BYTES = 44;

export const enum VsockOff {
  SrcCid = 0,
  DstCid = 8,
  SrcPort = 16,
  DstPort = 20,
  Len = 24,
  Type = 28,
  Op = 30,
  Flags = 32,
  BufAlloc = 36,
  FwdCnt = 40,
}

/** Packet operations. */
export const enum VsockOp {
  Invalid = 0,
  Request = 1,
  Response = 2,
  Rst = 3,
  Shutdown = 4,
  Rw = 5,
  CreditUpdate = 6,
  CreditRequest = 7,
}

/** Socket types. */
export const enum VsockType {
  Stream = 1,
  SeqPacket = 2,
}

/** VIRTIO_VSOCK_OP_SHUTDOWN flags. */
export const enum VsockShutdown {
  Rcv = 1,
  Send = 2,
}

/** Event ids on the event queue (struct virtio_vsock_event { le32 id; }). */
export const VSOCK_EVENT_TRANSPORT_RESET = 0;

/** Well-known CIDs. */
export const VSOCK_CID_HOST = 2;
export const VSOCK_DEFAULT_GUEST_CID = 3;

/** Largest payload a packet may carry through tern's device (Linux's VIRTIO_VSOCK_MAX_PKT_BUF_SIZE). */
export const VSOCK_MAX_PAYLOAD = 64 * 1024;
export const VSOCK_MAX_PACKET = VSOCK_HDR_BYTES + VSOCK_MAX_PAYLOAD;

/** A decoded header (for code that prefers objects; hot paths use the accessors below). */
export interface VsockHeader {
  srcCid: number;
  dstCid: number;
  srcPort: number;
  dstPort: number;
  len: number;
  type: number;
  op: number;
  flags: number;
  bufAlloc: number;
  fwdCnt: number;
}

function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

function getU64(dv: DataView, at: number): number {
  return dv.getUint32(at, true) + dv.getUint32(at + 4, true) * 0x1_0000_0000;
}

function setU64(dv: DataView, at: number, v: number): void {
  dv.setUint32(at, v >>> 0, true);
  dv.setUint32(at + 4, Math.floor(v / 0x1_0000_0000) >>> 0, true);
}

/** Reads the header of `packet` (at least 44 bytes, else RangeError). */
export function decodeVsockHeader(packet: Uint8Array): VsockHeader {
  if (packet.length < VSOCK_HDR_BYTES) throw new RangeError(`vsock packet of ${packet.length} bytes is shorter than its ${VSOCK_HDR_BYTES}-byte header`);
  const dv = view(packet);
  return {
    srcCid: getU64(dv, VsockOff.SrcCid),
    dstCid: getU64(dv, VsockOff.DstCid),
    srcPort: dv.getUint32(VsockOff.SrcPort, true),
    dstPort: dv.getUint32(VsockOff.DstPort, true),
    len: dv.getUint32(VsockOff.Len, true),
    type: dv.getUint16(VsockOff.Type, true),
    op: dv.getUint16(VsockOff.Op, true),
    flags: dv.getUint32(VsockOff.Flags, true),
    bufAlloc: dv.getUint32(VsockOff.BufAlloc, true),
    fwdCnt: dv.getUint32(VsockOff.FwdCnt, true),
  };
}

/** Writes `h` into the first 44 bytes of `out`. */
export function encodeVsockHeaderInto(h: VsockHeader, out: Uint8Array): void {
  if (out.length < VSOCK_HDR_BYTES) throw new RangeError(`buffer of ${out.length} bytes cannot hold a ${VSOCK_HDR_BYTES}-byte vsock header`);
  const dv = view(out);
  setU64(dv, VsockOff.SrcCid, h.srcCid);
  setU64(dv, VsockOff.DstCid, h.dstCid);
  dv.setUint32(VsockOff.SrcPort, h.srcPort >>> 0, true);
  dv.setUint32(VsockOff.DstPort, h.dstPort >>> 0, true);
  dv.setUint32(VsockOff.Len, h.len >>> 0, true);
  dv.setUint16(VsockOff.Type, h.type, true);
  dv.setUint16(VsockOff.Op, h.op, true);
  dv.setUint32(VsockOff.Flags, h.flags >>> 0, true);
  dv.setUint32(VsockOff.BufAlloc, h.bufAlloc >>> 0, true);
  dv.setUint32(VsockOff.FwdCnt, h.fwdCnt >>> 0, true);
}

/** A whole packet: header (its `len` set to the payload's length) + payload. */
export function encodeVsockPacket(h: Omit<VsockHeader, 'len'>, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  const out = new Uint8Array(VSOCK_HDR_BYTES + payload.length);
  encodeVsockHeaderInto({ ...h, len: payload.length }, out);
  out.set(payload, VSOCK_HDR_BYTES);
  return out;
}

/** The payload of a packet (a view; its length is what follows the header, whatever `len` says). */
export function vsockPayload(packet: Uint8Array): Uint8Array {
  return packet.subarray(VSOCK_HDR_BYTES);
}

// Field accessors on a packet's bytes (no allocation beyond the DataView the caller keeps).
export function vsockOp(dv: DataView): number {
  return dv.getUint16(VsockOff.Op, true);
}
export function vsockLen(dv: DataView): number {
  return dv.getUint32(VsockOff.Len, true);
}
export function vsockSrcCid(dv: DataView): number {
  return getU64(dv, VsockOff.SrcCid);
}
export function vsockDstCid(dv: DataView): number {
  return getU64(dv, VsockOff.DstCid);
}
