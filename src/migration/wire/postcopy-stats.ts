/**
 * POSTCOPY_STATS (0x23, destination → source, since protocol 1.1): what the destination saw of
 * a post-copy, sent once every page is present and before COMMITTED, so the source's report has
 * the figures only the destination can measure (fault service latency, pages the guest wrote).
 *
 * networkFaults u32 | writtenPages u32 | latencyP50Us u32 | latencyP99Us u32 | latencyMaxUs u32 | reserved u32
 */
import { FrameType, POSTCOPY_STATS_BYTES } from './constants.js';
import { FrameWriter, PayloadReader, checkU32 } from './bytes.js';
import type { Body, PostcopyStats } from './messages.js';

const FIELDS = ['networkFaults', 'writtenPages', 'latencyP50Us', 'latencyP99Us', 'latencyMaxUs'] as const;

export function encodePostcopyStats(m: Body<PostcopyStats>): Uint8Array {
  const w = new FrameWriter(FrameType.PostcopyStats, POSTCOPY_STATS_BYTES);
  for (const f of FIELDS) {
    checkU32('POSTCOPY_STATS', f, m[f]);
    w.u32(m[f]);
  }
  return w.u32(0).finish();
}

export function decodePostcopyStats(payload: Uint8Array): PostcopyStats {
  const r = new PayloadReader(payload, 'POSTCOPY_STATS');
  const networkFaults = r.u32('networkFaults');
  const writtenPages = r.u32('writtenPages');
  const latencyP50Us = r.u32('latencyP50Us');
  const latencyP99Us = r.u32('latencyP99Us');
  const latencyMaxUs = r.u32('latencyMaxUs');
  r.reserved(4, 'reserved');
  r.end();
  return { type: FrameType.PostcopyStats, networkFaults, writtenPages, latencyP50Us, latencyP99Us, latencyMaxUs };
}
