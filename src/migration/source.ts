/**
 * The source side of a pre-copy live migration (Clark et al., NSDI 2005), stage by stage:
 * reservation (HELLO / ACCEPT), iterative pre-copy with dynamic rate limiting and Xen's
 * skip of re-dirtied pages, switchover by QEMU's downtime rule, stop-and-copy, commitment.
 * Until the destination's COMMITTED arrives every failure leaves the VM running here; after
 * it the VM belongs to the destination and is never resumed here. See docs/precopy.md.
 */
import { EventEmitter } from 'node:events';
import { connect, type Socket } from 'node:net';
import type { GuestRam } from '../machine/memory/ram.js';
import { PAGE_SIZE } from '../machine/memory/layout.js';
import { silentLogger, type Logger } from '../util/log.js';
import { bootId, isThisBoot, monotonicUs } from '../util/host-clock.js';
import { MigrationError, errorText } from './errors.js';
import { PageSender, type FrameSink, type RoundTally } from './page-sender.js';
import { AutoConverge } from './auto-converge.js';
import { DEFAULT_XBZRLE_CACHE_BYTES } from './encoding/xbzrle.js';
import { DeltaProbe } from './encoding/delta-probe.js';
import { SourceEncodings, offeredCapabilities } from './encoding/negotiate.js';
import { DataStreams } from './streams.js';
import type { CompressionAlgorithm } from './encoding/compress.js';
import { DynamicRateLimit, type RateLimitPolicy } from './rate-limit.js';
import type { GuestClock, MigrationProgress, MigrationReport, MigrationStage, MigrationStatus, PostcopyStats, RoundStats } from './report.js';
import { DowntimeLimitPolicy, ackWaitNeeded, catchUpWanted, expectedDowntimeMs, type SwitchoverPolicy } from './switchover.js';
import type { MigratableVm } from './vm-port.js';
import { PageDigests, VERIFY_KEY } from './postcopy-digest.js';
import { FreePageHintRun } from './free-page-hint.js';
import { PageSkips } from './page-skip.js';
import { ASSIST_PORT } from './assist.js';
import { STUN_CONFIG_KEY, Stunner } from './stun.js';
import { LinkDownError, PostcopyPusher, latencySummary, newPushTally, type PushTally } from './postcopy-source.js';
import { pushOrder, type PushOrderName } from './prepaging.js';
import {
  Capability,
  encodeDiscard,
  forEachRunPage,
  pageRunsFromList,
  type PageRequest,
  type PostcopyStats as PeerPostcopyStats,
  FRAME_HEADER_BYTES,
  FrameReader,
  FrameType,
  PROTOCOL_VERSION,
  WireError,
  bytesEqual,
  decodeMessage,
  encodeAbort,
  frameTypeName,
  encodeComplete,
  encodeHello,
  encodeImage,
  encodeWarmTraffic,
  encodeConsole,
  encodeWritten,
  MAX_PAGE_RUNS,
  pageRunsFromMap,
  type PageRuns,
  MAX_WARM_SAMPLES,
  MAX_WARM_SAMPLE_BYTES,
  type TrafficSample,
  encodePausedAt,
  isZeroId,
  MAX_IMAGE_BYTES,
  encodePing,
  encodePong,
  encodeRoundEnd,
  encodeStateParts,
  formatId,
  sha256,
  type AbortReason,
  MAX_STREAMS,
  type Accept,
  type Body,
  type Committed,
  type Hello,
  type Frame,
  type Message,
  type ResumedAt,
} from './wire/index.js';

export interface MigrateOptions {
  /** Migration id, assigned by the host. */
  readonly id: string;
  /** For reports and logs. */
  readonly sourceName: string;
  readonly destinationName: string;
  /** The destination's migration listener. */
  readonly destination: { readonly host: string; readonly port: number };
  /**
   * precopy; postcopy (switch first, pages on demand and by push); hybrid (`precopyRounds`
   * pre-copy rounds, then post-copy); auto (pre-copy, switching to post-copy when it does not
   * converge: rounds not shrinking or the round limit).
   */
  readonly mode: 'precopy' | 'postcopy' | 'hybrid' | 'auto';
  /** Hybrid: pre-copy rounds before the switch (default 1). */
  readonly precopyRounds?: number;
  /** Post-copy push order (default 'bubbling': pre-paging around recent faults). */
  readonly prepaging?: PushOrderName;
  /** Bytes per second; 0 = unlimited. */
  readonly maxBandwidthBps: number;
  /**
   * Bytes per second of the stop-and-copy round (the vCPU is paused while it runs); 0 =
   * unlimited, as QEMU's completion is (ram_save_complete flushes regardless of the rate
   * limit). Absent: `maxBandwidthBps` (Clark: stop-and-copy runs at the maximum).
   */
  readonly stopCopyBandwidthBps?: number;
  /**
   * Guest time across the switchover pause: 'continuous' (default) counts the pause as guest
   * time, so the guest clock keeps up with wall time (as on Xen): the destination moves it
   * forward as it resumes the VM (PAUSED_AT), and a failed migration's resume here does the
   * same. 'frozen': guest time stands still while paused, as QEMU's virtual clock does.
   */
  readonly guestClock?: GuestClock;
  /** Floor of the dynamic rate limiter, bytes per second. */
  readonly minBandwidthBps: number;
  /** Added to the last dirtying rate for each live round's limit; 0 or absent: `defaultRateIncrement`. */
  readonly rateIncrementBps?: number;
  /** QEMU's downtime-limit (default 300). */
  readonly downtimeLimitMs: number;
  /** Live (iterative) rounds at most before stop-and-copy (default 30). */
  readonly maxRounds: number;
  /** Compare a SHA-256 of all RAM on both sides at switchover. */
  readonly verifyRam: boolean;
  /** Whole-migration timeout; 0 = none. */
  readonly timeoutMs: number;
  /** Auto-converge: throttle the vCPU while it dirties faster than pre-copy sends (QEMU's rule). */
  readonly autoConverge?: boolean;
  /** XBZRLE delta encoding of re-sent pages with a page cache of this many bytes; undefined: off. */
  readonly xbzrleCacheBytes?: number;
  /** Compress the page stream (PAGES_COMPRESSED); undefined: off. */
  readonly compression?: CompressionAlgorithm;
  /**
   * Pre-copy, one stream, XBZRLE not asked for: when the rounds stop shrinking, turn XBZRLE on
   * (64 MiB cache) and give it two more rounds before switching over (default true).
   */
  readonly xbzrleFallback?: boolean;
  /** Parallel TCP streams for page data, 1..16 (pre-copy only; default 1). */
  readonly streams?: number;
  /**
   * Pre-copy over one stream: consecutive raw pages go as PAGE_RUN frames, written from guest RAM
   * in place and read by the destination straight into its RAM (protocol 1.5; default true).
   */
  readonly pageRuns?: boolean;
  /** Free page hinting at migration start when the guest's balloon driver offers it (default true). */
  readonly freePageHint?: boolean;
  /** Stun rogue guest tasks in the final rounds through the migration-assist channel (pre-copy only; stun.ts). */
  readonly stun?: boolean;
  /** A task writing faster than this (bytes/s) is stunned; 0 or absent: a quarter of the bandwidth. */
  readonly stunBudgetBps?: number;
  readonly log?: Logger;
}

/** Assumed machine-state size before the first saveState (the state is only known once paused). */
const STATE_BYTES_ESTIMATE = 64 * 1024;

/**
 * The destination's own share of the downtime (COMPLETE received to the VM running: load the
 * state, resume), as the last pre-copy destination of this process reported it in ACTIVATED;
 * part of the expected downtime the switchover policy compares with the limit. 3 ms until then.
 */
let recentSwitchoverMs = 3;
/** An outlier (a loaded destination) does not make every later migration wait for it. */
const MAX_SWITCHOVER_ESTIMATE_MS = 20;
/** A round must send at least this much for its bandwidth to count: smaller sends vanish into socket buffers. */
const MIN_BANDWIDTH_SAMPLE_BYTES = 2 * 1024 * 1024;
/** After COMPLETE, how long an ABORT (cancel, timeout) waits for the destination's answer. */
const ABORT_ANSWER_MS = 5_000;
/** After COMMITTED, how long to wait for ACTIVATED before reporting without it. */
const ACTIVATION_WAIT_MS = 30_000;
const PROGRESS_INTERVAL_MS = 200;
const ROUND_END_FRAME_BYTES = FRAME_HEADER_BYTES + 28;

const noop = (): void => {};

interface PingRecord {
  readonly sentAt: number;
  readonly resolve: (() => void) | undefined;
}

/**
 * The pages that may hold data (WRITTEN, protocol 1.8): every page but those GuestRam.knownZero
 * says are zero without reading them (all pages where writes are not tracked). A hint: a page
 * marked while this runs is sent as data anyway.
 */
function writtenRuns(ram: GuestRam): PageRuns {
  const n = ram.pageCount;
  const map = new Uint8Array(n);
  for (let p = 0; p < n; p++) if (!ram.knownZero(p)) map[p] = 1;
  return pageRunsFromMap(map, n, 'nonzero');
}

/**
 * One outgoing migration. `run()` never rejects: its report says completed, failed or
 * cancelled. `committed` turns true once the destination holds the VM: from then on the host
 * must release the VM here and never resume it.
 */
