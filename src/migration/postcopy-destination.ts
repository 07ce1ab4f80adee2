/**
 * The destination's half of post-copy (Hines & Gopalan, VEE 2009) and of hybrid's post-copy
 * phase. At the switch it marks the pages it lacks absent (all of them, or hybrid's DISCARD
 * set), loads the state and runs the VM at once. A vCPU access to an absent page (a network
 * fault) becomes a PAGE_REQUEST; pages that arrive, pushed or demanded, are installed only
 * while still absent. Once every page is here it sends POSTCOPY_STATS and COMMITTED.
 *
 * The receiver outlives its connection: if the link breaks it is kept, paused, by the server
 * (the vCPU waits only on missing pages), and a source that reconnects with the session id
 * (RESUME) picks up where it stopped. Nothing is discarded after the switch.
 */
import type { GuestRam } from '../machine/memory/ram.js';
import { PAGE_SIZE } from '../machine/memory/layout.js';
import { Sig } from '../machine/memory/signals.js';
import type { Logger } from '../util/log.js';
import { bootId, monotonicUs } from '../util/host-clock.js';
import { errorText } from './errors.js';
import { PageDigests } from './postcopy-digest.js';
import { latencySummary } from './postcopy-source.js';
import type { DestinationHost, IncomingVm, PreparedVm, Reservation } from './vm-port.js';
import {
  Capability,
  FrameType,
  PROTOCOL_VERSION,
  PageBatchReader,
  PageEncoding,
  WireError,
  bytesEqual,
  decodeComplete,
  decodeRoundEnd,
  decodeState,
  encodeAccept,
  encodeActivated,
  encodeResumedAt,
  encodeCommitted,
  encodePageRequest,
  encodePostcopyStats,
  encodeResume,
  forEachRunPage,
  formatId,
  frameTypeName,
  pageRunsFromMap,
  type AbortReason,
  type Frame,
  type FramePieces,
  type PageRuns,
} from './wire/index.js';

/** One connection to the source, as the receiver uses it. */
export interface PostcopyLink {
  send(frame: Uint8Array): void;
  /** Drops the connection (the receiver stays, paused). */
  drop(): void;
  /** Before the VM ran here: end the whole session as a failed migration (ABORT, release). */
  fail(err: Error, abort: AbortReason): void;
}

export type PostcopyState = 'switching' | 'running' | 'paused' | 'complete';

export interface PostcopyReceiverOptions {
  readonly host: DestinationHost;
  readonly vm: IncomingVm;
  readonly reservation: Reservation;
  readonly sessionId: Uint8Array;
  readonly migrationId: string;
  /** Granted capabilities, echoed in a resume's ACCEPT. */
  readonly capabilities: number;
  /** The post-copy round: 1, or hybrid's last pre-copy round + 1. */
  readonly round: number;
  /** The source sends a per-page RAM digest in COMPLETE (--verify). */
  readonly verify: boolean;
  /** When the source paused the VM (this host's CLOCK_MONOTONIC, µs; PAUSED_AT), read at the resume. */
  readonly pausedSinceUs?: () => number | undefined;
  readonly log: Logger;
  /** The VM runs here now (the 'activated' of a post-copy is at its completion; this is the switch). */
  readonly onState: (r: PostcopyReceiver, state: PostcopyState) => void;
  /** Every page is here and COMMITTED is sent: the migration is complete. */
  readonly onComplete: (r: PostcopyReceiver, info: { downtimeMs: number }) => void;
}

/** How often the fault loop wakes up with nothing to do (to notice the end). */
const FAULT_WAIT_MS = 500;

export class PostcopyReceiver {
  state: PostcopyState = 'switching';
  private link: PostcopyLink | undefined;
  private readonly ram: GuestRam;
  private readonly pages: PageBatchReader;
  private readonly log: Logger;
  private prepared: PreparedVm | undefined;
  private readonly digests: PageDigests | undefined;
  private readonly requested: Uint8Array;
  private readonly faultAt = new Map<number, number>();
  private readonly latencies: number[] = [];
  private networkFaults = 0;
  private requestId = 0;
  /** Page entries received on the current link since its last ROUND_END. */
  private entriesOnLink = 0;
  private stateAt = 0;
  private switchoverUs = 0;
  private completeDigest: Uint8Array | undefined;
  private completeSeen = false;
  private writtenPages = 0;
  private stateBlob: Uint8Array | undefined;
  private loadMs = 0;
  /** vCPU fault reports seen (including pages that arrived before the request was needed). */
  private faultsSeen = 0;

