/**
 * The source's half of post-copy (Hines & Gopalan, VEE 2009) once the VM has switched to the
 * destination: every page the destination lacks crosses the network once, either on demand
 * (a PAGE_REQUEST from a destination vCPU fault, served ahead of everything else) or by the
 * active push, in the order a PushOrder chooses (linear or bubbling around recent faults).
 * Pushed batches are small, and the push runs in a window: a PING follows each pushed batch and
 * at most PUSH_WINDOW batches may be unanswered, so neither side's socket buffers fill with
 * pushed pages and a demand batch queues behind at most about a megabyte of them.
 */
import type { GuestRam } from '../machine/memory/ram.js';
import { PAGE_SIZE } from '../machine/memory/layout.js';
import { MigrationError } from './errors.js';
import type { FrameSink } from './page-sender.js';
import type { PushOrder } from './prepaging.js';
import { TokenBucket } from './rate-limit.js';
import { MAX_BATCH_PAGES, MAX_REQUEST_PAGES, PageBatchBuilder } from './wire/index.js';

/** A pushed batch ends at this many frame bytes (256 KiB: a fraction of a millisecond on loopback) or a full batch of entries (zero pages are 5 bytes). */
const PUSH_BATCH_BYTES = 256 * 1024;
/** Pushed batches the destination may not yet have taken in (PING after each, PONG = taken). */
const PUSH_WINDOW = 4;
/** Pushed batches in flight at once (user space); demand batches do not count. */
const PUSH_IN_FLIGHT = PUSH_WINDOW;

/** The connection to the destination broke after the switch: the migration pauses, it does not fail. */
export class LinkDownError extends MigrationError {
  constructor(why: string, peer: string) {
    super('postcopy', `lost the connection to destination ${peer} during post-copy: ${why}`, { peer });
    this.name = 'LinkDownError';
  }
}

/** Totals over a whole post-copy, across reconnections. */
export interface PushTally {
  /** Page entries pushed (not asked for). */
  pagesPushed: number;
  /** Page entries sent in answer to PAGE_REQUESTs. */
  pagesDemanded: number;
  zeroPages: number;
  /** PAGE_REQUEST messages received. */
  requests: number;
  /** Requested pages already sent when the request arrived (it crossed them on the wire). */
  requestsAlreadySent: number;
  /** Frame bytes of PAGES written. */
  bytes: number;
}

export function newPushTally(): PushTally {
  return { pagesPushed: 0, pagesDemanded: 0, zeroPages: 0, requests: 0, requestsAlreadySent: 0, bytes: 0 };
}

interface Request {
  readonly id: number;
  readonly pages: Uint32Array;
}

/**
 * Sends the pages `needed` marks (1 = the destination lacks it, not yet sent) until none is
 * left, clearing each mark as its page is queued. One pusher per connection.
 */
export class PostcopyPusher {
  private readonly pushBuilders: PageBatchBuilder[] = [];
  private readonly pushInFlight: (Promise<void> | undefined)[] = [];
  private readonly demandBuilders: PageBatchBuilder[] = [];
  private readonly demandInFlight: (Promise<void> | undefined)[] = [];
  private nextPush = 0;
  private nextDemand = 0;
  private readonly queue: Request[] = [];
  private wake: (() => void) | undefined;
  private remaining = 0;
  private readonly bucket = new TokenBucket();
  /** Page entries sent on this connection in this round (ROUND_END's pagesSent). */
  entriesSent = 0;
  private unacked = 0;
  private ackWake: (() => void) | undefined;
  private readonly onAck = (): void => {
    this.unacked--;
    const w = this.ackWake;
    this.ackWake = undefined;
    w?.();
  };

  constructor(
    private readonly ram: GuestRam,
    private readonly sink: FrameSink,
    private readonly zeroPages: boolean,
    private readonly needed: Uint8Array,
    private readonly order: PushOrder,
    private readonly round: number,
    private readonly tally: PushTally,
    rateBps: number,
    /** Resolves once the destination has taken in everything sent so far (a PING's PONG). */
    private readonly ack: () => Promise<void>,
  ) {
    for (let i = 0; i < PUSH_IN_FLIGHT; i++) {
      this.pushBuilders.push(new PageBatchBuilder(MAX_BATCH_PAGES));
      this.pushInFlight.push(undefined);
      this.demandBuilders.push(new PageBatchBuilder(MAX_REQUEST_PAGES));
      this.demandInFlight.push(undefined);
    }
    for (let p = 0; p < needed.length; p++) this.remaining += needed[p]!;
    if (rateBps > 0 && rateBps !== Infinity) this.bucket.setRate(rateBps, PUSH_BATCH_BYTES * 2);
  }

  /** Pages still to send. */
  get left(): number {
    return this.remaining;
  }