export class OutgoingMigration extends EventEmitter<{ progress: [MigrationProgress] }> {
  private readonly vm: MigratableVm;
  private readonly opts: MigrateOptions;
  private readonly log: Logger;
  private readonly peer: string;
  private socket: Socket | undefined;
  private reader = new FrameReader({ from: 'destination' });
  private destination: { readonly host: string; readonly port: number };
  private sessionId: Uint8Array = new Uint8Array(16);
  private zeroGranted = false;
  /** Post-copy: the destination installs ballooned pages itself (Capability.BalloonPages). */
  private balloonPagesGranted = false;
  /** What ran: auto becomes precopy or hybrid. */
  private ranMode: 'precopy' | 'postcopy' | 'hybrid' = 'precopy';
  // ---- post-copy (see docs/postcopy.md) ----
  /** STATE has been sent: from now on the VM is not this host's alone and is never resumed here (unless the destination never ran it). */
  private switched = false;
  private postcopyRound = 0;
  private postcopyAt = 0;
  private postcopyDoneAt = 0;
  private linkDown: LinkDownError | undefined;
  private resumeWaiter: ((to: { host: string; port: number } | undefined) => void) | undefined;
  private pusher: PostcopyPusher | undefined;
  private readonly pushTally: PushTally = newPushTally();
  /** PAGE_REQUESTs that arrived while no pusher ran (between a RESUME and the new pusher). */
  private earlyRequests: PageRequest[] = [];
  private peerStats: PeerPostcopyStats | undefined;
  private resumes = 0;
  private pausedMs = 0;
  private precopyRounds = 0;
  private lastResumeError = '';
  private resumeListeners: ((error: string | undefined) => void)[] = [];
  private onActivated: (() => void) | undefined;
  private runPromise: Promise<MigrationReport> | undefined;

  private stage: MigrationStage = 'reservation';
  private status: MigrationStatus = 'setup';
  private round = 0;
  private t0 = performance.now();
  private setupTimeMs = 0;
  private controlBytes = 0;
  private sender: PageSender | undefined;
  private encodings: SourceEncodings | undefined;
  /** Streams 1..n-1 when --streams n > 1; stream 0 is `socket`. */
  private streams: DataStreams | undefined;
  private hello: Body<Hello> | undefined;
  /** Stream 0's own share of the round just sent (its ROUND_END counts only its pages). */
  private ownTally: RoundTally | undefined;
  private readonly autoConverge: AutoConverge | undefined;
  /** Ballooned and free-hinted pages never sent (page-skip.ts). */
  private readonly skips: PageSkips;
  private hintRun: FreePageHintRun | undefined;
  private readonly stunner: Stunner | undefined;
  private throttlePercent = 0;
  private maxThrottlePercent = 0;
  private remainingBytes = 0;
  private bandwidthBps = 0;
  private dirtyRateBps = 0;
  private expectedMs = 0;
  private switchoverReason = '';
  private stateBytes = 0;
  private readonly perRound: RoundStats[] = [];
  private peakBandwidth = 0;
  private smallSampleBandwidth = 0;
  private rttMs = Number.NaN;
  private readonly pings = new Map<bigint, PingRecord>();
  private commitPing: bigint | undefined;

  private failure: MigrationError | undefined;
  private readonly failWaiters = new Set<(e: MigrationError) => void>();
  private pendingAbort: MigrationError | undefined;
  private preCancel: MigrationError | undefined;
  private completeSent = false;
  private isCommitted = false;
  private finished = false;
  private readonly inbox: Message[] = [];
  private inboxWaiter: ((m: Message | undefined) => void) | undefined;
  private peerGone = false;

  private dirtyLogging: Promise<void> | undefined;
  private pausing: Promise<void> | undefined;
  private pausedAt = 0;
  /** CLOCK_MONOTONIC (µs) at the pause, for a destination on this machine (RESUMED_AT). */
  private pausedMonoUs = 0;
  private resumedAtGranted = false;
  /** The destination takes PAUSED_AT (guest clock 'continuous'). */
  private pausedAtGranted = false;
  /** console-precopy granted: CONSOLE frames go live and the state saved at the pause leaves their bytes out. */
  private consoleGranted = false;
  /** Where the console history sent so far ends in the guest's output; -1: none sent. */
  private consoleSent = -1;
  /** The destination takes PAGE_RUN frames (pre-copy over one stream). */
  private pageRunsGranted = false;
  /** CLOCK_MONOTONIC (µs) when the vCPU thread stopped the guest clock for the pause: where a counted pause begins. */
  private clockStoppedUs = 0;
  /** The destination's RESUMED_AT, if it sent one. */
  private peerResumed: ResumedAt | undefined;
  private resumedAt = 0;
  private completeSentAt = 0;
  private committedAt = 0;
  private activatedAt = 0;
  private switchoverUs: number | undefined;
  /** The XBZRLE fallback's sample (pre-copy, one stream, XBZRLE granted but not asked for). */
  private deltaProbe: DeltaProbe | undefined;
  private fallbackDeclinedLogged = false;
  private ramDigest: Uint8Array | undefined;
  private ramDigestMatch: boolean | undefined;
  private timers: NodeJS.Timeout[] = [];

  constructor(vm: MigratableVm, opts: MigrateOptions) {
    super();
    this.vm = vm;
    this.opts = opts;
    this.autoConverge = opts.autoConverge === true ? new AutoConverge() : undefined;
    this.skips = new PageSkips(vm.ram);
    this.log = (opts.log ?? silentLogger).child({ migration: opts.id, vm: vm.name, peer: opts.destinationName });
    this.stunner = opts.stun === true
      ? new Stunner({ connect: () => vm.connectGuest?.(ASSIST_PORT), ramPages: vm.ram.pageCount, budgetBps: opts.stunBudgetBps, log: this.log })
      : undefined;
    this.peer = opts.destinationName;
    this.destination = opts.destination;
  }

  /** True once the destination confirmed it holds the VM; the source must never resume it again. */
  get committed(): boolean {
    return this.isCommitted;
  }

  run(): Promise<MigrationReport> {
    this.runPromise ??= this.execute();
    return this.runPromise;
  }

  /** Abandons the migration and keeps the VM here. Effective until commitment (post-copy: until the switch); ignored after it. */
  cancel(): void {
    if (this.isCommitted || this.finished) return;
    if (this.switched) {
      this.log.warn('cancel ignored: the VM already runs at the destination (post-copy); it can only be completed');
      return;
    }
    const err = new MigrationError(this.stage, 'migration cancelled', { status: 'cancelled', abort: 'cancelled' });
    if (this.runPromise === undefined) {
      this.preCancel = err;
      return;
    }
    this.log.info({ stage: this.stage }, 'cancel requested');
    this.abortLocally(err);
  }

  progress(): MigrationProgress {
    return {
      id: this.opts.id,
      vm: this.vm.name,
      status: this.status,
      stage: this.stage,
      round: this.round,
      ramBytes: this.vm.ram.bytes,
      bytesTransferred: this.bytesTransferred(),
      pagesTransferred: this.pagesTransferred(),
      remainingBytes: this.pusher !== undefined ? this.pusher.left * PAGE_SIZE : this.remainingBytes,
      bandwidthBps: Math.round(this.bandwidthBps),
      dirtyRateBps: Math.round(this.dirtyRateBps),
      expectedDowntimeMs: Math.round(this.expectedMs * 1000) / 1000,
      elapsedMs: Math.round(performance.now() - this.t0),
      ...(this.autoConverge !== undefined ? { throttlePercent: this.throttlePercent } : {}),
    };
  }

  // ---- the stages ------------------------------------------------------------------------

  private async execute(): Promise<MigrationReport> {
    this.t0 = performance.now();
    this.startTimers();
    this.emitProgress();
    try {
      if (this.preCancel !== undefined) throw this.preCancel;
      this.checkOptions();
      await this.reserve();
      if (this.opts.mode !== 'postcopy') await this.iterate();
      if (this.goesPostcopy()) {
        await this.postcopy();
      } else {
        await this.stopAndCopy();
        await this.commit();
        await this.activate();
      }
      return this.finish('completed', undefined);
    } catch (e) {
      if (this.isCommitted) {
        // Nothing after COMMITTED may undo the move; a late local error is only logged.
        this.log.error({ err: errorText(e) }, 'error after commitment (the VM runs at the destination)');
        return this.finish('completed', undefined);
      }
      if (this.switched) {
        // The VM ran at the destination: it cannot come back here. Nothing is discarded.
        const err = this.asFailure(e);
        this.log.error({ err: err.message }, 'post-copy cannot complete: the VM is lost');
        return this.finish('lost', err);
      }
      this.fail(this.asFailure(e));
      const failure = this.failure ?? this.asFailure(e);
      await this.rollback();
      return this.finish(failure.status, failure);
    } finally {
      for (const t of this.timers) clearTimeout(t);
      this.timers = [];
    }
  }

  private checkOptions(): void {
    const o = this.opts;
    const bad = (what: string): never => {
      throw new MigrationError('reservation', `invalid migration options: ${what}`);
    };
    if (!['precopy', 'postcopy', 'hybrid', 'auto'].includes(o.mode)) bad(`mode '${String(o.mode)}' (precopy, postcopy, hybrid or auto)`);
    if (o.precopyRounds !== undefined && (!Number.isInteger(o.precopyRounds) || o.precopyRounds < 1)) bad(`precopyRounds = ${o.precopyRounds}`);
    if (o.prepaging !== undefined && o.prepaging !== 'linear' && o.prepaging !== 'bubbling') bad(`prepaging '${String(o.prepaging)}' (linear or bubbling)`);
    if (!Number.isInteger(o.destination.port) || o.destination.port <= 0 || o.destination.port > 65535) bad(`destination port ${o.destination.port}`);
    for (const [k, v] of [['maxBandwidthBps', o.maxBandwidthBps], ['minBandwidthBps', o.minBandwidthBps], ['rateIncrementBps', o.rateIncrementBps ?? 0], ['stopCopyBandwidthBps', o.stopCopyBandwidthBps ?? 0], ['downtimeLimitMs', o.downtimeLimitMs], ['timeoutMs', o.timeoutMs]] as const) {
      if (!Number.isFinite(v) || v < 0) bad(`${k} = ${v}`);
    }
    if (!Number.isInteger(o.maxRounds) || o.maxRounds < 1) bad(`maxRounds = ${o.maxRounds}`);
    if (o.xbzrleCacheBytes !== undefined && (!Number.isSafeInteger(o.xbzrleCacheBytes) || o.xbzrleCacheBytes < PAGE_SIZE)) bad(`xbzrleCacheBytes = ${o.xbzrleCacheBytes} (at least one page)`);
    if (o.compression !== undefined && o.compression !== 'lz4' && o.compression !== 'zstd') bad(`compression '${String(o.compression)}' (lz4 or zstd)`);
    if (o.streams !== undefined && (!Number.isInteger(o.streams) || o.streams < 1 || o.streams > MAX_STREAMS)) bad(`streams = ${o.streams} (1..${MAX_STREAMS})`);
    if ((o.streams ?? 1) > 1 && o.mode !== 'precopy') bad(`parallel streams are for pre-copy only, not ${o.mode}`);
    if (o.stun === true && o.mode !== 'precopy') bad(`stunning is for pre-copy only, not ${o.mode}`);
    if (o.stunBudgetBps !== undefined && (!Number.isFinite(o.stunBudgetBps) || o.stunBudgetBps < 0)) bad(`stunBudgetBps = ${o.stunBudgetBps}`);
  }

