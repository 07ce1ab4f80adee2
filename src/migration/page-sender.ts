/**
 * The pre-copy hot path: walks a list of page numbers and streams them as PAGES frames. A ring
 * of PageBatchBuilders takes turns, so batches are filled while earlier ones are on their way
 * to the kernel; a builder is reused only after the socket's write callback released it, which
 * also bounds what waits in the socket's buffer (backpressure). No per-page buffers: raw pages
 * are copied straight from guest RAM into a builder.
 *
 * With page runs (protocol 1.5), consecutive raw pages go out as PAGE_RUN frames instead: a
 * 20-byte head, then the pages written from guest RAM itself, so the kernel copies them once and
 * nothing in this process does. The destination reads them straight into its RAM. A page the
 * guest writes while its run waits in the socket's queue goes out in whatever state the kernel
 * finds it: the dirty log has its mark, so a later round sends it again (as with any live page).
 */
import type { GuestRam } from '../machine/memory/ram.js';
import { ALL_BLOCKS, PAGE_SIZE } from '../machine/memory/layout.js';
import { TokenBucket } from './rate-limit.js';
import { CompressionBackoff, type PageStreamCompressor } from './encoding/compress.js';
import { XbzrleOutcome, type XbzrleEncoder } from './encoding/xbzrle.js';
import { FRAME_HEADER_BYTES, MAX_RUN_PAGES, PAGE_RUN_HEAD_BYTES, type PageBatchBuilder, encodePagesCompressedHead, writePageRunHead } from './wire/index.js';
import { giveBuilder, takeBuilder } from './builder-pool.js';

/** Where frames go; implemented by the outgoing migration over its socket. */
export interface FrameSink {
  /** Queues a whole frame; `done` runs once the socket no longer needs its bytes. */
  write(frame: Uint8Array, done: (err?: Error | null) => void): void;
  /** Awaits `p`, or rejects as soon as the migration has failed. */
  guard<T>(p: Promise<T>): Promise<T>;
}

export interface RoundTally {
  /** Page entries sent (raw + zero). */
  pages: number;
  zeroPages: number;
  /** Pages dirty again when reached, left for the next round (Xen's skip). */
  skipped: number;
  /** Frame bytes written. */
  bytes: number;
  /** Time spent waiting for the rate limiter. */
  limiterWaitMs: number;
  /** XBZRLE: pages equal to what the destination holds, not sent at all. */
  unchanged: number;
}

/** Optional encodings the destination granted (see src/migration/encoding/). */
export interface PageSenderEncodings {
  /** Delta-encode re-sent pages (from round 2 on, as QEMU does after the bulk stage). */
  readonly xbzrle?: XbzrleEncoder;
  /** Compress every batch as a PAGES_COMPRESSED frame when that is smaller. */
  readonly compressor?: PageStreamCompressor;
  /** The destination granted page runs: consecutive raw pages go as PAGE_RUN frames (not with compression or XBZRLE rounds). */
  readonly pageRuns?: boolean;
}

/** Batches that may be in flight at once: enough to keep the kernel's buffers full. */
const BUILDERS = 4;
/** PAGE_RUN frames that may be in flight at once (each up to 1 MiB of guest RAM the socket reads in place). */
const RUN_SLOTS = 8;
/** Shorter runs of raw pages go into a PAGES batch: a frame and a write each would cost more than the copy. */
const MIN_RUN_PAGES = 8;
/** Largest frame when unthrottled: a full batch (1024 raw pages, ~4 MiB) amortises per-write costs. */
const UNLIMITED_BATCH_BYTES = 4 * 1024 * 1024 + 64 * 1024;
/** Under a rate limit a batch holds ~20 ms worth of bytes, within these bounds. */
const MIN_LIMITED_BATCH_BYTES = 64 * 1024;
const LIMITED_BATCH_MS = 20;

const noop = (): void => {};

/**
 * Longest stretch the sender keeps the thread without returning to the event loop. Awaiting a
 * write that the kernel took at once resumes on the microtask queue, so a round of mostly zero
 * pages (5-byte entries, never paced) could run for most of a second without a turn of the
 * loop: the VM's console, its network relay and the API all live on this thread (measured: the
 * console of a running guest went silent for 770 ms in round 1).
 */
const YIELD_EVERY_MS = 5;