  /** A PAGE_REQUEST: served before the next pushed batch; its first page becomes a pivot. */
  request(id: number, pages: Uint32Array): void {
    this.tally.requests++;
    const n = this.needed.length;
    // Out-of-range pages are dropped here: the wire decoder does not know the RAM size.
    let ok = 0;
    for (let i = 0; i < pages.length; i++) if (pages[i]! < n) ok++;
    if (ok === 0) return;
    const valid = ok === pages.length ? pages : pages.filter((p) => p < n);
    // A page already sent is in flight: the bubble around it exists; re-centring it would stall it.
    if (this.needed[valid[0]!] !== 0) this.order.onFault(valid[0]!);
    this.queue.push({ id, pages: valid });
    this.poke();
  }

  /** Runs until every needed page has been handed to the socket (or the link fails: rejects). */
  async run(): Promise<void> {
    while (this.remaining > 0 || this.queue.length > 0) {
      if (this.queue.length > 0) await this.serveDemand(this.queue.shift()!);
      else await this.pushBatch();
    }
    for (const p of this.pushInFlight) if (p !== undefined) await this.sink.guard(p);
    for (const p of this.demandInFlight) if (p !== undefined) await this.sink.guard(p);
  }

  private poke(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  /** Resolves when `p` settles or a request arrives, whichever is first. */
  private untilOrRequest(p: Promise<void>): Promise<void> {
    return this.sink.guard(new Promise<void>((resolve) => {
      this.wake = resolve;
      p.then(resolve, resolve);
    }));
  }

  private async serveDemand(r: Request): Promise<void> {
    const needed = this.needed;
    let any = false;
    for (let i = 0; i < r.pages.length; i++) {
      if (needed[r.pages[i]!] !== 0) {
        any = true;
        break;
      }
    }
    if (!any) {
      // Already pushed: the page is on its way and answers the fault when it lands.
      this.tally.requestsAlreadySent++;
      return;
    }
    const i = this.nextDemand;
    this.nextDemand = (i + 1) % this.demandBuilders.length;
    const pending = this.demandInFlight[i];
    if (pending !== undefined) await this.sink.guard(pending);
    const b = this.demandBuilders[i]!.begin(this.round, r.id);
    for (let k = 0; k < r.pages.length; k++) {
      const p = r.pages[k]!;
      if (needed[p] === 0) continue;
      this.add(b, p);
      this.tally.pagesDemanded++;
    }
    this.write(b, this.demandInFlight, i);
  }

  private async pushBatch(): Promise<void> {
    if (this.unacked >= PUSH_WINDOW) {
      await this.untilOrRequest(new Promise<void>((resolve) => {
        this.ackWake = resolve;
      }));
      if (this.unacked >= PUSH_WINDOW) return; // a request came first
    }
    const i = this.nextPush;
    const pending = this.pushInFlight[i];
    if (pending !== undefined) {
      await this.untilOrRequest(pending);
      if (this.pushInFlight[i] !== undefined) return; // a request came first
    }
    const b = this.pushBuilders[i]!.begin(this.round);
    while (!b.full && b.frameBytes < PUSH_BATCH_BYTES) {
      const p = this.order.next();
      if (p < 0) break;
      this.add(b, p);
      this.tally.pagesPushed++;
    }
    if (b.count === 0) {
      // The order ran dry while pages are marked: cannot happen with a correct order; stop rather than spin.
      if (this.remaining > 0) throw new Error(`push order ended with ${this.remaining} pages still needed`);
      return;
    }
    const wait = this.bucket.take(b.frameBytes);
    if (wait > 0) await this.untilOrRequest(new Promise<void>((r) => setTimeout(r, wait)));
    this.nextPush = (i + 1) % PUSH_IN_FLIGHT;
    this.write(b, this.pushInFlight, i);
    this.unacked++;
    this.ack().then(this.onAck, this.onAck);
  }

  private add(b: PageBatchBuilder, p: number): void {
    if (this.zeroPages && this.ram.isZeroPage(p)) {
      b.addZero(p);
      this.tally.zeroPages++;
    } else {
      b.addRaw(p, this.ram.u8, p * PAGE_SIZE);
    }
    this.needed[p] = 0;
    this.remaining--;
  }

  private write(b: PageBatchBuilder, slots: (Promise<void> | undefined)[], i: number): void {
    const frame = b.finish();
    this.entriesSent += b.count;
    this.tally.bytes += frame.length;
    let release!: () => void;
    slots[i] = new Promise<void>((resolve) => {
      release = resolve;
    });
    this.sink.write(frame, () => {
      slots[i] = undefined;
      release();
    });
  }
}

/** p50 / p99 / max of latency samples, ms, rounded to µs. */
export function latencySummary(samples: readonly number[]): { p50: number; p99: number; max: number } {
  if (samples.length === 0) return { p50: 0, p99: 0, max: 0 };
  const s = [...samples].sort((a, b) => a - b);
  const at = (q: number): number => s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]!;
  const r = (v: number): number => Math.round(v * 1000) / 1000;
  return { p50: r(at(0.5)), p99: r(at(0.99)), max: r(s[s.length - 1]!) };
}