  /** Stage 1: connect, HELLO, and the destination's ACCEPT or REFUSE; then a first RTT sample. */
  private async reserve(): Promise<void> {
    this.log.info({ ...this.destination, ramBytes: this.vm.ram.bytes, mode: this.opts.mode }, 'migration: connecting to the destination');
    const m = await this.handshake(new Uint8Array(16));
    this.sessionId = m.sessionId;
    this.zeroGranted = (m.capabilities & Capability.ZeroPages) !== 0;
    try {
      this.encodings = new SourceEncodings(this.opts, m.capabilities, this.vm.ram.pageCount, this.peer);
    } catch (e) {
      throw new MigrationError('reservation', errorText(e), { peer: this.peer, abort: 'cancelled' });
    }
    this.pageRunsGranted = (m.capabilities & Capability.PageRuns) !== 0;
    this.sender = new PageSender(this.vm.ram, this.sink, this.zeroGranted, { ...this.encodings.encodings, pageRuns: this.pageRunsGranted });
    if (this.encodings.canFallBackToXbzrle && this.xbzrleFallbackWanted(this.opts.mode, this.opts.streams ?? 1)) this.deltaProbe = new DeltaProbe();
    this.balloonPagesGranted = (m.capabilities & Capability.BalloonPages) !== 0;
    this.resumedAtGranted = (m.capabilities & Capability.ResumedAt) !== 0;
    this.pausedAtGranted = (m.capabilities & Capability.PausedAt) !== 0;
    this.consoleGranted = (m.capabilities & Capability.ConsolePrecopy) !== 0 && this.vm.consoleSince !== undefined;
    this.log.info({ session: formatId(m.sessionId), zeroPages: this.zeroGranted }, 'migration: destination accepted, RAM reserved there');
    // Before any page: the destination starts running the guest's code on its standby thread.
    const image = this.warmUpImage();
    if ((m.capabilities & Capability.WarmImage) !== 0 && image !== undefined) {
      this.write(encodeImage({ image }));
      // ...and, if it replays client traffic to that boot, what the VM's clients sent first.
      const samples = (m.capabilities & Capability.WarmTraffic) !== 0 ? this.warmUpTraffic() : [];
      if (samples.length > 0) this.write(encodeWarmTraffic({ samples }));
    }
    // ...and the pages that hold data, so fresh RAM there is backed before they arrive.
    if ((m.capabilities & Capability.WrittenPages) !== 0) {
      const runs = writtenRuns(this.vm.ram);
      if (runs.runs.length / 2 <= MAX_PAGE_RUNS) this.write(encodeWritten({ runs }));
    }
    const n = this.opts.mode === 'precopy' ? (this.opts.streams ?? 1) : 1;
    if (n > 1) {
      if ((m.capabilities & Capability.MultiStream) === 0) throw new MigrationError('reservation', `destination ${this.peer} does not take parallel streams`, { peer: this.peer, abort: 'cancelled' });
      const { host, port } = this.destination;
      this.streams = new DataStreams({
        host, port, count: n, sessionId: m.sessionId, hello: this.hello!, ram: this.vm.ram, zeroPages: this.zeroGranted, encodings: this.encodings.encodings,
        guard: (p) => this.guard(p),
        // After COMPLETE only stream 0 matters: the destination may close data streams as it activates.
        onFail: (e) => {
          if (!this.completeSent) this.fail(this.lost(e.message));
        },
      });
      await this.streams.open();
      this.log.info({ streams: n }, 'migration: data streams joined');
    }
    // The console history so far: only what is printed after the last CONSOLE is left for the state.
    this.sendConsole();
    // The first RTT sample. The destination holds its PONGs until its standby can load a state,
    // which on a first visit is after the guest-image warm-up (the setup time then includes it).
    await this.guard(this.pingAndWait());
  }

  /**
   * Sends a round on every stream (page p on stream p mod n, each at its share of `limit`);
   * returns the round's totals and keeps stream 0's own share for its ROUND_END. `paused`:
   * stop-and-copy (PageSender.sendRound).
   */
  private async sendRoundAll(list: Uint32Array, round: number, skipDirty: boolean, limit: number, paused = false, blocks?: Uint8Array): Promise<RoundTally> {
    const sender = this.sender!;
    const streams = this.streams;
    if (streams === undefined) {
      this.ownTally = undefined;
      return sender.sendRound(list, round, skipDirty, paused, blocks);
    }
    const share = limit === Infinity ? Infinity : limit / streams.count;
    sender.setRate(share);
    streams.setRate(share);
    const { own, rest } = streams.split(list);
    const [mine, others] = await Promise.all([sender.sendRound(own, round, skipDirty, paused, blocks), streams.sendRound(rest, round, skipDirty, paused, blocks)]);
    this.ownTally = mine;
    const all = { ...mine };
    for (const t of others) {
      all.pages += t.pages;
      all.zeroPages += t.zeroPages;
      all.skipped += t.skipped;
      all.bytes += t.bytes;
      all.unchanged += t.unchanged;
      all.limiterWaitMs = Math.max(all.limiterWaitMs, t.limiterWaitMs);
    }
    return all;
  }

  /**
   * A connection to the destination, HELLO and its ACCEPT: a new session (`sessionId` all zero)
   * or the resumption of a post-copy session. Events of an earlier connection are ignored.
   */
  private async handshake(sessionId: Uint8Array): Promise<Accept> {
    const { host, port } = this.destination;
    this.reader = new FrameReader({ from: 'destination' });
    this.inbox.length = 0;
    this.peerGone = false;
    const s = connect({ host, port });
    this.socket = s;
    const reader = this.reader;
    s.on('data', (chunk: Buffer) => {
      if (this.socket === s) this.onData(chunk);
    });
    s.on('end', () => {
      if (this.socket !== s) return;
      try {
        reader.end();
        this.onPeerGone('the destination closed the connection');
      } catch (e) {
        this.onPeerGone(`the destination closed the connection mid-frame (${errorText(e)})`);
      }
    });
    s.on('error', (e) => {
      if (this.socket === s) this.onPeerGone(`connection error: ${errorText(e)}`);
    });
    s.on('close', () => {
      if (this.socket === s) this.onPeerGone('connection closed');
    });
    await this.guard(new Promise<void>((resolve) => s.once('connect', resolve)));
    s.setNoDelay(true);
    s.setKeepAlive(true, 5_000);

    const vm = this.vm;
    const mode = this.opts.mode === 'auto' ? 'hybrid' : this.opts.mode;
    const streamCount = mode === 'precopy' ? (this.opts.streams ?? 1) : 1;
    this.write(encodeHello((this.hello = {
      version: PROTOCOL_VERSION,
      vmId: vm.uuid,
      vmName: vm.name,
      ramBytes: vm.ram.bytes,
      pageSize: PAGE_SIZE,
      // The migration id (and --verify for post-copy) travel as extra config keys; the destination removes them.
      config: { ...vm.config, migrationId: this.opts.id, ...(mode !== 'precopy' && this.opts.verifyRam ? { [VERIFY_KEY]: true } : {}), ...(this.stunner !== undefined ? { [STUN_CONFIG_KEY]: true } : {}) },
      mode,
      capabilities: (mode === 'precopy' ? Capability.ZeroPages : Capability.ZeroPages | Capability.PostcopyRecovery | Capability.BalloonPages) | offeredCapabilities(this.opts) | (streamCount > 1 ? Capability.MultiStream : 0)
        | (this.xbzrleFallbackWanted(mode, streamCount) ? Capability.Xbzrle : 0)
        // The image, for the destination's warm-up: a new session that runs pre-copy first.
        | (this.warmUpImage() !== undefined && mode !== 'postcopy' && isZeroId(sessionId) ? Capability.WarmImage | Capability.WarmTraffic : 0)
        | Capability.ResumedAt
        | (this.guestClock === 'continuous' ? Capability.PausedAt : 0)
        | (mode === 'precopy' && streamCount === 1 && this.opts.pageRuns !== false ? Capability.PageRuns : 0)
        | (mode === 'precopy' && vm.consoleSince !== undefined && vm.pauseAndSave !== undefined ? Capability.ConsolePrecopy : 0)
        | (mode !== 'postcopy' && isZeroId(sessionId) ? Capability.WrittenPages : 0),
      streamIndex: 0,
      streamCount,
      sessionId,
    })));
    const m = await this.guard(this.nextMessage());
    if (m === undefined) throw this.linkDown ?? this.lost('the destination closed the connection during the handshake');
    if (m.type !== FrameType.Accept) throw this.protocolError(`expected ACCEPT, got ${frameTypeName(m.type)}`);
    return m;
  }

