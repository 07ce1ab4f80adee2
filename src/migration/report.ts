/**
 * What a migration reports, live (progress) and at the end (report). Field names follow QEMU's
 * query-migrate where one exists, so users of `virsh migrate` find their way.
 */
import type { StunReport, TaskRoundStats } from './stun.js';

export type MigrationStatus =
  | 'setup'
  | 'active'
  | 'device'
  /** Post-copy: the VM runs at the destination while the rest of its pages arrive. */
  | 'postcopy-active'
  /** Post-copy: the connection broke after the switch; both sides wait for `tern migrate --resume`. */
  | 'postcopy-paused'
  | 'completed'
  | 'failed'
  | 'cancelled'
  /** Post-copy: the source host is gone with pages the destination lacks; the VM cannot be completed. */
  | 'lost';

/** Clark's stages, for progress and for saying where a failure happened. */
/**
 * Guest time across the switchover pause: 'continuous' counts the pause (the guest clock keeps
 * up with wall time, as on Xen); 'frozen' stands still while paused (QEMU's virtual clock).
 */
export type GuestClock = 'continuous' | 'frozen';

export const GUEST_CLOCKS: readonly GuestClock[] = ['continuous', 'frozen'];

export type MigrationStage = 'reservation' | 'precopy' | 'stop-and-copy' | 'postcopy' | 'commitment' | 'activation' | 'done';

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
  /** With stunning: each guest task's write rate in this round (stun.ts). */
  tasks?: TaskRoundStats[];
  /** With stunning: the tasks stunned at the end of this round. */
  stunned?: string[];
  /** The round the switchover was decided after: how long it waited for the destination to take the round in, ms. */
  ackWaitMs?: number;
  /** A live round added because the destination was behind at the switchover (docs/precopy.md, catch-up round). */
  catchUp?: boolean;
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
  /** Expected downtime if we switched over now: (remaining bytes + state) / bandwidth + round trip + the destination's switchover time. */
  expectedDowntimeMs: number;
  elapsedMs: number;
  /** Auto-converge: the vCPU throttle in force now, percent (QEMU's cpu-throttle-percentage). */
  throttlePercent?: number;
}

export interface MigrationReport {
  id: string;
  vm: string;
  status: MigrationStatus;
  /** What ran: `auto` reports 'precopy' when pre-copy converged, 'hybrid' when it switched to post-copy. */
  mode: 'precopy' | 'postcopy' | 'hybrid';
  source: string;
  destination: string;
  totalTimeMs: number;
  /** From the vCPU pause on the source to the vCPU resume on the destination. */
  downtimeMs: number;
  /**
   * true: measured on one clock (both hosts on one machine: the destination's RESUMED_AT named
   * this machine's boot); false: estimated from ACTIVATED's arrival (docs/precopy.md, Downtime).
   * Absent when the VM was never paused.
   */
  downtimeExact?: boolean;
  /**
   * QEMU's definition, for comparing with query-migrate's `downtime`: from the pause to the
   * source having handed everything (last pages, state, COMPLETE) to the kernel; it leaves out
   * the transfer's tail, the destination's load and resume. Absent when the VM was never paused.
   */
  sourceDowntimeMs?: number;
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
  /** The stop-and-copy round's rate cap, bytes per second; 0 = unlimited. */
  stopCopyBandwidthBps?: number;
  /**
   * How guest time passed the switchover pause: 'continuous' (the destination moved the guest
   * clock forward by the pause) or 'frozen' (asked for, or a destination without PAUSED_AT).
   */
  guestClock?: GuestClock;
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
  /** Post-copy and hybrid migrations (see docs/postcopy.md). */
  postcopy?: PostcopyStats;
  /** XBZRLE delta encoding, when it was on (--xbzrle). */
  xbzrle?: XbzrleReport;
  /** Page-stream compression, when it was on (--compress). */
  compression?: CompressionReport;
  /** Page runs, when the destination took them (protocol 1.5): PAGE_RUN frames sent and the raw pages they carried. */
  pageRuns?: { frames: number; pages: number };
  /** Auto-converge, when it was on: the highest vCPU throttle applied (per round: perRound[].throttlePercent). */
  autoConverge?: { maxThrottlePercent: number };
  /** Stunning rogue tasks, when it was on (--stun; docs/assist.md). */
  stun?: StunReport;
  /** Page entries never sent, by reason (docs/precopy.md, "Pages never sent"). */
  skippedPages?: SkippedPageCounts;
}

/** Page entries left out of the migration because the destination's zero page is right for them. */
export interface SkippedPageCounts {
  /** Pages in the balloon (every round; post-copy: neither pushed nor fetched). */
  balloon: number;
  /** Pages the guest hinted free at migration start, skipped in round 1 (free page hinting). */
  freeHint: number;
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
  /** XBZRLE was not asked for: the fallback turned it on after this round stopped converging. */
  fallbackRound?: number;
}

export interface CompressionReport {
  algorithm: 'lz4' | 'zstd';
  /** PAGES frame bytes before compression. */
  inputBytes: number;
  /** Bytes sent for them (a batch that did not shrink goes uncompressed). */
  outputBytes: number;
  /** inputBytes / outputBytes. */
  ratio: number;
  /** Batches sent plain without trying, after batches that did not shrink (CompressionBackoff). */
  skippedBatches: number;
}

/** What a post-copy phase did (Hines & Gopalan's figures). */
export interface PostcopyStats {
  /** 'linear' or 'bubbling' (adaptive pre-paging around recent faults). */
  prepaging: string;
  /** Pre-copy rounds run before the switch (hybrid; 0 for pure post-copy). */
  precopyRounds: number;
  /** Destination vCPU accesses to absent pages that went to the source as PAGE_REQUESTs. */
  networkFaults: number;
  /** Fault service latency at the destination (fault seen to page installed), ms. */
  faultLatencyMs: { p50: number; p99: number; max: number };
  /** Page entries sent in answer to requests vs pushed. */
  pagesRequested: number;
  pagesPushed: number;
  /** Pages the guest wrote at the destination while post-copy ran (its writable working set). */
  writableWorkingSetPages: number;
  /** networkFaults / writableWorkingSetPages (0 when nothing was written). */
  faultsPerWws: number;
  /** Times the connection broke after the switch and was resumed. */
  resumes: number;
  /** Time spent in postcopy-paused, ms. */
  pausedMs: number;
  /** From the VM running at the destination to the last page there, ms. */
  postcopyTimeMs: number;
}