function nextTurn(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * A ring of write slots (the batch builders, the PAGE_RUN heads): each has at most one write in
 * flight, which the sender waits for before it reuses the slot. The write callbacks are made once,
 * not per write.
 */
class WriteSlots {
  /** Per slot: the write in flight (undefined: free). */
  readonly inFlight: (Promise<void> | undefined)[];
  private readonly release: (() => void)[];
  /** Per slot: the write callback that frees it, then calls `onFree`. */
  readonly done: ((err?: Error | null) => void)[];

  constructor(count: number, onFree: (i: number) => void = noop) {
    this.inFlight = new Array<Promise<void> | undefined>(count).fill(undefined);
    this.release = new Array<() => void>(count).fill(noop);
    this.done = Array.from({ length: count }, (_, i) => () => {
      this.release[i]!();
      onFree(i);
    });
  }

  /** Slot `i` is busy until its `done` callback runs. */
  arm(i: number): void {
    this.inFlight[i] = new Promise<void>((resolve) => {
      this.release[i] = () => {
        this.inFlight[i] = undefined;
        resolve();
      };
    });
  }
}

export class PageSender {
  private readonly builders: PageBatchBuilder[] = [];
  /** One slot per builder: its frame's write. */
  private readonly slots = new WriteSlots(BUILDERS, (i) => {
    if (this.disposed) this.giveBack(i);
  });
  private next = 0;
  /** The builder sendRound is filling (acquired, not yet flushed), or -1. */
  private filling = -1;
  /** dispose() was called: builders go back to the pool as their writes complete. */
  private disposed = false;
  private readonly returned: boolean[] = [];
  private lastTurn = performance.now();
  private readonly bucket = new TokenBucket();
  private batchBytes = UNLIMITED_BATCH_BYTES;
  /** Totals over the whole migration, for progress reports. */
  totalBytes = 0;
  totalPages = 0;
  totalZeroPages = 0;
  /** Compression: PAGES frame bytes before compression, and the bytes sent for them. */
  compressionIn = 0;
  compressionOut = 0;
  /** Skips compression after batches that did not shrink; `skipped` counts those batches. */
  readonly compressionBackoff = new CompressionBackoff();
  private xbzrle: XbzrleEncoder | undefined;
  private readonly compressor: PageStreamCompressor | undefined;
  private readonly pageRuns: boolean;
  /** Longest run under the current rate (a run is one paced write, like a batch). */
  private runPages = MAX_RUN_PAGES;
  /** Per run slot: its PAGE_RUN head, and the write of its pages. */
  private readonly runHeads: Uint8Array[] = [];
  private readonly runSlots = new WriteSlots(RUN_SLOTS);
  private nextRun = 0;
  /** PAGE_RUN frames sent, and the pages they carried (over the whole migration). */
  runFrames = 0;
  runPagesSent = 0;

  constructor(
    private readonly ram: GuestRam,
    private readonly sink: FrameSink,
    /** The destination granted the zero-page encoding. */
    private readonly zeroPages: boolean,
    encodings: PageSenderEncodings = {},
  ) {
    this.xbzrle = encodings.xbzrle;
    this.compressor = encodings.compressor;
    this.pageRuns = encodings.pageRuns === true;
    if (this.pageRuns) for (let i = 0; i < RUN_SLOTS; i++) this.runHeads.push(new Uint8Array(PAGE_RUN_HEAD_BYTES));
    for (let i = 0; i < BUILDERS; i++) {
      this.builders.push(takeBuilder());
      this.returned.push(false);
    }
  }

  /**
   * The migration is over: no more rounds. Each builder returns to the pool (builder-pool.ts) once
   * nothing reads it: at once if idle, else when its frame's write completes. A builder a stopped
   * round still holds is left to the garbage collector.
   */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (let i = 0; i < BUILDERS; i++) if (this.slots.inFlight[i] === undefined) this.giveBack(i);
  }

  /** After an await: a disposed sender's builders may be pooled already, so it must not touch one. */
  private checkLive(): void {
    if (this.disposed) throw new Error('the page sender was disposed (the migration is over)');
  }

  private giveBack(i: number): void {
    if (this.returned[i] || i === this.filling || this.slots.inFlight[i] !== undefined) return;
    this.returned[i] = true;
    giveBuilder(this.builders[i]!);
  }

  /** XBZRLE from the next round on (the fallback of a pre-copy that stopped converging). */
  useXbzrle(encoder: XbzrleEncoder): void {
    this.xbzrle = encoder;
  }

  /** Limits the stream to `bytesPerSecond` (Infinity: unlimited) from now on. */
  setRate(bytesPerSecond: number): void {
    if (bytesPerSecond === Infinity || !(bytesPerSecond > 0)) {
      this.batchBytes = UNLIMITED_BATCH_BYTES;
      this.bucket.setRate(Infinity, 0);
    } else {
      this.batchBytes = Math.min(UNLIMITED_BATCH_BYTES, Math.max(MIN_LIMITED_BATCH_BYTES, (bytesPerSecond * LIMITED_BATCH_MS) / 1000));
      this.bucket.setRate(bytesPerSecond, this.batchBytes);
    }
    this.runPages = Math.max(MIN_RUN_PAGES, Math.min(MAX_RUN_PAGES, Math.floor(this.batchBytes / PAGE_SIZE)));
  }

  /**
   * Sends the pages in `list` as round `round`. With `skipDirty` (live rounds), a page that is
   * dirty again when reached is left for the next round: it would be sent twice otherwise.
   * `paused` (stop-and-copy): the vCPU is stopped, so no page changes under the encoder, and no
   * later round sends these pages again (XBZRLE reads them in place and leaves its cache be).
   * `blocks` (paused only): the pages' dirty marks from the sync that made `list`, by page
   * number (DirtyLog.sync's masks): XBZRLE then compares only the blocks written.
   * Resolves once every frame has been handed to the kernel.
   */
  async sendRound(list: Uint32Array, round: number, skipDirty: boolean, paused = false, blocks?: Uint8Array): Promise<RoundTally> {
    const tally: RoundTally = { pages: 0, zeroPages: 0, skipped: 0, bytes: 0, limiterWaitMs: 0, unchanged: 0 };
    const xb = round > 1 ? this.xbzrle : undefined;
    xb?.startRound(round);
    const ram = this.ram;
    const dirty = ram.dirty;
    const u8 = ram.u8;
    const zeroOk = this.zeroPages;
    // Raw pages gather into a run [runFirst, runFirst + runLen) while they are consecutive.
    const runs = this.pageRuns && xb === undefined && this.compressor === undefined;
    const maxRun = this.runPages;
    let runFirst = 0;
    let runLen = 0;
    let b = await this.acquire(round);
    const n = list.length;
    for (let i = 0; i < n; i++) {
      // A batch of zero pages takes ~1k pages to fill: look at the clock every 64 pages too.
      if ((i & 63) === 63 && performance.now() - this.lastTurn >= YIELD_EVERY_MS) {
        await this.sink.guard(nextTurn());
        this.lastTurn = performance.now();
      }
      const p = list[i]!;
      // Xen's skip: clear-before-copy already took this page's mark; a new mark means it changed again.
      if (skipDirty && dirty.isDirty(p)) {
        tally.skipped++;
        continue;
      }
      // Stop-and-copy with XBZRLE: a cached page goes to the encoder unchecked for zeros (that
      // check reads the page too; a page that became zero still arrives exact, as a delta).
      if (zeroOk && !(paused && xb !== undefined && xb.cache.has(p)) && ram.isZeroPage(p)) {
        b.addZero(p);
        xb?.sentZero(p);
        tally.zeroPages++;
      } else if (xb !== undefined) {
        if (xb.encode(p, u8, p * PAGE_SIZE, b, paused, paused && blocks !== undefined ? blocks[p]! : ALL_BLOCKS) === XbzrleOutcome.Unchanged) {
          tally.unchanged++;
          continue;
        }
      } else if (runs) {
        if (runLen > 0 && p === runFirst + runLen && runLen < maxRun) {
          runLen++;
          continue;
        }
        if (runLen > 0) b = await this.endRun(runFirst, runLen, round, b, tally);
        runFirst = p;
        runLen = 1;
        continue;
      } else {
        b.addRaw(p, u8, p * PAGE_SIZE);
      }
      if (this.batchDone(b)) b = await this.nextBatch(b, round, tally);
    }
    if (runLen > 0) b = await this.endRun(runFirst, runLen, round, b, tally);
    if (b.count > 0) await this.flush(b, tally);
    else this.filling = -1; // the begun, empty builder is begun again next time
    await this.settle();
    this.totalZeroPages += tally.zeroPages;
    return tally;
  }

  /** Waits until every batch and run has left for the kernel. */
  async settle(): Promise<void> {
    for (const p of this.slots.inFlight) if (p !== undefined) await this.sink.guard(p);
    for (const p of this.runSlots.inFlight) if (p !== undefined) await this.sink.guard(p);
  }

  /**
   * A run of `count` raw pages from `first` ends: a PAGE_RUN when long enough, else its pages go
   * into the batch `b` (flushed when full). Returns the batch to go on filling.
   */
  private async endRun(first: number, count: number, round: number, b: PageBatchBuilder, tally: RoundTally): Promise<PageBatchBuilder> {
    if (count >= MIN_RUN_PAGES) {
      await this.writeRun(first, count, round, tally);
      return b;
    }
    const u8 = this.ram.u8;
    for (let p = first; p < first + count; p++) {
      b.addRaw(p, u8, p * PAGE_SIZE);
      if (this.batchDone(b)) b = await this.nextBatch(b, round, tally);
    }
    return b;
  }

  /** `b` holds a batch's worth (checked per page, so not an async call: no promise per page). */
  private batchDone(b: PageBatchBuilder): boolean {
    return b.full || b.frameBytes >= this.batchBytes;
  }

  /** Flushes the full batch `b` and returns the next builder. */
  private async nextBatch(b: PageBatchBuilder, round: number, tally: RoundTally): Promise<PageBatchBuilder> {
    await this.flush(b, tally);
    return this.acquire(round);
  }

  /** One PAGE_RUN: its head, then the pages written from guest RAM in place. */
  private async writeRun(first: number, count: number, round: number, tally: RoundTally): Promise<void> {
    const i = this.nextRun;
    const pending = this.runSlots.inFlight[i];
    if (pending !== undefined) await this.sink.guard(pending);
    const bytes = PAGE_RUN_HEAD_BYTES + count * PAGE_SIZE;
    await this.pace(bytes, tally);
    this.checkLive();
    const head = this.runHeads[i]!;
    writePageRunHead(head, 0, round, first, count);
    this.runSlots.arm(i);
    this.sink.write(head, noop);
    this.sink.write(this.ram.u8.subarray(first * PAGE_SIZE, (first + count) * PAGE_SIZE), this.runSlots.done[i]!);
    tally.bytes += bytes;
    tally.pages += count;
    this.totalBytes += bytes;
    this.totalPages += count;
    this.runFrames++;
    this.runPagesSent += count;
    this.nextRun = (i + 1) % RUN_SLOTS;
  }

  /** Waits for the rate limiter to allow `bytes` more (or, unthrottled, yields now and then). */
  private async pace(bytes: number, tally: RoundTally): Promise<void> {
    const wait = this.bucket.take(bytes);
    if (wait > 0) {
      const t = performance.now();
      await this.sink.guard(sleep(wait));
      tally.limiterWaitMs += performance.now() - t;
      this.lastTurn = performance.now();
    } else if (performance.now() - this.lastTurn >= YIELD_EVERY_MS) {
      await this.sink.guard(nextTurn());
      this.lastTurn = performance.now();
    }
  }

  private async acquire(round: number): Promise<PageBatchBuilder> {
    const i = this.next;
    const pending = this.slots.inFlight[i];
    if (pending !== undefined) await this.sink.guard(pending);
    this.checkLive();
    this.filling = i;
    return this.builders[i]!.begin(round);
  }

  private async flush(b: PageBatchBuilder, tally: RoundTally): Promise<void> {
    const i = this.next;
    const count = b.count;
    let frame = b.finish();
    let head: Uint8Array | undefined;
    if (this.compressor !== undefined && this.compressionBackoff.shouldTry()) {
      const raw = frame.subarray(FRAME_HEADER_BYTES);
      const z = await this.sink.guard(this.compressor.compress(raw));
      this.compressionBackoff.record(raw.length, z.length);
      this.compressionIn += frame.length;
      if (z.length + 2 * FRAME_HEADER_BYTES < frame.length) {
        head = encodePagesCompressedHead(this.compressor.code, raw.length, z.length, (frame[1]! & 1) !== 0);
        frame = z;
      }
      this.compressionOut += frame.length + (head?.length ?? 0);
    }
    const wireBytes = frame.length + (head?.length ?? 0);
    await this.pace(wireBytes, tally);
    this.checkLive();
    this.filling = -1;
    this.slots.arm(i);
    if (head !== undefined) this.sink.write(head, noop);
    this.sink.write(frame, this.slots.done[i]!);
    tally.bytes += wireBytes;
    tally.pages += count;
    this.totalBytes += wireBytes;
    this.totalPages += count;
    this.next = (i + 1) % BUILDERS;
  }
}