  /**
   * The XBZRLE fallback's test: the sample of the last round's pages, those dirtied again during
   * it, encoded against their copies from its start. Small deltas (or too few to tell): yes.
   */
  private deltasWouldHelp(): boolean {
    const mean = this.deltaProbe?.meanDeltaBytes(this.vm.ram);
    if (mean === undefined || mean <= FALLBACK_MAX_MEAN_DELTA) return true;
    if (!this.fallbackDeclinedLogged) this.log.info({ meanDeltaBytes: Math.round(mean) }, 'pre-copy is not converging; XBZRLE would not help (sampled pages change whole): no fallback');
    this.fallbackDeclinedLogged = true;
    return false;
  }

  /** Client traffic samples for the destination's warm-up: the VM's, as many as fit a WARM_TRAFFIC frame. */
  private warmUpTraffic(): readonly TrafficSample[] {
    const samples = this.vm.trafficSamples?.() ?? [];
    return samples.slice(-MAX_WARM_SAMPLES).map((s) => (s.bytes.length > MAX_WARM_SAMPLE_BYTES ? { vmPort: s.vmPort, bytes: s.bytes.subarray(0, MAX_WARM_SAMPLE_BYTES) } : s));
  }

  /** The guest image to send for the destination's warm-up: the VM's, if it has one that fits an IMAGE frame. */
  private warmUpImage(): Uint8Array | undefined {
    const image = this.vm.image;
    return image !== undefined && image.length <= MAX_IMAGE_BYTES ? image : undefined;
  }

  /** Offer XBZRLE for the fallback: pre-copy over one stream, XBZRLE not asked for, fallback not declined. */
  private xbzrleFallbackWanted(mode: string, streamCount: number): boolean {
    return mode === 'precopy' && streamCount === 1 && this.opts.xbzrleCacheBytes === undefined && this.opts.xbzrleFallback !== false;
  }

  /** Stage 2: iterative pre-copy until the switchover policy says stop. */
  private async iterate(): Promise<void> {
    const vm = this.vm;
    const ram = vm.ram;
    this.dirtyLogging = vm.setDirtyLogging(true);
    this.dirtyLogging.catch(noop);
    await this.guard(this.dirtyLogging);
    // Free page hinting starts once the dirty log catches every page reused after its hint.
    if (this.opts.freePageHint !== false && vm.balloon !== undefined) {
      this.hintRun = FreePageHintRun.start(vm.balloon, this.log);
      if (this.hintRun !== undefined) await this.guard(this.hintRun.reported());
    }
    this.stage = 'precopy';
    this.status = 'active';
    this.setupTimeMs = performance.now() - this.t0;
    this.emitProgress();
    this.stunner?.start();

    const limiter: RateLimitPolicy = new DynamicRateLimit(this.opts.minBandwidthBps, this.opts.maxBandwidthBps, this.opts.rateIncrementBps ?? 0);
    const maxRounds = this.opts.mode === 'hybrid' ? (this.opts.precopyRounds ?? 1) : this.opts.maxRounds;
    const policy: SwitchoverPolicy = new DowntimeLimitPolicy({ downtimeLimitMs: this.opts.downtimeLimitMs, maxRounds });
    const sender = this.sender!;
    // Round 1 sends every page; the dirty log (clear since logging started) collects what changes meanwhile.
    let list: Uint32Array = new Uint32Array(ram.pageCount);
    for (let p = 0; p < list.length; p++) list[p] = p;
    list = this.skips.firstRound(list, this.hintRun !== undefined);
    const dirtyBuf = new Uint32Array(ram.pageCount);
    let prevDirtyRate = 0;
    // acks[k]: the PONG to the PING sent behind round k. The source runs at most one round
    // ahead of what the destination has taken in, and pauses the VM only once the destination
    // has every live round: the last round then does not queue behind earlier ones.
    const acks: Promise<void>[] = [];
    const acked: boolean[] = [];
    let dirtySince = performance.now(); // when the marks being collected started (the last sync)
    let fallbackUntil = 0; // XBZRLE fallback: the last round it is given before 'not-converging' counts again
    let catchUps = 0; // live rounds added because the destination was behind at the switchover (catchUpWanted)
    let nextIsCatchUp = false;
    for (let round = 1; ; round++) {
      this.round = round;
      if (round >= 3) await this.guard(acks[round - 2]!);
      const limit = limiter.roundLimit(round, prevDirtyRate);
      sender.setRate(limit);
      const started = performance.now();
      // Xen's skip leaves a page dirty again before its turn for the next round. With XBZRLE a
      // later round sends it anyway: a re-send is a small delta, and a page never sent is never
      // cached, so a guest that rewrites a little of every page would reach stop-and-copy with
      // nothing cached and send every page whole.
      const xbzrle = this.encodings?.xbzrle !== undefined;
      // The XBZRLE fallback's sample: these pages as they are before the round (delta-probe.ts).
      // Not round 1's: the fallback is decided after round 2 at the earliest, on that round's sample.
      if (!xbzrle && round >= 2) this.deltaProbe?.snapshot(ram, list);
      const tally = await this.sendRoundAll(list, round, !(xbzrle && round >= 2), limit);
      if (round === 1) this.hintRun?.stop(); // as QEMU: hints serve the bulk round only
      this.sendConsole();
      const durationMs = Math.max(performance.now() - started, 0.001);
      const dirtyPages = ram.dirty.count();
      const dirtyRate = (dirtyPages * PAGE_SIZE * 1000) / Math.max(performance.now() - dirtySince, 0.001);
      const tasks = this.stunner?.measure(ram.dirty, performance.now() - dirtySince);
      this.recordRound(round, tally, durationMs, dirtyPages, dirtyRate, limit);
      if (nextIsCatchUp) this.perRound[this.perRound.length - 1]!.catchUp = true;
      nextIsCatchUp = false;
      if (tasks !== undefined) this.perRound[this.perRound.length - 1]!.tasks = tasks;
      if (this.autoConverge !== undefined) this.applyThrottle(this.autoConverge.afterPeriod(dirtyPages * PAGE_SIZE, tally.bytes));
      acks[round] = this.streams !== undefined ? Promise.all([this.pingAndWait(), this.streams.ping()]).then(noop) : this.pingAndWait();
      const r = round;
      acks[round].then(() => (acked[r] = true), noop);
      this.remainingBytes = dirtyPages * PAGE_SIZE;
      this.dirtyRateBps = dirtyRate;
      const decision = policy.decide({
        round,
        remainingBytes: xbzrle && round >= 2 ? dirtyPages * encodedPageBytes(tally) : this.remainingBytes,
        bandwidthBps: this.stopAndCopyBandwidth(),
        stateBytes: STATE_BYTES_ESTIMATE,
        rttMs: this.rtt(),
        switchoverMs: recentSwitchoverMs,
      });
      this.expectedMs = decision.expectedDowntimeMs;
      this.log.debug({ round, pages: tally.pages, zero: tally.zeroPages, skipped: tally.skipped, bytes: tally.bytes, durationMs, dirtyPages, rateLimitBps: limit, expectedDowntimeMs: decision.expectedDowntimeMs }, 'pre-copy round done');
      this.emitProgress();
      // Stunning (docs/precopy.md): the round that stuns is followed by at least one more live round.
      const stun = this.stunner;
      if (stun !== undefined && stun.wants(round, decision, this.opts.downtimeLimitMs) && (await this.guard(stun.stun(round, this.stopAndCopyBandwidth())))) {
        this.perRound[this.perRound.length - 1]!.stunned = stun.stunnedNames();
      } else if (decision.reason === 'not-converging' && fallbackUntil === 0 && round + XBZRLE_FALLBACK_ROUNDS <= maxRounds && this.deltaProbe !== undefined && this.deltasWouldHelp()) {
        // Not converging with whole pages: try deltas. One round caches the dirty pages, the
        // next sends deltas of them; then the policy decides on the encoded sizes.
        sender.useXbzrle(this.encodings!.fallBackToXbzrle(round, DEFAULT_XBZRLE_CACHE_BYTES));
        fallbackUntil = round + XBZRLE_FALLBACK_ROUNDS;
        this.log.info({ round, remainingBytes: this.remainingBytes }, 'pre-copy is not converging: XBZRLE on for the next rounds');
      } else if (decision.reason === 'not-converging' && round < fallbackUntil) {
        // The fallback's rounds: not judged until both have run.
      } else if (decision.reason === 'not-converging' && this.autoConverge?.canRise === true) {
        // As QEMU with auto-converge: not converging yet is what the throttle is for; keep
        // iterating while it can still rise (the round limit still applies).
        this.log.debug({ round, throttlePercent: this.throttlePercent }, 'pre-copy not converging; auto-converge can still slow the vCPU');
      } else if (decision.reason !== undefined) {
        // Unless the destination has the rest and this round is small: then pause now, before the
        // guest dirties more (no wait, so no catch-up: catchUpWanted needs a wait of 1 ms).
        const wait = ackWaitNeeded({ round, previousAcked: acked[round - 1] === true, roundBytes: tally.bytes });
        const waitFrom = performance.now();
        if (wait) await this.guard(acks[round]!);
        const waitedMs = wait ? performance.now() - waitFrom : 0;
        const pendingPages = wait ? ram.dirty.count() : dirtyPages;
        this.perRound[this.perRound.length - 1]!.ackWaitMs = Math.round(waitedMs * 1000) / 1000;
        const catchUp = catchUpWanted({ waitedMs, decidedPages: dirtyPages, pendingPages, bandwidthBps: this.stopAndCopyBandwidth(), catchUps, round, maxRounds });
        if (!catchUp) {
          this.switchoverReason = decision.reason;
          this.log.info({ round, reason: decision.reason, remainingBytes: pendingPages * PAGE_SIZE, waitedMs, expectedDowntimeMs: decision.expectedDowntimeMs }, 'migration: switching over');
          return;
        }
        // The destination was behind and the guest kept writing: send that while it still runs.
        catchUps++;
        nextIsCatchUp = true;
        this.log.info({ round, waitedMs, decidedPages: dirtyPages, pendingPages }, 'migration: the destination was behind; one more live round before the switchover');
      }
      // Clear-before-copy: take the marks now; pages written from here on are marked again.
      list = this.skips.laterRound(ram.dirty.sync(dirtyBuf));
      dirtySince = performance.now();
      prevDirtyRate = dirtyRate;
    }
  }

