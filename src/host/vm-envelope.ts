/**
 * The host-level state of a migrating VM (docs/networking.md, "Migration envelope"): the machine
 * state plus the VM's network section (its gateway, exposed ports, location epoch and vsock
 * endpoint state). The migration engine moves it as one opaque blob.
 *
 * | offset | size | field                                   |
 * |-------:|-----:|-----------------------------------------|
 * | 0      | 8    | magic "TERNVMH1"                        |
 * | 8      | 2    | version (1)                             |
 * | 10     | 2    | reserved, 0                             |
 * | 12     | 4    | M: machine state length                 |
 * | 16     | M    | machine state (docs/machine-state.md)   |
 * | 16+M   | 4    | N: network section length (0 = none)    |
 * | 20+M   | N    | network section                         |
 */
export const ENVELOPE_MAGIC = 'TERNVMH1';
export const ENVELOPE_VERSION = 1;
const MAGIC_BYTES = new TextEncoder().encode(ENVELOPE_MAGIC);

export class EnvelopeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StateFormatError';
  }
}

export function encodeEnvelope(machine: Uint8Array, network: Uint8Array | undefined): Uint8Array {
  const n = network?.length ?? 0;
  const b = new Uint8Array(16 + machine.length + 4 + n);
  const v = new DataView(b.buffer);
  b.set(MAGIC_BYTES, 0);
  v.setUint16(8, ENVELOPE_VERSION, true);
  v.setUint32(12, machine.length, true);
  b.set(machine, 16);
  v.setUint32(16 + machine.length, n, true);
  if (network !== undefined) b.set(network, 20 + machine.length);
  return b;
}

function hasMagic(b: Uint8Array): boolean {
  if (b.length < MAGIC_BYTES.length) return false;
  for (let i = 0; i < MAGIC_BYTES.length; i++) if (b[i] !== MAGIC_BYTES[i]) return false;
  return true;
}

/** Splits an envelope; a bare machine state (no envelope) comes back as is, with no network. */
export function decodeEnvelope(b: Uint8Array): { machine: Uint8Array; network: Uint8Array | undefined } {
  if (!hasMagic(b)) return { machine: b, network: undefined };
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  if (b.length < 20) throw new EnvelopeError(`VM state envelope of ${b.length} bytes is truncated`);
  const version = v.getUint16(8, true);
  if (version !== ENVELOPE_VERSION) throw new EnvelopeError(`VM state envelope version ${version} is not supported (this tern reads version ${ENVELOPE_VERSION})`);
  if (v.getUint16(10, true) !== 0) throw new EnvelopeError('VM state envelope: reserved field is not 0');
  const m = v.getUint32(12, true);
  if (b.length < 20 + m) throw new EnvelopeError(`VM state envelope: machine state of ${m} bytes does not fit in ${b.length}`);
  const n = v.getUint32(16 + m, true);
  if (b.length !== 20 + m + n) throw new EnvelopeError(`VM state envelope: ${b.length} bytes, expected ${20 + m + n}`);
  return { machine: b.subarray(16, 16 + m), network: n === 0 ? undefined : b.subarray(20 + m) };
}
