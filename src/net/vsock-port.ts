/**
 * The host side's view of a VM's virtio-vsock device: its packet channel (`vcpu.vsock`, see
 * docs/machine.md) and allocation-free header access for the per-packet paths.
 */
import { VSOCK_HDR_BYTES, VsockOff, VsockType, type VsockOp } from '../machine/devices/virtio/vsock-packet.js';

export type { VsockHostPort } from '../machine/devices/virtio/vsock-host-port.js';
export { VSOCK_CID_HOST as HOST_CID, VSOCK_HDR_BYTES as HDR_BYTES, VsockOff as Hdr, VsockOp as Op, VsockShutdown as Shut } from '../machine/devices/virtio/vsock-packet.js';

/** Each ring record is a u32 length + the packet. */
export const RING_RECORD_OVERHEAD = 4;
export const VSOCK_TYPE_STREAM = VsockType.Stream;

export const OP_NAMES: readonly string[] = ['INVALID', 'REQUEST', 'RESPONSE', 'RST', 'SHUTDOWN', 'RW', 'CREDIT_UPDATE', 'CREDIT_REQUEST'];

/** Reads the little-endian u32 at `at`. */
export function u32At(b: Uint8Array, at: number): number {
  return (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0;
}

export function u16At(b: Uint8Array, at: number): number {
  return b[at]! | (b[at + 1]! << 8);
}

function putU32(b: Uint8Array, at: number, v: number): void {
  b[at] = v & 0xff;
  b[at + 1] = (v >>> 8) & 0xff;
  b[at + 2] = (v >>> 16) & 0xff;
  b[at + 3] = (v >>> 24) & 0xff;
}

/** Writes a whole stream-socket header into `b` at 0 (CIDs < 2^32: their high words are zero). */
export function writeHdr(b: Uint8Array, srcCid: number, dstCid: number, srcPort: number, dstPort: number, len: number, op: VsockOp, flags: number, bufAlloc: number, fwdCnt: number): void {
  putU32(b, VsockOff.SrcCid, srcCid);
  putU32(b, VsockOff.SrcCid + 4, 0);
  putU32(b, VsockOff.DstCid, dstCid);
  putU32(b, VsockOff.DstCid + 4, 0);
  putU32(b, VsockOff.SrcPort, srcPort);
  putU32(b, VsockOff.DstPort, dstPort);
  putU32(b, VsockOff.Len, len);
  b[VsockOff.Type] = VSOCK_TYPE_STREAM;
  b[VsockOff.Type + 1] = 0;
  b[VsockOff.Op] = op;
  b[VsockOff.Op + 1] = 0;
  putU32(b, VsockOff.Flags, flags);
  putU32(b, VsockOff.BufAlloc, bufAlloc);
  putU32(b, VsockOff.FwdCnt, fwdCnt);
}