  // ---- post-copy and hybrid (docs/postcopy.md) ----------------------------------------------

  /** Post-copy and hybrid always switch; auto only when pre-copy did not converge. */
  private goesPostcopy(): boolean {
    const m = this.opts.mode;
    if (m === 'postcopy' || m === 'hybrid') return true;
    return m === 'auto' && (this.switchoverReason === 'not-converging' || this.switchoverReason === 'max-rounds');
  }

  /**
   * Pause, tell the destination which pages it lacks (hybrid: DISCARD of the pages dirtied since
   * sent; post-copy: all), send the state (the switch), then push and serve requests until the
   * destination holds every page and commits. A broken connection pauses and waits for resume().
   */
  private async postcopy(): Promise<void> {
    const vm = this.vm;
    const ram = vm.ram;
    const n = ram.pageCount;
    this.precopyRounds = this.round;
    const hybrid = this.round > 0;
    this.ranMode = hybrid ? 'hybrid' : 'postcopy';
    if (!hybrid) this.setupTimeMs = performance.now() - this.t0;
    const { saving } = await this.pauseAndSave();
    const needed = new Uint8Array(n);
    const round = ++this.round;
    this.postcopyRound = round;
    if (hybrid) {
      const list = this.skips.laterRound(ram.dirty.sync());
      for (let i = 0; i < list.length; i++) needed[list[i]!] = 1;
      this.write(encodeDiscard({ runs: pageRunsFromList(list, n) }));
    } else {
      needed.fill(1);
    }
    // The destination installs ballooned pages as zero pages from the state it loads.
    if (this.balloonPagesGranted) this.skips.postcopyNeeded(needed);
    if (this.opts.verifyRam) {
      this.skips.zeroUnsentFreePages();
      this.ramDigest = new PageDigests(n).takeAll(ram.u8).digest();
    }
    const state = await this.guard(saving);
    this.stateBytes = state.length;
    // The switch: once STATE is on its way the destination may run the VM.
    this.switched = true;
    this.sendPausedAt();
    const [head, blob] = encodeStateParts(state);
    this.write(head);
    this.write(blob);
    this.stage = 'postcopy';
    this.status = 'postcopy-active';
    this.postcopyAt = performance.now();
    this.log.info({ round, pages: hybrid ? needed.reduce((a, b) => a + b, 0) : n, prepaging: this.opts.prepaging ?? 'bubbling' }, 'post-copy: switched; pushing the pages the destination lacks');
    this.emitProgress();
    if (this.dirtyLogging !== undefined) vm.setDirtyLogging(false).catch(noop);
    for (;;) {
      try {
        await this.pushAndComplete(needed, round);
        return;
      } catch (e) {
        if (!(e instanceof LinkDownError) || this.isCommitted) throw e;
        this.pusher = undefined;
        await this.pausedUntilResumed(e, needed);
      }
    }
  }

  private async pushAndComplete(needed: Uint8Array, round: number): Promise<void> {
    const order = pushOrder(this.opts.prepaging ?? 'bubbling', needed);
    const rate = this.opts.maxBandwidthBps > 0 ? this.opts.maxBandwidthBps : Infinity;
    const pusher = new PostcopyPusher(this.vm.ram, this.sink, this.zeroGranted, needed, order, round, this.pushTally, rate, () => this.pingAndWait());
    this.pusher = pusher;
    for (const r of this.earlyRequests) pusher.request(r.requestId, r.pages);
    this.earlyRequests = [];
    if (this.activatedAt === 0 && this.resumes === 0) {
      // Push once the VM runs there (Hines): pages pushed during the restore would only delay it.
      await this.guard(new Promise<void>((resolve) => {
        this.onActivated = resolve;
      }));
    }
    const started = performance.now();
    const bytesBefore = this.pushTally.bytes;
    await pusher.run();
    const durationMs = Math.max(performance.now() - started, 0.001);
    const bytes = this.pushTally.bytes - bytesBefore + ROUND_END_FRAME_BYTES;
    this.write(encodeRoundEnd({ round, pagesSent: pusher.entriesSent, pagesDirtied: 0, durationUs: Math.round(durationMs * 1000), bytes }));
    this.write(encodeComplete({ round, ramDigest: this.ramDigest }));
    this.completeSent = true;
    this.completeSentAt = performance.now();
    this.log.info({ pushed: this.pushTally.pagesPushed, demanded: this.pushTally.pagesDemanded, requests: this.pushTally.requests }, 'post-copy: every page sent; waiting for COMMITTED');
    // COMMITTED comes once every page is present there; ACTIVATED and POSTCOPY_STATS may come first.
    while (!this.isCommitted) {
      const m = await this.guard(this.nextMessage());
      if (m === undefined && !this.isCommitted) throw this.linkDown ?? new LinkDownError('the connection closed before COMMITTED', this.peer);
    }
    this.postcopyDoneAt = this.committedAt;
    this.stage = 'done';
    this.socket?.end();
  }

  /** postcopy-paused: wait for resume() and reconnect; the destination's RESUME says what it still lacks. */
  private async pausedUntilResumed(why: LinkDownError, needed: Uint8Array): Promise<void> {
    const since = performance.now();
    this.status = 'postcopy-paused';
    this.log.warn({ err: why.message }, 'post-copy paused: the VM waits at the destination for missing pages; resume with tern migrate --resume');
    this.emitProgress();
    for (;;) {
      const to = await new Promise<{ host: string; port: number } | undefined>((resolve) => {
        this.resumeWaiter = resolve;
      });
      if (to !== undefined) this.destination = to;
      this.linkDown = undefined;
      this.log.info({ ...this.destination }, 'post-copy: reconnecting to resume');
      try {
        const acc = await this.handshake(this.sessionId);
        if (!bytesEqual(acc.sessionId, this.sessionId)) throw this.protocolError('ACCEPT of a resume names another session');
        const m = await this.guard(this.nextMessage());
        if (m === undefined) throw this.linkDown ?? new LinkDownError('closed before RESUME', this.peer);
        if (m.type !== FrameType.Resume) throw this.protocolError(`expected RESUME, got ${frameTypeName(m.type)}`);
        if (m.runs.ramPages !== needed.length) throw this.protocolError(`RESUME covers ${m.runs.ramPages} pages, the VM has ${needed.length}`);
        needed.fill(0);
        forEachRunPage(m.runs, (p) => {
          needed[p] = 1;
        });
        this.resumes++;
        this.pausedMs += performance.now() - since;
        this.status = 'postcopy-active';
        this.lastResumeError = '';
        this.settleResume(undefined);
        this.log.info({ missing: m.runs.pageCount }, 'post-copy resumed');
        this.emitProgress();
        return;
      } catch (e) {
        if (this.failure !== undefined) throw this.failure;
        const err = e instanceof MigrationError ? e : this.asFailure(e);
        this.lastResumeError = err.message;
        this.settleResume(err.message);
        this.socket?.destroy();
        this.linkDown ??= new LinkDownError(err.message, this.peer);
        this.status = 'postcopy-paused';
        this.log.warn({ err: err.message }, 'post-copy resume failed; still paused');
        this.emitProgress();
      }
    }
  }

  /**
   * Resumes a post-copy paused by a broken connection (optionally at a new address of the
   * destination's migration listener). False when the migration is not paused.
   */
  resume(destination?: { host: string; port: number }): boolean {
    const w = this.resumeWaiter;
    if (w === undefined || this.status !== 'postcopy-paused') return false;
    this.resumeWaiter = undefined;
    w(destination);
    return true;
  }

  /** Resolves with undefined once the next resume attempt has reconnected, or with why it failed. */
  nextResumeOutcome(): Promise<string | undefined> {
    return new Promise((resolve) => this.resumeListeners.push(resolve));
  }

  private settleResume(error: string | undefined): void {
    const ls = this.resumeListeners;
    this.resumeListeners = [];
    for (const l of ls) l(error);
  }

  /** The connection broke after the switch: stop sending, wake every wait, keep everything. */
  private breakLink(why: string): void {
    if (this.linkDown !== undefined || this.finished || this.isCommitted || this.failure !== undefined) return;
    this.linkDown = new LinkDownError(why, this.peer);
    this.socket?.destroy();
    this.deliver(undefined);
    for (const w of this.failWaiters) w(this.linkDown);
    this.failWaiters.clear();
  }

  /**
   * CONSOLE (console-precopy): the console history printed since the last one (all the host holds,
   * the first time). Nothing when there is nothing new.
   */
  private sendConsole(): void {
    if (!this.consoleGranted) return;
    const h = this.vm.consoleSince!(Math.max(0, this.consoleSent));
    if (h.end <= this.consoleSent) return;
    this.write(encodeConsole(h));
    this.consoleSent = h.end;
  }