  constructor(private readonly o: PostcopyReceiverOptions, link: PostcopyLink) {
    this.link = link;
    this.ram = o.reservation.ram;
    this.pages = new PageBatchReader({ ramPages: this.ram.pageCount });
    this.log = o.log.child({ postcopy: formatId(o.sessionId) });
    this.digests = o.verify ? new PageDigests(this.ram.pageCount) : undefined;
    this.requested = new Uint8Array(this.ram.pageCount);
  }

  get vm(): IncomingVm {
    return this.o.vm;
  }

  get sessionId(): Uint8Array {
    return this.o.sessionId;
  }

  get migrationId(): string {
    return this.o.migrationId;
  }

  /** STATE has arrived: the VM is (being) loaded here and the source will not resume it. */
  get switched(): boolean {
    return this.stateAt !== 0;
  }

  /** Pages still absent. */
  get missing(): number {
    return this.ram.presence.absent;
  }

  /** Hybrid: the pages dirtied since they were sent become absent (the VM is not loaded yet). */
  discard(runs: PageRuns): void {
    if (runs.ramPages !== this.ram.pageCount) throw new WireError('bad-value', `DISCARD covers ${runs.ramPages} pages, the session has ${this.ram.pageCount}`, { message: 'DISCARD', field: 'ramPages' });
    const presence = this.ram.presence;
    forEachRunPage(runs, (p) => presence.markAbsent(p));
  }

  /** Any frame of the session after the switch (PING/PONG/ABORT are the session's). */
  onFrame(f: Frame, link: PostcopyLink): void {
    if (link !== this.link) return;
    switch (f.type) {
      case FrameType.State:
        this.onStateFrame(f.payload);
        return;
      case FrameType.Pages:
        this.onPages({ type: f.type, flags: f.flags, length: f.payload.length, pieces: [f.payload] }, link);
        return;
      case FrameType.RoundEnd: {
        const m = decodeRoundEnd(f.payload);
        if (m.round !== this.o.round) throw new WireError('unexpected-type', `ROUND_END of round ${m.round} during post-copy round ${this.o.round}`, { message: 'ROUND_END' });
        if (m.pagesSent !== this.entriesOnLink) throw new WireError('unexpected-type', `round ${m.round} claims ${m.pagesSent} pages on this connection, ${this.entriesOnLink} arrived`, { message: 'ROUND_END' });
        this.entriesOnLink = 0;
        return;
      }
      case FrameType.Complete: {
        const m = decodeComplete(f.payload);
        if (m.round !== this.o.round) throw new WireError('unexpected-type', `COMPLETE names round ${m.round}, post-copy is round ${this.o.round}`, { message: 'COMPLETE' });
        if (this.stateAt === 0) throw new WireError('unexpected-type', 'COMPLETE before STATE', { message: 'COMPLETE' });
        this.completeSeen = true;
        this.completeDigest = m.ramDigest;
        this.maybeComplete();
        return;
      }
      default:
        throw new WireError('unexpected-type', `${frameTypeName(f.type)} is not part of post-copy`, { message: frameTypeName(f.type) });
    }
  }

  /** STATE has arrived (the VM may be loading or running here). */
  get stateReceived(): boolean {
    return this.stateAt !== 0;
  }

  /** The switch: load the state over the RAM (absent pages marked), run the VM, say ACTIVATED. */
  private onStateFrame(payload: Uint8Array): void {
    if (this.stateAt !== 0) throw new WireError('unexpected-type', 'a second STATE', { message: 'STATE' });
    const m = decodeState(payload);
    this.stateAt = performance.now();
    this.stateBlob = m.state.slice();
    const presence = this.ram.presence;
    if (this.o.round === 1) presence.markAllAbsent();
    if (this.digests !== undefined) {
      // Pages already here are digested as they are at the switch, before the guest runs.
      for (let p = 0; p < this.ram.pageCount; p++) if (presence.isPresent(p)) this.digests.take(this.ram.u8, p);
    }
    void this.activate();
  }

