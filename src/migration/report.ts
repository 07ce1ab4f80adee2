/**
 * What a migration reports, live (progress) and at the end (report). Field names follow QEMU's
 * query-migrate where one exists, so users of `virsh migrate` find their way.
 */

export type MigrationStatus = 'setup' | 'active' | 'device' | 'completed' | 'failed' | 'cancelled';

/** Clark's stages, for progress and for saying where a failure happened. */
export type MigrationStage = 'reservation' | 'precopy' | 'stop-and-copy' | 'commitment' | 'activation' | 'done';

/** Per-round writable-working-set statistics (Clark §4). */
export interface RoundStats {
  round: number;
  /** Pages sent in this round (including zero-page markers). */
  pages: number;
  /** Bytes put on the wire in this round (frames included). */
  bytes: number;
  durationMs: number;
  /** Pages found dirty at the end of this round (what the next round must send). */
  dirtyPages: number;
  /** Dirtying rate observed during this round, bytes per second. */
  dirtyRateBps: number;
  /** Achieved bandwidth in this round, bytes per second. */
  bandwidthBps: number;
  /** The rate limit in force for this round, bytes per second. */
  rateLimitBps: number;
  /** vCPU throttle during this round, percent (auto-converge; 0 when off). */
  throttlePercent: number;
  /** Pages already dirty again when the round reached them, left for the next round (Xen's skip). */
  skippedPages?: number;
}

export interface MigrationProgress {
  id: string;
  vm: string;
  status: MigrationStatus;
  stage: MigrationStage;
  round: number;
  ramBytes: number;
  bytesTransferred: number;
  pagesTransferred: number;
  /** Dirty bytes still to send as of the last sync. */
  remainingBytes: number;
  bandwidthBps: number;
  dirtyRateBps: number;
  /** Expected downtime if we switched over now: remaining bytes / bandwidth + state + round trip. */
  expectedDowntimeMs: number;
  elapsedMs: number;
}

export interface MigrationReport {
  id: string;
  vm: string;
  status: MigrationStatus;
  mode: 'precopy' | 'postcopy' | 'hybrid';
  source: string;
  destination: string;
  totalTimeMs: number;
  /** From the vCPU pause on the source to the vCPU resume on the destination. */
  downtimeMs: number;
  /** From the request to the start of round 1 (connection, handshake, reservation). */
  setupTimeMs: number;
  rounds: number;
  ramBytes: number;
  bytesTransferred: number;
  pagesTransferred: number;
  zeroPages: number;
  /** Expected downtime at the moment of switchover. */
  expectedDowntimeMs: number;
  maxBandwidthBps: number;
  downtimeLimitMs: number;
  /** Why the iteration stopped: 'downtime-limit' | 'small-remainder' | 'not-converging' | 'max-rounds'. */
  switchoverReason: string;
  /** Bytes of machine state sent. */
  stateBytes: number;
  perRound: RoundStats[];
  /** Set when status is 'failed' or 'cancelled'. */
  error?: { stage: MigrationStage; message: string; peer?: string };
  /** Set when RAM digests were compared at switchover (--verify). */
  ramDigestMatch?: boolean;
  /** XBZRLE delta encoding, when it was on (--xbzrle). */
  xbzrle?: XbzrleReport;
  /** Page-stream compression, when it was on (--compress). */
  compression?: CompressionReport;
  /** Auto-converge, when it was on: the highest vCPU throttle applied (per round: perRound[].throttlePercent). */
  autoConverge?: { maxThrottlePercent: number };
}

/** QEMU's xbzrle counters (query-migrate's xbzrle-cache). */
export interface XbzrleReport {
  cacheBytes: number;
  /** Pages sent as a delta. */
  hits: number;
  /** Re-sent pages not in the cache: sent raw, then cached. */
  misses: number;
  /** Cached pages whose delta exceeded the budget: sent raw. */
  overflows: number;
  /** Re-sent pages equal to what the destination holds: not sent at all. */
  unchanged: number;
  evictions: number;
  /** Delta bytes sent (without entry headers). */
  deltaBytes: number;
}

export interface CompressionReport {
  algorithm: 'lz4' | 'zstd';
  /** PAGES frame bytes before compression. */
  inputBytes: number;
  /** Bytes sent for them (a batch that did not shrink goes uncompressed). */
  outputBytes: number;
  /** inputBytes / outputBytes. */
  ratio: number;
}