  /** Stop-and-copy's start (both designs): pause the vCPU, then let its thread save the state. */
  private async pauseAndSave(): Promise<{ saving: Promise<Uint8Array> }> {
    this.stage = 'stop-and-copy';
    this.status = 'device';
    this.emitProgress();
    this.pausedAt = performance.now();
    this.pausedMonoUs = monotonicUs();
    const both = this.vm.pauseAndSave?.(this.consoleGranted && this.consoleSent >= 0 ? this.consoleSent : undefined);
    this.pausing = both !== undefined ? both.paused : this.vm.pause();
    this.pausing.catch(noop);
    both?.state.catch(noop);
    await this.guard(this.pausing);
    // The instant the vCPU thread stopped the clock, not when this thread heard of it.
    const now = monotonicUs();
    this.clockStoppedUs = Math.min(this.vm.clockStoppedUs?.() ?? now, now);
    const saving = both !== undefined ? both.state : this.vm.saveState();
    saving.catch(noop);
    return { saving }; // wrapped: awaiting must not wait for the state too
  }

  /** PAUSED_AT, just before STATE: the destination counts the pause as guest time (guest clock 'continuous'). */
  private sendPausedAt(): void {
    if (!this.pausedAtGranted || this.clockStoppedUs === 0) return;
    this.write(encodePausedAt({ bootId: bootId(), pausedUs: this.clockStoppedUs, sentUs: Math.max(monotonicUs(), this.clockStoppedUs) }));
  }

  /** The guest clock as this migration ran it: 'continuous' only where the destination took PAUSED_AT. */
  private guestClockUsed(): GuestClock {
    return this.guestClock === 'continuous' && this.pausedAtGranted ? 'continuous' : 'frozen';
  }

  private get guestClock(): GuestClock {
    return this.opts.guestClock ?? 'continuous';
  }

  /** Stage 3: pause, send what is still dirty and the machine state, ask to commit. */
  private async stopAndCopy(): Promise<void> {
    const vm = this.vm;
    const ram = vm.ram;
    const sender = this.sender!;
    // The state is saved by the vCPU thread while this thread sends the last pages.
    // With each page, the blocks written since the last sync: XBZRLE compares only those.
    const blocks = this.encodings?.xbzrle !== undefined ? new Uint8Array(ram.pageCount) : undefined;
    this.sendConsole(); // what was printed since the last round: the state then carries only the last moment's
    const { saving } = await this.pauseAndSave();
    const list = this.skips.laterRound(ram.dirty.sync(undefined, blocks));
    const round = ++this.round;
    const limit = this.stopCopyLimit();
    sender.setRate(limit);
    const started = performance.now();
    const tally = await this.sendRoundAll(list, round, false, limit, true, blocks);
    const durationMs = Math.max(performance.now() - started, 0.001);
    this.recordRound(round, tally, durationMs, 0, 0, limit);
    this.remainingBytes = 0;
    // STATE may follow only once every data stream's last round has arrived (§5.5).
    if (this.streams !== undefined) await this.guard(this.streams.ping());

    const state = await this.guard(saving);
    this.sendPausedAt();
    const [head, blob] = encodeStateParts(state);
    this.write(head);
    this.write(blob);
    this.stateBytes = state.length;
    if (this.opts.verifyRam) {
      // Free-hinted pages never sent are zero there; here they hold stale free memory.
      this.skips.zeroUnsentFreePages();
      this.ramDigest = sha256(ram.u8);
    }
    // A PING before COMPLETE: its PONG proves the destination has every page and the state.
    this.commitPing = this.sendPing();
    this.write(encodeComplete({ round, ramDigest: this.ramDigest }));
    this.completeSent = true;
    this.completeSentAt = performance.now();
    this.emitProgress();
  }

  /** Stage 4: the destination's COMMITTED (it loaded the state and holds a consistent image). */
  private async commit(): Promise<void> {
    const m = await this.guard(this.nextMessage());
    // onFrame already took COMMITTED's effect (committed = true) the moment it arrived.
    if (!this.isCommitted) {
      if (m === undefined) throw this.pendingAbort ?? this.lost('the destination closed the connection before COMMITTED');
      throw this.protocolError(`expected COMMITTED, got ${frameTypeName(m.type)}`);
    }
    this.log.info({ sinceCompleteMs: this.committedAt - this.completeSentAt }, 'migration: committed; the VM belongs to the destination');
    this.emitProgress();
  }

  /**
   * COMMITTED takes effect as it is read, before anything else can happen: a connection closing
   * right behind it (the destination closes after ACTIVATED) must not look like a failure.
   */
  private onCommitted(m: Committed): void {
    if (!this.completeSent) throw this.protocolError('COMMITTED before COMPLETE');
    if (this.failure !== undefined) {
      this.log.error({ failure: this.failure.message }, 'COMMITTED arrived after this source gave up: the VM may now run on both hosts; stop one');
      return;
    }
    this.isCommitted = true;
    this.committedAt = performance.now();
    this.stage = 'activation';
    if (this.pendingAbort !== undefined) this.log.info('the destination committed before it saw our abort: the migration completes');
    this.pendingAbort = undefined;
    if (this.ramDigest !== undefined) {
      this.ramDigestMatch = m.ramDigest !== undefined ? bytesEqual(m.ramDigest, this.ramDigest) : undefined;
      if (this.ramDigestMatch === false) this.log.error('the destination committed a RAM image whose digest differs from ours');
    }
  }

  /** Stage 5: ACTIVATED: the VM runs at the destination. */
  private async activate(): Promise<void> {
    const m = await new Promise<Message | undefined>((resolve) => {
      const t = setTimeout(() => resolve(undefined), ACTIVATION_WAIT_MS);
      this.nextMessage().then(
        (v) => {
          clearTimeout(t);
          resolve(v);
        },
        () => {
          clearTimeout(t);
          resolve(undefined);
        },
      );
    });
    if (m !== undefined && m.type === FrameType.Activated) {
      this.activatedAt = performance.now();
      this.switchoverUs = m.switchoverUs;
      recentSwitchoverMs = Math.min(MAX_SWITCHOVER_ESTIMATE_MS, m.switchoverUs / 1000);
    } else {
      this.log.warn('no ACTIVATED from the destination after COMMITTED; the downtime is estimated from COMMITTED');
    }
    this.stage = 'done';
    this.socket?.end();
  }

  // ---- failure handling ---------------------------------------------------------------------

  /** Latches the first failure, tells the peer when it should know, and wakes every guarded wait. */
  private fail(err: MigrationError): void {
    if (this.failure !== undefined || this.isCommitted) return;
    this.failure = err;
    this.streams?.destroy();
    this.log.warn({ stage: err.stage, status: err.status, err: err.message }, 'migration failed; the VM stays on the source');
    const s = this.socket;
    if (s !== undefined && !s.destroyed) {
      // ABORT only inside a session: before ACCEPT the destination expects nothing but HELLO.
      if (err.opts.abort !== undefined && s.writable && this.sender !== undefined) {
        s.end(encodeAbort({ reason: err.opts.abort, text: err.message }));
        const t = setTimeout(() => s.destroy(), 1_000);
        t.unref();
      } else {
        s.destroy();
      }
    }
    for (const w of this.failWaiters) w(err);
    this.failWaiters.clear();
  }

  /**
   * A local reason to stop (cancel, timeout). Before COMPLETE it fails at once. After COMPLETE
   * the destination may already be committing: tell it (ABORT) and let its answer decide:
   * COMMITTED means it won the race and the migration completes; a close means it dropped its copy.
   */
  private abortLocally(err: MigrationError): void {
    if (this.isCommitted || this.failure !== undefined || this.finished) return;
    if (this.switched) {
      this.log.warn({ err: err.message }, 'ignored after the post-copy switch: the migration can only complete');
      return;
    }
    if (!this.completeSent) {
      this.fail(err);
      return;
    }
    if (this.pendingAbort !== undefined) return;
    this.pendingAbort = new MigrationError(err.stage, err.message, { status: err.status });
    this.sendPendingAbort(err.opts.abort ?? 'cancelled');
  }

  private sendPendingAbort(reason: AbortReason = 'cancelled'): void {
    const err = this.pendingAbort;
    if (err === undefined || this.failure !== undefined) return;
    const s = this.socket;
    if (s !== undefined && s.writable) this.write(encodeAbort({ reason, text: err.message }));
    const t = setTimeout(() => this.fail(err), ABORT_ANSWER_MS);
    t.unref();
    this.timers.push(t);
  }

  private onPeerGone(why: string): void {
    this.peerGone = true;
    this.deliver(undefined);
    if (this.isCommitted || this.finished) return;
    if (this.switched) {
      this.breakLink(why);
      return;
    }
    this.fail(this.pendingAbort ?? this.lost(why));
  }

  private lost(why: string): MigrationError {
    return new MigrationError(this.stage, `lost the connection to destination ${this.peer}: ${why}`, { peer: this.peer });
  }

  private protocolError(text: string): MigrationError {
    return new MigrationError(this.stage, `protocol error from destination ${this.peer}: ${text}`, { peer: this.peer, abort: 'protocol' });
  }

  private asFailure(e: unknown): MigrationError {
    if (e instanceof MigrationError) return e;
    if (e instanceof WireError) return this.protocolError(e.message);
    return new MigrationError(this.stage, `local error: ${errorText(e)}`, { abort: 'internal' });
  }

  /** Back to where we started: the VM runs here, dirty logging off. */
  private async rollback(): Promise<void> {
    if (this.throttlePercent > 0) this.applyThrottle(0); // the VM stays here: at full speed again
    if (this.pausing !== undefined) {
      try {
        await this.pausing;
      } catch {
        /* the vCPU never paused; resume anyway */
      }
      try {
        this.vm.resume(this.guestClock === 'continuous' && this.clockStoppedUs > 0 ? this.clockStoppedUs : undefined);
        this.resumedAt = performance.now();
        this.log.info({ pausedMs: this.resumedAt - this.pausedAt }, 'the VM resumed on the source');
      } catch (e) {
        this.log.error({ err: errorText(e) }, 'could not resume the VM on the source');
      }
    }
    await this.stunner?.resumeOnSource();
    if (this.dirtyLogging !== undefined) {
      try {
        await this.dirtyLogging;
      } catch {
        /* it failed to turn on: turning it off is still right */
      }
      try {
        await this.vm.setDirtyLogging(false);
      } catch (e) {
        this.log.warn({ err: errorText(e) }, 'could not turn dirty logging off');
      }
    }
  }