  private async activate(): Promise<void> {
    const o = this.o;
    let prepared: PreparedVm;
    try {
      prepared = await o.host.load(o.vm, o.reservation, this.stateBlob!, { postcopy: true });
      if ((o.capabilities & Capability.BalloonPages) !== 0) this.installBallooned();
      this.loadMs = performance.now() - this.stateAt;
      await prepared.setDirtyLogging?.(true);
    } catch (e) {
      this.log.warn({ err: errorText(e) }, 'post-copy: the machine state was refused; the VM never ran here');
      const link = this.link;
      this.state = 'complete';
      o.onState(this, 'complete');
      if (link !== undefined) link.fail(new Error(`the machine state was refused: ${errorText(e)}`), 'state-rejected');
      else o.host.release(o.vm, o.reservation);
      return;
    }
    this.stateBlob = undefined;
    this.prepared = prepared;
    prepared.resume(o.pausedSinceUs?.());
    const resumedUs = monotonicUs();
    this.switchoverUs = Math.round((performance.now() - this.stateAt) * 1000);
    this.state = this.link !== undefined ? 'running' : 'paused';
    if ((o.capabilities & Capability.ResumedAt) !== 0) this.link?.send(encodeResumedAt({ bootId: bootId(), resumedUs }));
    this.link?.send(encodeActivated({ switchoverUs: this.switchoverUs }));
    this.log.info({ switchoverMs: this.switchoverUs / 1000, loadMs: Math.round(this.loadMs * 1000) / 1000, missing: this.missing }, 'post-copy: the VM runs here; missing pages are fetched on demand');
    o.onState(this, this.state);
    void this.faultLoop();
    this.maybeComplete();
  }

  /**
   * Pages the loaded balloon state marks discarded hold zero (the device zeroed them): install
   * the absent ones as zero pages, before the VM runs. The source does not send them.
   */
  private installBallooned(): void {
    const ram = this.ram;
    const discarded = ram.discarded.bits;
    const presence = ram.presence;
    let n = 0;
    for (let p = 0; p < ram.pageCount; p++) {
      if (discarded[p] === 0 || presence.isPresent(p)) continue;
      ram.u8.fill(0, p * PAGE_SIZE, (p + 1) * PAGE_SIZE);
      this.digests?.take(ram.u8, p);
      presence.installInPlace(p);
      n++;
    }
    if (n > 0) this.log.info({ pages: n }, 'post-copy: ballooned pages installed as zero pages');
  }

  onPages(f: FramePieces, link: PostcopyLink): void {
    if (link !== this.link) return;
    if (this.stateAt === 0) throw new WireError('unexpected-type', 'PAGES of the post-copy round before STATE', { message: 'PAGES' });
    const b = this.pages.decodePieces(f.pieces, f.flags);
    if (b.round !== this.o.round) throw new WireError('unexpected-type', `PAGES of round ${b.round} during post-copy round ${this.o.round}`, { message: 'PAGES' });
    const ram = this.ram;
    const u8 = ram.u8;
    const written = ram.written.bits;
    const presence = ram.presence;
    const digests = this.digests;
    const n = b.count;
    for (let i = 0; i < n; i++) {
      const p = b.page(i);
      // The guest may have written a page that is present: never overwrite it.
      if (presence.isPresent(p)) continue;
      const at = p * PAGE_SIZE;
      const enc = b.encoding(i);
      if (enc === PageEncoding.Raw) {
        b.copyData(i, u8, at);
        written[p] = 1;
      } else if (enc === PageEncoding.Zero) u8.fill(0, at, at + PAGE_SIZE);
      else throw new WireError('unexpected-type', `page ${p} uses encoding ${enc}, which this session did not grant`, { message: 'PAGES' });
      digests?.take(u8, p);
      presence.installInPlace(p);
      if (this.requested[p] !== 0) {
        const t = this.faultAt.get(p);
        if (t !== undefined) {
          this.latencies.push(performance.now() - t);
          this.faultAt.delete(p);
        }
      }
    }
    this.entriesOnLink += n;
  }

  // ---- network faults ------------------------------------------------------------------------

