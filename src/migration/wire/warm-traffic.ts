/**
 * WARM_TRAFFIC (0x17, source → destination, since protocol 1.6, needs the warm-traffic
 * capability): for each vsock port of the VM that clients connected to, the first bytes the
 * latest client sent on its connection (possibly none). The destination's guest-image warm-up
 * opens connections to those ports on its throwaway boot and sends the bytes, so the guest's
 * request paths (and the vsock device's) run compiled when the real VM resumes.
 *
 * count u16 | reserved u16 | count × (vmPort u32 | length u16 | bytes)
 */
import { FrameType, MAX_WARM_SAMPLES, MAX_WARM_SAMPLE_BYTES, WARM_SAMPLE_FIXED_BYTES, WARM_TRAFFIC_FIXED_BYTES } from './constants.js';
import { FrameWriter, PayloadReader, checkU32 } from './bytes.js';
import { WireError } from './errors.js';
import type { TrafficSample, WarmTraffic } from './messages.js';

const MESSAGE = 'WARM_TRAFFIC';

export function encodeWarmTraffic(m: { readonly samples: readonly TrafficSample[] }): Uint8Array {
  if (m.samples.length > MAX_WARM_SAMPLES) throw new WireError('oversized', `${m.samples.length} samples exceed ${MAX_WARM_SAMPLES}`, { message: MESSAGE, field: 'count' });
  let size = WARM_TRAFFIC_FIXED_BYTES;
  for (const s of m.samples) {
    checkU32(MESSAGE, 'vmPort', s.vmPort);
    if (s.bytes.length > MAX_WARM_SAMPLE_BYTES) throw new WireError('oversized', `a sample of ${s.bytes.length} bytes exceeds ${MAX_WARM_SAMPLE_BYTES}`, { message: MESSAGE, field: 'length' });
    size += WARM_SAMPLE_FIXED_BYTES + s.bytes.length;
  }
  const w = new FrameWriter(FrameType.WarmTraffic, size).u16(m.samples.length).zeros(2);
  for (const s of m.samples) w.u32(s.vmPort).u16(s.bytes.length).raw(s.bytes);
  return w.finish();
}

/** Each sample's bytes are a view into the payload. */
export function decodeWarmTraffic(payload: Uint8Array): WarmTraffic {
  const r = new PayloadReader(payload, MESSAGE);
  const count = r.u16('count');
  if (count > MAX_WARM_SAMPLES) r.fail('bad-count', 'count', `${count} samples exceed ${MAX_WARM_SAMPLES}`);
  r.reserved(2, 'reserved');
  const samples: TrafficSample[] = [];
  const ports = new Set<number>();
  for (let i = 0; i < count; i++) {
    const vmPort = r.u32('vmPort');
    if (ports.has(vmPort)) r.fail('bad-value', 'vmPort', `port ${vmPort} has two samples`);
    ports.add(vmPort);
    const length = r.u16('length');
    if (length > MAX_WARM_SAMPLE_BYTES) r.fail('bad-value', 'length', `a sample of ${length} bytes exceeds ${MAX_WARM_SAMPLE_BYTES}`);
    samples.push({ vmPort, bytes: r.counted(length, 'bytes') });
  }
  r.end();
  return { type: FrameType.WarmTraffic, samples };
}