  // ---- the connection ---------------------------------------------------------------------

  private readonly sink: FrameSink = {
    write: (frame, done) => {
      if (this.failure !== undefined) throw this.failure;
      if (this.linkDown !== undefined) throw this.linkDown;
      this.socket!.write(frame, done);
    },
    guard: <T>(p: Promise<T>) => this.guard(p),
  };

  /** A control frame; dropped once the connection is failing (the ABORT is the last word). */
  private write(frame: Uint8Array): void {
    const s = this.socket;
    if (s === undefined || !s.writable || this.failure !== undefined || this.linkDown !== undefined) return;
    this.controlBytes += frame.length;
    s.write(frame);
  }

  /** Awaits `p` unless the migration fails first. */
  private guard<T>(p: Promise<T>): Promise<T> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    if (this.linkDown !== undefined) return Promise.reject(this.linkDown);
    return new Promise<T>((resolve, reject) => {
      const w = (e: MigrationError): void => reject(e);
      this.failWaiters.add(w);
      p.then(
        (v) => {
          this.failWaiters.delete(w);
          resolve(v);
        },
        (e: unknown) => {
          this.failWaiters.delete(w);
          reject(e instanceof Error ? e : new Error(String(e)));
        },
      );
    });
  }

  private onData(chunk: Buffer): void {
    try {
      this.reader.push(chunk);
      for (;;) {
        const f = this.reader.next();
        if (f === undefined) break;
        this.onFrame(f);
      }
    } catch (e) {
      if (this.isCommitted) {
        this.log.warn({ err: errorText(e) }, 'bad bytes from the destination after commitment; closing');
        this.socket?.destroy();
        return;
      }
      if (this.switched) {
        this.log.warn({ err: errorText(e) }, 'bad bytes from the destination during post-copy; dropping the connection');
        this.breakLink(`protocol error: ${errorText(e)}`);
        return;
      }
      this.fail(e instanceof MigrationError ? e : this.protocolError(errorText(e)));
    }
  }

  private onFrame(f: Frame): void {
    const m = decodeMessage(f);
    switch (m.type) {
      case FrameType.Ping:
        this.write(encodePong({ nonce: m.nonce }));
        return;
      case FrameType.Pong:
        this.onPong(m.nonce);
        return;
      case FrameType.Abort:
        if (this.isCommitted) {
          this.log.warn({ reason: m.reason, text: m.text }, 'ABORT from the destination after commitment; ignored');
          return;
        }
        if (this.switched && this.activatedAt > 0) {
          this.breakLink(`the destination aborted (${m.reason}): ${m.text}`);
          return;
        }
        // Before ACTIVATED the destination never ran the VM (it aborts only before it resumes it): undo the switch.
        this.switched = false;
        this.fail(this.pendingAbort ?? new MigrationError(this.stage, `destination ${this.peer} aborted the migration (${m.reason}): ${m.text}`, { peer: this.peer }));
        return;
      case FrameType.Refuse:
        if (this.switched) {
          if (m.reason !== 'unknown-session') {
            this.breakLink(`the destination refused to resume (${m.reason}): ${m.text}`);
            return;
          }
          // It does not hold the session: it never restored the state, so the VM never ran there.
          this.switched = false;
          this.fail(new MigrationError('postcopy', `destination ${this.peer} does not hold the post-copy session (${m.text}); the VM resumes here`, { peer: this.peer }));
          return;
        }
        // Handled here, not by the waiting stage: the close that follows a REFUSE must not win.
        this.fail(new MigrationError('reservation', `destination ${this.peer} refused the migration (${m.reason}): ${m.text}`, { peer: this.peer }));
        return;
      case FrameType.Committed:
        this.onCommitted(m);
        this.deliver(m);
        return;
      case FrameType.Activated:
        if (this.switched) {
          // Post-copy: the VM runs there from now on; COMMITTED follows once every page is there.
          if (this.activatedAt === 0) {
            this.activatedAt = performance.now();
            this.switchoverUs = m.switchoverUs;
            this.log.info({ downtimeMs: Math.round(this.downtime() * 1000) / 1000 }, 'post-copy: the VM runs at the destination');
            this.onActivated?.();
          }
          return;
        }
        if (!this.isCommitted) throw this.protocolError('ACTIVATED before COMMITTED');
        this.deliver(m);
        return;
      case FrameType.ResumedAt:
        if (!this.isCommitted && !this.switched) throw this.protocolError('RESUMED_AT before COMMITTED');
        if (!this.resumedAtGranted) throw this.protocolError('RESUMED_AT without the resumed-at capability');
        this.peerResumed ??= m;
        return;
      case FrameType.PageRequest:
        if (!this.switched) throw this.protocolError('PAGE_REQUEST before the post-copy switch');
        if (this.pusher !== undefined) this.pusher.request(m.requestId, m.pages);
        else this.earlyRequests.push(m);
        return;
      case FrameType.PostcopyStats:
        if (!this.switched) throw this.protocolError('POSTCOPY_STATS before the post-copy switch');
        this.peerStats = m;
        return;
      case FrameType.Resume:
        if (!this.switched) throw this.protocolError('RESUME outside a post-copy resume');
        this.deliver(m);
        return;
      case FrameType.Accept:
        this.deliver(m);
        return;
      default:
        throw this.protocolError(`unexpected ${frameTypeName(m.type)} in a pre-copy migration`);
    }
  }

  private deliver(m: Message | undefined): void {
    const w = this.inboxWaiter;
    if (w !== undefined) {
      this.inboxWaiter = undefined;
      w(m);
    } else if (m !== undefined) {
      this.inbox.push(m);
    }
  }

  /** The next control message from the destination; undefined once the connection is gone. */
  private nextMessage(): Promise<Message | undefined> {
    const m = this.inbox.shift();
    if (m !== undefined) return Promise.resolve(m);
    if (this.peerGone) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      this.inboxWaiter = resolve;
    });
  }

  /** Sends a PING (the nonce is the send time in µs); returns its nonce. */
  private sendPing(resolve?: () => void): bigint | undefined {
    const s = this.socket;
    if (s === undefined || !s.writable || this.failure !== undefined) return undefined;
    const now = performance.now();
    let nonce = BigInt(Math.round(now * 1000));
    while (this.pings.has(nonce)) nonce++;
    this.pings.set(nonce, { sentAt: now, resolve });
    this.write(encodePing({ nonce }));
    return nonce;
  }

  /** A PING whose PONG is awaited: the first RTT sample, before any page is sent. */
  private pingAndWait(): Promise<void> {
    return new Promise<void>((resolve) => {
      if (this.sendPing(resolve) === undefined) resolve();
    });
  }

  private onPong(nonce: bigint): void {
    const rec = this.pings.get(nonce);
    if (rec === undefined) return; // not ours: ignore
    this.pings.delete(nonce);
    const rtt = performance.now() - rec.sentAt;
    // The minimum is the path's RTT; larger samples include queueing behind page data.
    this.rttMs = Number.isNaN(this.rttMs) ? rtt : Math.min(this.rttMs, rtt);
    rec.resolve?.();
    if (nonce === this.commitPing && this.stage === 'stop-and-copy') {
      this.stage = 'commitment';
      this.emitProgress();
    }
  }

  private rtt(): number {
    return Number.isNaN(this.rttMs) ? 1 : this.rttMs;
  }

  // ---- accounting -------------------------------------------------------------------------

  private bytesTransferred(): number {
    return (this.sender?.totalBytes ?? 0) + (this.streams?.totalBytes ?? 0) + this.controlBytes + this.pushTally.bytes;
  }

  private pagesTransferred(): number {
    return (this.sender?.totalPages ?? 0) + (this.streams?.totalPages ?? 0) + this.pushTally.pagesPushed + this.pushTally.pagesDemanded;
  }

  /** Auto-converge: sets the vCPU throttle (percent of wall time it sleeps). */
  private applyThrottle(percent: number): void {
    if (percent === this.throttlePercent) return;
    try {
      this.vm.setThrottle(percent);
    } catch (e) {
      this.log.warn({ err: errorText(e), percent }, 'could not set the vCPU throttle');
      return;
    }
    this.log.info({ from: this.throttlePercent, to: percent }, 'auto-converge: vCPU throttle changed');
    this.throttlePercent = percent;
    this.maxThrottlePercent = Math.max(this.maxThrottlePercent, percent);
  }

  private recordRound(round: number, t: RoundTally, durationMs: number, dirtyPages: number, dirtyRate: number, limit: number): void {
    const own = this.ownTally ?? t; // with data streams, stream 0's ROUND_END counts its own share
    this.write(encodeRoundEnd({ round, pagesSent: own.pages, pagesDirtied: dirtyPages, durationUs: Math.round(durationMs * 1000), bytes: own.bytes + ROUND_END_FRAME_BYTES }));
    if (this.streams !== undefined) this.controlBytes += this.streams.roundEnd(round, dirtyPages, Math.round(durationMs * 1000));
    const bandwidth = (t.bytes * 1000) / durationMs;
    if (t.bytes >= MIN_BANDWIDTH_SAMPLE_BYTES) this.peakBandwidth = Math.max(this.peakBandwidth, bandwidth);
    this.smallSampleBandwidth = Math.max(this.smallSampleBandwidth, bandwidth);
    this.bandwidthBps = bandwidth;
    this.perRound.push({
      round,
      pages: t.pages,
      bytes: t.bytes + ROUND_END_FRAME_BYTES,
      durationMs: Math.round(durationMs * 1000) / 1000,
      dirtyPages,
      dirtyRateBps: Math.round(dirtyRate),
      bandwidthBps: Math.round(bandwidth),
      rateLimitBps: limit === Infinity ? 0 : Math.round(limit),
      throttlePercent: this.throttlePercent,
      skippedPages: t.skipped,
    });
  }

  /**
   * What stop-and-copy can expect: the best bandwidth a sizeable round achieved (a lower bound
   * of the link's), capped by the maximum stop-and-copy runs at. Before any sizeable round, the
   * best of the small ones (their time is mostly scanning, so this underestimates) or the
   * limiter's floor, whichever is higher.
   */
  private stopAndCopyBandwidth(): number {
    const max = this.stopCopyLimit();
    let bw = this.peakBandwidth;
    if (bw === 0) bw = Math.max(this.opts.minBandwidthBps, this.smallSampleBandwidth);
    return Math.min(max, bw > 0 ? bw : 1);
  }

  /** The stop-and-copy round's rate as configured, bytes per second; 0: unlimited. */
  private get stopCopyBps(): number {
    return this.opts.stopCopyBandwidthBps ?? this.opts.maxBandwidthBps;
  }

  /** The rate the stop-and-copy round runs at, bytes per second; Infinity: unlimited. */
  private stopCopyLimit(): number {
    return this.stopCopyBps > 0 ? this.stopCopyBps : Infinity;
  }

  private startTimers(): void {
    const p = setInterval(() => this.emitProgress(), PROGRESS_INTERVAL_MS);
    p.unref();
    this.timers.push(p);
    if (this.opts.timeoutMs > 0) {
      const t = setTimeout(() => {
        this.log.warn({ stage: this.stage, timeoutMs: this.opts.timeoutMs }, 'migration timed out');
        this.abortLocally(new MigrationError(this.stage, `migration timed out after ${this.opts.timeoutMs} ms (in ${this.stage})`, { abort: 'timeout' }));
      }, this.opts.timeoutMs);
      t.unref();
      this.timers.push(t);
    }
  }

  private emitProgress(): void {
    try {
      this.emit('progress', this.progress());
    } catch (e) {
      this.log.error({ err: errorText(e) }, 'a progress listener threw');
    }
  }

  /**
   * Downtime, from the pause here to the resume there. A destination on this machine (the same
   * boot id in its RESUMED_AT) read the same CLOCK_MONOTONIC: the downtime is the difference of
   * the two readings. Otherwise the two clocks are not comparable, so it is estimated on this
   * clock: ACTIVATED left the destination right after the resume, so the resume happened about
   * one one-way delay (min RTT / 2) before ACTIVATED arrived here; the destination's own
   * switchover time (COMPLETE received to resume) is a lower bound. The estimate runs high when
   * either side's thread is late to send or read ACTIVATED (measured: 0-4 ms above the one-clock
   * figure on a busy 2-core machine).
   */
  private downtime(): number {
    if (this.pausedAt === 0) return 0;
    if (!this.isCommitted && !this.switched) return this.resumedAt > 0 ? this.resumedAt - this.pausedAt : 0;
    const exact = this.sameClockDowntime();
    if (exact !== undefined) return exact;
    if (!this.isCommitted) return 0;
    const oneWay = this.rtt() / 2;
    const end = this.activatedAt > 0 ? this.activatedAt : this.committedAt;
    const estimate = end - this.pausedAt - oneWay;
    const lower = this.switchoverUs !== undefined ? this.switchoverUs / 1000 : 0;
    return Math.max(lower, estimate);
  }

  /** The downtime on the one clock both hosts read, when the destination runs on this machine. */
  private sameClockDowntime(): number | undefined {
    const r = this.peerResumed;
    if (r === undefined || this.pausedMonoUs === 0) return undefined;
    if (!isThisBoot(r.bootId) || r.resumedUs < this.pausedMonoUs) return undefined;
    return (r.resumedUs - this.pausedMonoUs) / 1000;
  }

  private postcopyReport(): PostcopyStats {
    const end = this.postcopyDoneAt > 0 ? this.postcopyDoneAt : performance.now();
    return {
      prepaging: this.opts.prepaging ?? 'bubbling',
      precopyRounds: this.precopyRounds,
      ...postcopyFigures(this.pushTally, this.peerStats),
      resumes: this.resumes,
      pausedMs: round3(this.pausedMs),
      postcopyTimeMs: this.activatedAt > 0 ? round3(end - this.activatedAt) : 0,
    };
  }

  private finish(status: MigrationStatus, err: MigrationError | undefined): MigrationReport {
    this.finished = true;
    this.hintRun?.finish();
    this.streams?.close();
    this.sender?.dispose();
    this.status = status;
    if (status === 'completed') this.stage = 'done';
    const sender = this.sender;
    const report: MigrationReport = {
      id: this.opts.id,
      vm: this.vm.name,
      status,
      mode: this.ranMode,
      source: this.opts.sourceName,
      destination: this.opts.destinationName,
      totalTimeMs: round3(performance.now() - this.t0),
      downtimeMs: round3(this.downtime()),
      ...(this.pausedAt > 0 ? { downtimeExact: this.sameClockDowntime() !== undefined } : {}),
      ...(this.pausedAt > 0 && this.completeSentAt >= this.pausedAt ? { sourceDowntimeMs: round3(this.completeSentAt - this.pausedAt) } : {}),
      setupTimeMs: round3(this.setupTimeMs),
      rounds: this.perRound.length,
      ramBytes: this.vm.ram.bytes,
      bytesTransferred: this.bytesTransferred(),
      pagesTransferred: this.pagesTransferred(),
      zeroPages: (sender?.totalZeroPages ?? 0) + (this.streams?.totalZeroPages ?? 0) + this.pushTally.zeroPages,
      expectedDowntimeMs: round3(this.expectedMs),
      maxBandwidthBps: this.opts.maxBandwidthBps,
      stopCopyBandwidthBps: this.stopCopyBps,
      guestClock: this.guestClockUsed(),
      downtimeLimitMs: this.opts.downtimeLimitMs,
      switchoverReason: this.switchoverReason,
      stateBytes: this.stateBytes,
      perRound: this.perRound,
    };
    if (err !== undefined) {
      report.error = err.opts.peer !== undefined ? { stage: err.stage, message: err.message, peer: err.opts.peer } : { stage: err.stage, message: err.message };
    }
    if (this.ramDigestMatch !== undefined) report.ramDigestMatch = this.ramDigestMatch;
    const xbzrle = this.encodings?.xbzrleReport();
    if (xbzrle !== undefined) report.xbzrle = xbzrle;
    const compression = this.encodings?.compressionReport(
      (sender?.compressionIn ?? 0) + (this.streams?.compressionIn ?? 0),
      (sender?.compressionOut ?? 0) + (this.streams?.compressionOut ?? 0),
      (sender?.compressionBackoff.skipped ?? 0) + (this.streams?.compressionSkipped ?? 0),
    );
    if (compression !== undefined) report.compression = compression;
    if (this.pageRunsGranted && sender !== undefined) report.pageRuns = { frames: sender.runFrames, pages: sender.runPagesSent };
    if (this.autoConverge !== undefined) report.autoConverge = { maxThrottlePercent: this.maxThrottlePercent };
    report.skippedPages = { ...this.skips.counts };
    if (this.stunner !== undefined) report.stun = this.stunner.report();
    if (this.switched || this.ranMode !== 'precopy') report.postcopy = this.postcopyReport();
    this.emitProgress();
    if (status === 'completed') {
      this.log.info({ totalTimeMs: report.totalTimeMs, downtimeMs: report.downtimeMs, rounds: report.rounds, bytes: report.bytesTransferred, reason: report.switchoverReason }, 'migration completed');
    }
    if (this.socket !== undefined && status !== 'completed' && !this.socket.destroyed && err?.opts.abort === undefined) this.socket.destroy();
    return report;
  }
}