  private async faultLoop(): Promise<void> {
    const sig = this.ram.signals;
    let seq = Atomics.load(sig, Sig.FaultSeq);
    // A fault published before this loop started (the vCPU ran right after resume).
    this.onFault(Atomics.load(sig, Sig.FaultPage));
    while (this.state === 'running' || this.state === 'paused') {
      const w = Atomics.waitAsync(sig, Sig.FaultSeq, seq, FAULT_WAIT_MS);
      if (w.async) await w.value;
      const now = Atomics.load(sig, Sig.FaultSeq);
      if (now === seq) continue;
      seq = now;
      this.onFault(Atomics.load(sig, Sig.FaultPage));
    }
  }

  private onFault(page: number): void {
    this.faultsSeen++;
    if (page < 0 || page >= this.ram.pageCount || this.ram.presence.isPresent(page)) return;
    if (this.requested[page] !== 0) return;
    this.requested[page] = 1;
    this.networkFaults++;
    this.faultAt.set(page, performance.now());
    this.request(page);
  }

  private request(page: number): void {
    if (this.link === undefined || this.state !== 'running') return; // asked again on resume
    this.requestId = this.requestId >= 0xffff_fffe ? 1 : this.requestId + 1;
    this.link.send(encodePageRequest({ requestId: this.requestId, pages: Uint32Array.of(page) }));
  }

  // ---- the end ------------------------------------------------------------------------------

  private maybeComplete(): void {
    if (this.state !== 'running' || !this.completeSeen || this.link === undefined) return;
    const link = this.link;
    if (this.missing > 0) {
      this.log.error({ missing: this.missing }, 'the source says every page was sent, but some are absent; dropping the connection (a resume sends them)');
      this.linkDown(link, 'COMPLETE with pages missing');
      link.drop();
      return;
    }
    this.state = 'complete';
    this.ram.presence.markAllPresent();
    const ours = this.digests?.digest();
    if (ours !== undefined && this.completeDigest !== undefined && !bytesEqual(ours, this.completeDigest)) {
      this.log.error('post-copy RAM digest differs from the source\'s (the VM already runs here; reported to the source)');
    }
    this.writtenPages = this.ram.dirty.count();
    this.prepared?.setDirtyLogging?.(false).catch(() => {});
    const lat = latencySummary(this.latencies);
    const us = (ms: number): number => Math.min(0xffff_ffff, Math.round(ms * 1000));
    link.send(encodePostcopyStats({ networkFaults: this.networkFaults, writtenPages: this.writtenPages, latencyP50Us: us(lat.p50), latencyP99Us: us(lat.p99), latencyMaxUs: us(lat.max) }));
    link.send(encodeCommitted({ ramDigest: ours }));
    link.drop();
    this.link = undefined;
    this.log.info({ networkFaults: this.networkFaults, faultsSeen: this.faultsSeen, writtenPages: this.writtenPages, latencyMs: lat }, 'post-copy complete: every page is here');
    this.o.onComplete(this, { downtimeMs: this.switchoverUs / 1000 });
  }

  // ---- the link: loss and resume ----------------------------------------------------------

  /** The connection `link` is gone. After the switch nothing is dropped: wait for a resume. */
  linkDown(link: PostcopyLink, why: string): void {
    if (link !== this.link || this.state === 'complete') return;
    this.link = undefined;
    if (this.state === 'running') this.state = 'paused';
    this.log.warn({ why, missing: this.missing }, 'post-copy paused: the connection to the source is gone; the vCPU waits on missing pages until the source resumes');
    this.o.onState(this, 'paused');
  }

  /** A source reconnected with this session's id: ACCEPT, RESUME with what is missing, re-ask outstanding faults. */
  attach(link: PostcopyLink): void {
    if (this.state === 'complete') throw new Error('the session is complete');
    const old = this.link;
    this.link = link;
    old?.drop();
    this.entriesOnLink = 0;
    this.completeSeen = false;
    link.send(encodeAccept({ version: PROTOCOL_VERSION, sessionId: this.o.sessionId, capabilities: this.o.capabilities }));
    link.send(encodeResume({ sessionId: this.o.sessionId, runs: pageRunsFromMap(this.ram.presence.bits, this.ram.pageCount, 'zero') }));
    if (this.state === 'paused') this.state = 'running';
    this.log.info({ missing: this.missing }, 'post-copy resumed by the source');
    this.o.onState(this, this.state);
    if (this.state === 'running') {
      const n = this.ram.pageCount;
      for (let p = 0; p < n; p++) if (this.requested[p] !== 0 && !this.ram.presence.isPresent(p)) this.request(p);
    }
  }
}