/** The post-copy part of a report: the source's counts and the destination's POSTCOPY_STATS. */
function postcopyFigures(t: PushTally, peer: PeerPostcopyStats | undefined): Omit<PostcopyStats, 'prepaging' | 'precopyRounds' | 'resumes' | 'pausedMs' | 'postcopyTimeMs'> {
  const faults = peer?.networkFaults ?? t.requests;
  const wws = peer?.writtenPages ?? 0;
  return {
    networkFaults: faults,
    faultLatencyMs: peer !== undefined ? { p50: peer.latencyP50Us / 1000, p99: peer.latencyP99Us / 1000, max: peer.latencyMaxUs / 1000 } : latencySummary([]),
    pagesRequested: t.pagesDemanded,
    pagesPushed: t.pagesPushed,
    writableWorkingSetPages: wws,
    faultsPerWws: wws > 0 ? Math.round((faults / wws) * 10000) / 10000 : 0,
  };
}

function round3(v: number): number {
  return Math.round(v * 1000) / 1000;
}

/** The fallback goes ahead only when sampled deltas average at most this (a quarter page). */
const FALLBACK_MAX_MEAN_DELTA = PAGE_SIZE / 4;

/** Rounds the XBZRLE fallback gets: one to cache the dirty pages, one to send their deltas. */
const XBZRLE_FALLBACK_ROUNDS = 2;

/** Fewest pages a round must have sent for its bytes per page to stand for the next round's. */
const ENCODED_SAMPLE_PAGES = 64;

/**
 * What a dirty page costs on the wire, from a round that sent with XBZRLE: its bytes over the
 * pages it sent or found unchanged (at most a whole page). Stop-and-copy sends deltas too, so
 * the switchover policy weighs the dirty set by this instead of by 4 KiB a page: a guest that
 * rewrites a byte of every page then fits the downtime limit once its pages are cached.
 */
function encodedPageBytes(t: RoundTally): number {
  const pages = t.pages + t.unchanged;
  if (pages < ENCODED_SAMPLE_PAGES) return PAGE_SIZE;
  return Math.min(PAGE_SIZE, t.bytes / pages);
}
