/**
 * The destination side of pre-copy: a TCP listener whose sessions each receive one VM. A session
 * reserves RAM (stage 1), writes the pages of every round into it (2, 3), checks and loads the
 * state, answers COMMITTED (4) and resumes the VM (5). Before COMMITTED any failure drops the
 * partial copy (release / discard); a malformed or hostile stream only ever ends its own
 * session, with an ABORT when the socket still takes one.
 */
import { EventEmitter } from 'node:events';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { PAGE_SIZE } from '../machine/memory/layout.js';
import { silentLogger, type Logger } from '../util/log.js';
import { bootId, isThisBoot, monotonicUs } from '../util/host-clock.js';
import { errorText } from './errors.js';
import { VERIFY_KEY } from './postcopy-digest.js';
import { PostcopyReceiver, type PostcopyLink, type PostcopyState } from './postcopy-destination.js';
import { algorithmGranted, grantedEncodings } from './encoding/negotiate.js';
import { compressorForCode } from './encoding/compress.js';
import { xbzrleDecode } from './encoding/xbzrle.js';
import { adoptForUserReads, type UserReads } from './user-reads.js';
import { ReceivedConsole } from './console-history.js';
import { RefusedError, type DestinationHost, type IncomingVm, type PreparedVm, type Reservation } from './vm-port.js';
import {
  Capability,
  FrameReader,
  FrameType,
  PROTOCOL_VERSION,
  PageBatchReader,
  PageEncoding,
  WireError,
  bytesEqual,
  decodeAbort,
  decodeComplete,
  decodePagesCompressed,
  CompressionCode,
  decodeDiscard,
  decodeHello,
  decodePing,
  decodePausedAt,
  decodeRoundEnd,
  decodeState,
  encodeAbort,
  encodeAccept,
  encodeActivated,
  encodeResumedAt,
  encodeCommitted,
  encodePong,
  encodeRefuse,
  formatId,
  frameTypeName,
  decodeImage,
  decodeWarmTraffic,
  decodeConsole,
  decodeWritten,
  isZeroId,
  randomId,
  sha256,
  type AbortReason,
  type Frame,
  type FramePieces,
  type Hello,
  type MachineConfig,
  type MigrationMode,
  type RefuseReason,
  PAGE_RUN_FIXED_BYTES,
  PAGE_RUN_HEAD_BYTES,
  decodePageRunHead,
} from './wire/index.js';

/** Test hook: where a session drops its connection on purpose (as if the destination died there). */
export type FaultPoint = 'reservation' | 'round1' | 'round2' | 'stop-and-copy' | 'before-commit';

export interface FaultInjection {
  /**
   * reservation: after reserving, before ACCEPT; round1/round2: at the first frame of that round;
   * stop-and-copy: when STATE arrives; before-commit: state loaded and RAM verified, COMMITTED not sent.
   */
  readonly at: FaultPoint;
  /** Fire for the next session only (default: every session). */
  readonly once?: boolean;
}

export interface MigrationServerOptions {
  /** This host's name, for logs and messages. */
  readonly name: string;
  readonly log?: Logger;
  /** Incoming migrations at a time; more are refused as busy (default 4). */
  readonly maxSessions?: number;
  /** A session with no traffic for this long is dropped (default 60 s). */
  readonly idleTimeoutMs?: number;
  /** Test hook; see FaultInjection. */
  readonly faultInjection?: FaultInjection;
}

export interface ActivationInfo {
  /**
   * The destination's share of the downtime: COMPLETE received to the vCPU resumed here. The
   * source's report has the whole downtime (pause there to resume here).
   */
  downtimeMs: number;
  migrationId: string;
}

const DEFAULT_MAX_SESSIONS = 4;
const DEFAULT_IDLE_MS = 60_000;
/** How long a closing socket may take to flush its last frame before it is destroyed. */
const LINGER_MS = 2_000;
/** The HELLO config key that carries the source's migration id (not part of the machine config). */
export const MIGRATION_ID_KEY = 'migrationId';

/** Before ACCEPT the only way to say no is REFUSE. */
const REFUSE_FOR_ABORT: { readonly [r in AbortReason]: RefuseReason } = {
  cancelled: 'busy',
  timeout: 'bad-request',
  protocol: 'bad-request',
  io: 'internal',
  'digest-mismatch': 'internal',
  'state-rejected': 'internal',
  resources: 'busy',
  internal: 'internal',
};

type Phase = 'handshake' | 'transfer' | 'committing' | 'committed' | 'done';

/** The source broke the session's rules (order, counts): a protocol error like a WireError. */
function violation(text: string, message?: string): WireError {
  return new WireError('unexpected-type', text, message !== undefined ? { message } : {});
}

export class MigrationServer extends EventEmitter<{
  activated: [vm: IncomingVm, info: ActivationInfo];
  failed: [vm: IncomingVm | undefined, error: Error];
  /** Post-copy: the VM runs here while pages arrive ('postcopy-active') or the link is down ('postcopy-paused'). */
  postcopy: [vm: IncomingVm, info: { migrationId: string; status: 'postcopy-active' | 'postcopy-paused'; missingPages: number }];
}> {
  readonly name: string;
  /** Test hook, may be changed between sessions. */
  faultInjection: FaultInjection | undefined;
  private readonly log: Logger;
  private readonly maxSessions: number;
  readonly idleTimeoutMs: number;
  private server: Server | undefined;
  private readonly live = new Set<IncomingSession>();
  /** Post-copy sessions past the switch, by session id (hex): they outlive their connections. */
  private readonly postcopies = new Map<string, PostcopyReceiver>();
  private closing: Promise<void> | undefined;

  constructor(
    private readonly host: DestinationHost,
    opts: MigrationServerOptions,
  ) {
    super();
    this.name = opts.name;
    this.log = (opts.log ?? silentLogger).child({ destination: opts.name });
    this.maxSessions = Math.max(1, opts.maxSessions ?? DEFAULT_MAX_SESSIONS);
    this.idleTimeoutMs = opts.idleTimeoutMs ?? DEFAULT_IDLE_MS;
    this.faultInjection = opts.faultInjection;
  }

  /** Open connections (sessions in any stage). */
  get sessions(): number {
    return this.live.size;
  }

  listen(port: number, host: string): Promise<{ host: string; port: number }> {
    if (this.server !== undefined) return Promise.reject(new Error(`migration server ${this.name} is already listening`));
    // Paused: a session moves the socket's handle into one that reads where it says (user-reads.ts).
    const server = createServer({ noDelay: true, pauseOnConnect: true }, (socket) => this.accept(socket));
    this.server = server;
    server.on('error', (e) => this.log.error({ err: errorText(e) }, 'migration listener error'));
    return new Promise((resolve, reject) => {
      const onError = (e: Error): void => {
        this.server = undefined;
        reject(e);
      };
      server.once('error', onError);
      server.listen(port, host, () => {
        server.off('error', onError);
        const a = server.address() as AddressInfo;
        this.log.info({ host: a.address, port: a.port }, 'listening for incoming migrations');
        resolve({ host: a.address, port: a.port });
      });
    });
  }

  /** Stops listening and aborts the sessions that have not committed (their RAM is released). */
  close(): Promise<void> {
    this.closing ??= (async () => {
      const server = this.server;
      const stopped = server !== undefined ? new Promise<void>((r) => server.close(() => r())) : Promise.resolve();
      for (const s of this.live) s.shutdown(`destination ${this.name} is shutting down`);
      await Promise.all([...this.live].map((s) => s.closed));
      await stopped;
      this.log.info('migration listener closed');
    })();
    return this.closing;
  }

  private accept(socket: Socket): void {
    try {
      const session = new IncomingSession(this, this.host, socket, this.log);
      this.live.add(session);
      void session.closed.then(() => this.live.delete(session));
      if (this.closing !== undefined) session.shutdown(`destination ${this.name} is shutting down`);
    } catch (e) {
      this.log.error({ err: errorText(e) }, 'could not set up an incoming session');
      socket.destroy();
    }
  }

  // ---- for sessions -----------------------------------------------------------------------

  /** Sessions past their handshake, other than `self`. */
  busyWith(self: IncomingSession): boolean {
    let n = 0;
    for (const s of this.live) if (s !== self && s.reserved) n++;
    return n >= this.maxSessions || this.closing !== undefined;
  }

  /** Post-copy receivers not yet complete (for resume and for the host's view). */
  get postcopySessions(): readonly PostcopyReceiver[] {
    return [...this.postcopies.values()];
  }

  /** Multi-stream sessions waiting for (or holding) their data streams, by session id (hex). */
  private readonly multiStream = new Map<string, IncomingSession>();

  holdStreams(sessionId: Uint8Array, owner: IncomingSession): void {
    this.multiStream.set(formatId(sessionId), owner);
  }

  dropStreams(sessionId: Uint8Array, owner: IncomingSession): void {
    const k = formatId(sessionId);
    if (this.multiStream.get(k) === owner) this.multiStream.delete(k);
  }

  findStreams(sessionId: Uint8Array): IncomingSession | undefined {
    return this.multiStream.get(formatId(sessionId));
  }

  holdPostcopy(r: PostcopyReceiver): void {
    this.postcopies.set(formatId(r.sessionId), r);
  }

  findPostcopy(sessionId: Uint8Array): PostcopyReceiver | undefined {
    return this.postcopies.get(formatId(sessionId));
  }

  postcopyState(r: PostcopyReceiver, state: PostcopyState): void {
    if (state === 'complete') {
      this.postcopies.delete(formatId(r.sessionId));
      return;
    }
    if (state === 'switching') return;
    try {
      this.emit('postcopy', r.vm, { migrationId: r.migrationId, status: state === 'paused' ? 'postcopy-paused' : 'postcopy-active', missingPages: r.missing });
    } catch (e) {
      this.log.error({ err: errorText(e) }, "a 'postcopy' listener threw");
    }
  }

  takeFault(at: FaultPoint): boolean {
    const f = this.faultInjection;
    if (f === undefined || f.at !== at) return false;
    if (f.once === true) this.faultInjection = undefined;
    return true;
  }

  report(event: 'failed', vm: IncomingVm | undefined, error: Error): void;
  report(event: 'activated', vm: IncomingVm, info: ActivationInfo): void;
  report(event: 'failed' | 'activated', vm: IncomingVm | undefined, arg: Error | ActivationInfo): void {
    try {
      if (event === 'failed') this.emit('failed', vm, arg as Error);
      else this.emit('activated', vm!, arg as ActivationInfo);
    } catch (e) {
      this.log.error({ err: errorText(e) }, `an '${event}' listener threw`);
    }
  }
}

/** Bytes a read takes when it does not go straight into RAM. */
const READ_BYTES = 64 * 1024;
/** Staging reads are slices of a slab this large; a new slab replaces a full one (frames may still view the old). */
const SLAB_BYTES = 1024 * 1024;

/** One incoming connection: at most one VM. */
class IncomingSession implements UserReads {
  readonly closed: Promise<void>;
  private readonly socket: Socket;
  /** The socket reads through nextBuffer/onRead (else through 'data' events). */
  private readonly userReads: boolean;
  /** A PAGE_RUN's data still to come, read by the socket straight into RAM: bytes, and where the next one goes. */
  private directLeft = 0;
  private directAt = 0;
  /** The read in progress goes into RAM (nextBuffer handed out a RAM view). */
  private readingDirect = false;
  /** A run just ended: the next read takes only a PAGE_RUN's head, so the data behind it can go straight to RAM. */
  private headNext = false;
  private slab = new Uint8Array(0);
  private slabPos = 0;
  private readonly runHead = new Uint8Array(PAGE_RUN_FIXED_BYTES);
  private readonly reader = new FrameReader({ from: 'source' });
  /** Parallel streams (migration-protocol.md §5.5): how many, and which one this connection is. */
  private streamCount = 1;
  private streamIndex = 0;
  /** Stream 0 of a multi-stream session: its data streams, by index (undefined until joined). */
  private readonly streams: (IncomingSession | undefined)[] = [];
  /** A data stream (index > 0): the session (stream 0) it belongs to. */
  private owner: IncomingSession | undefined;
  private phase: Phase = 'handshake';
  private log: Logger;
  private vm: IncomingVm | undefined;
  private reservation: Reservation | undefined;
  private prepared: PreparedVm | undefined;
  private loading = false;
  private cleanedUp = false;
  private failure: Error | undefined;
  private pages: PageBatchReader | undefined;
  private ram: Uint8Array | undefined;
  /** GuestRam.written's marks: every page written here with non-zero data is marked. */
  private written: Uint8Array | undefined;
  private migrationId = '';
  private round = 1;
  private pagesInRound = 0;
  private lastRoundEnded = 0;
  private state: Uint8Array | undefined;
  private completeAt = 0;
  private pagesReceived = 0;
  /** An XBZRLE delta, gathered from the socket chunks it arrived in. */
  private readonly deltaScratch = new Uint8Array(PAGE_SIZE);
  private mode: MigrationMode = 'precopy';
  private verify = false;
  private imageSeen = false;
  private trafficSeen = false;
  private writtenSeen = false;
  /** console-precopy: the history received in CONSOLE frames, for load(). */
  private readonly console = new ReceivedConsole();
  private granted = 0;
  /** When the source paused the VM, on this host's CLOCK_MONOTONIC (µs), from PAUSED_AT. */
  private pausedSinceUs: number | undefined;
  /** When this connection was accepted (CLOCK_MONOTONIC, µs): no pause of this migration began earlier. */
  private readonly openedUs = monotonicUs();
  private sessionId: Uint8Array | undefined;
  /** Past the post-copy switch: frames go to the receiver, a lost link pauses instead of failing. */
  private postcopy: PostcopyReceiver | undefined;
  private readonly link: PostcopyLink = {
    send: (frame) => this.send(frame),
    drop: () => {
      this.phase = 'done';
      this.cleanedUp = true;
      this.socket.end();
      const t = setTimeout(() => this.socket.destroy(), LINGER_MS);
      t.unref();
    },
    fail: (err, abort) => {
      this.postcopy = undefined;
      this.fail(err, abort);
    },
  };

  constructor(
    private readonly server: MigrationServer,
    private readonly host: DestinationHost,
    accepted: Socket,
    log: Logger,
  ) {
    const { socket, userReads } = adoptForUserReads(accepted, this);
    this.socket = socket;
    this.userReads = userReads;
    this.log = log.child({ peer: `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}` });
    this.closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    if (!userReads) socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('end', () => this.onEnd());
    socket.on('error', (e) => this.onGone(`connection error: ${errorText(e)}`));
    socket.on('close', () => this.onGone('connection closed'));
    socket.setTimeout(server.idleTimeoutMs, () => this.onIdle());
  }

  /** The session is over (refused, failed, or handed over): ignore further input. */
  private get ended(): boolean {
    return this.phase === 'done';
  }

  /** Holds a reservation (counts against maxSessions). */
  get reserved(): boolean {
    return this.reservation !== undefined && this.phase !== 'done';
  }

  shutdown(why: string): void {
    if (this.postcopy !== undefined) return this.onGone(why);
    if (this.phase === 'committed' || this.phase === 'done') return;
    this.fail(new Error(why), 'cancelled');
  }

  // ---- input ------------------------------------------------------------------------------

  /** UserReads: where the socket's next read goes: the rest of a PAGE_RUN's data into RAM, else a staging slice. */
  nextBuffer(): Uint8Array {
    if (this.directLeft > 0) {
      this.readingDirect = true;
      return this.ram!.subarray(this.directAt, this.directAt + this.directLeft);
    }
    this.readingDirect = false;
    const want = this.headNext ? PAGE_RUN_HEAD_BYTES : READ_BYTES;
    if (this.slab.length - this.slabPos < want) {
      this.slab = new Uint8Array(SLAB_BYTES);
      this.slabPos = 0;
    }
    return this.slab.subarray(this.slabPos, this.slabPos + want);
  }

  /** UserReads: `n` bytes arrived in the buffer nextBuffer() gave. */
  onRead(n: number, buf: Uint8Array): void {
    if (this.readingDirect) {
      this.directAt += n;
      this.directLeft -= n;
      this.headNext = this.directLeft === 0;
      return;
    }
    this.headNext = false;
    this.slabPos += n;
    this.onData(buf.subarray(0, n));
  }

  private onData(chunk: Uint8Array): void {
    if (this.phase === 'done') return;
    try {
      this.reader.push(chunk);
      for (;;) {
        // Past the handshake, frames stay in the chunks they arrived in: PAGES go straight to RAM.
        const f = this.phase === 'handshake' ? this.reader.next() : this.reader.nextPieces();
        if (f === undefined) {
          // A PAGE_RUN whose head is here: the rest of its data is read straight into RAM.
          if (this.userReads && this.phase !== 'handshake') {
            const p = this.reader.partial();
            if (p !== undefined && p.type === FrameType.PageRun && p.buffered >= PAGE_RUN_FIXED_BYTES) this.onPageRun(this.reader.detachPartial(), p.length);
          }
          return;
        }
        if ('pieces' in f && f.type === FrameType.PageRun) this.onPageRun(f, f.length);
        else if ('pieces' in f && f.type === FrameType.Pages && this.postcopy !== undefined) this.postcopy.onPages(f, this.link);
        else if ('pieces' in f && f.type === FrameType.Pages) this.onPages(f);
        else this.onFrame('pieces' in f ? { type: f.type, flags: f.flags, payload: joinPieces(f) } : f);
        if (this.ended) return;
      }
    } catch (e) {
      this.onBadInput(e);
    }
  }

  private onEnd(): void {
    if (this.postcopy !== undefined) return this.onGone('the source closed the connection');
    if (this.phase === 'done' || this.phase === 'committed') return;
    try {
      if (this.directLeft > 0) throw new WireError('truncated', `stream ended inside a PAGE_RUN frame: ${this.directLeft} bytes of page data missing`, { message: 'PAGE_RUN' });
      this.reader.end();
      this.onGone('the source closed the connection');
    } catch (e) {
      this.onBadInput(e);
    }
  }

  private onGone(why: string): void {
    // Hybrid: DISCARD came but no STATE: the source still has the VM; fail as before the switch.
    if (this.postcopy !== undefined && !this.postcopy.switched) this.dropPostcopy();
    if (this.postcopy !== undefined) {
      this.phase = 'done';
      this.cleanedUp = true;
      this.socket.destroy();
      this.postcopy.linkDown(this.link, why);
      return;
    }
    if (this.phase === 'done' || this.phase === 'committed') return;
    this.fail(new Error(`lost the connection to the source: ${why}`), undefined);
  }

  private onIdle(): void {
    if (this.postcopy !== undefined) return this.onGone(`no data from the source for ${this.server.idleTimeoutMs} ms`);
    if (this.phase === 'committed' || this.phase === 'done') {
      this.socket.destroy();
      return;
    }
    if (this.phase === 'committing') return; // the host is loading the state; the source waits quietly
    this.fail(new Error(`no data from the source for ${this.server.idleTimeoutMs} ms`), 'timeout');
  }

  private onBadInput(e: unknown): void {
    if (this.postcopy !== undefined) {
      // After the switch the VM runs here: bad bytes end this connection, never the VM.
      this.log.warn({ err: errorText(e) }, 'bad input from the source during post-copy; dropping the connection');
      if (e instanceof WireError && this.socket.writable) this.socket.write(encodeAbort({ reason: 'protocol', text: e.message }));
      return this.onGone(`protocol error: ${errorText(e)}`);
    }
    if (this.phase === 'done') return;
    if (this.phase === 'committed') {
      this.log.warn({ err: errorText(e) }, 'bad bytes from the source after commitment; closing');
      this.socket.destroy();
      return;
    }
    if (this.phase === 'handshake' && e instanceof WireError) {
      this.refuse(e.code === 'bad-version' ? 'version' : 'bad-request', e.message, e);
      return;
    }
    if (e instanceof WireError) {
      this.log.warn({ err: e.message }, 'protocol error from the source; aborting the session');
      this.fail(e, 'protocol');
    } else {
      this.log.error({ err: errorText(e) }, 'internal error in an incoming session');
      this.fail(e instanceof Error ? e : new Error(String(e)), 'internal');
    }
  }

  private onFrame(f: Frame): void {
    if (this.phase === 'handshake') {
      this.onHello(decodeHello(f.payload)); // the reader lets only HELLO through here
      return;
    }
    switch (f.type) {
      case FrameType.Ping: {
        const pong = encodePong({ nonce: decodePing(f.payload).nonce });
        // Until the host can load a state at once (its standby, as rebuilt after any warm-up, is
        // ready), PONGs wait: the source pauses the VM only after the PONG behind its last live round, so the
        // downtime does not include a thread start (measured: 53 ms on a first visit without a
        // spare thread, the state arriving before the thread could take it).
        const ready = this.reservation?.ready;
        if (ready === undefined) {
          this.send(pong);
          return;
        }
        // Once settled, a turn of the microtask queue; PONGs keep their order either way.
        const send = (): void => {
          if (!this.ended) this.send(pong);
        };
        void ready.then(send, send);
        return;
      }
      case FrameType.Pong:
        decodePing(f.payload);
        return;
      case FrameType.PausedAt:
        this.onPausedAt(f);
        return;
      case FrameType.Abort: {
        const m = decodeAbort(f.payload);
        if (this.phase === 'committed') {
          this.log.info({ reason: m.reason }, 'ABORT after COMMITTED ignored: the VM is ours');
          return;
        }
        if (this.postcopy !== undefined) {
          if (this.postcopy.state !== 'switching') return this.onGone(`the source aborted (${m.reason}): ${m.text}`);
          this.dropPostcopy(); // the VM has not run here: the session fails as before the switch
        }
        this.fail(new Error(`the source aborted the migration (${m.reason}): ${m.text}`), undefined);
        return;
      }
      default:
        break;
    }
    if (this.postcopy !== undefined) {
      this.postcopy.onFrame(f, this.link);
      return;
    }
    if (this.phase === 'committed') {
      this.log.warn({ frame: frameTypeName(f.type) }, 'frame after COMMITTED ignored');
      return;
    }
    if (this.phase !== 'transfer') throw violation(`${frameTypeName(f.type)} after COMPLETE`, frameTypeName(f.type));
    switch (f.type) {
      case FrameType.Pages:
        this.onPages({ type: f.type, flags: f.flags, length: f.payload.length, pieces: [f.payload] });
        return;
      case FrameType.PagesCompressed:
        this.onPages(this.inflate(f));
        return;
      case FrameType.RoundEnd:
        this.onRoundEnd(f);
        return;
      case FrameType.State:
        if (this.mode === 'postcopy') return this.switchToPostcopy(f);
        this.onState(f);
        return;
      case FrameType.Discard:
        if (this.mode !== 'hybrid') throw violation('DISCARD outside a hybrid migration', 'DISCARD');
        return this.switchToPostcopy(f);
      case FrameType.Complete:
        this.onComplete(f);
        return;
      case FrameType.Image:
        this.onImage(f);
        return;
      case FrameType.WarmTraffic:
        this.onWarmTraffic(f);
        return;
      case FrameType.Console:
        this.onConsole(f);
        return;
      case FrameType.Written:
        this.onWritten(f);
        return;
      default:
        throw violation(`${frameTypeName(f.type)} is not part of a pre-copy migration`, frameTypeName(f.type));
    }
  }

  // ---- stage 1: reservation ----------------------------------------------------------------

  private onHello(h: Hello): void {
    const config = stripMigrationId(h.config);
    const idValue = h.config[MIGRATION_ID_KEY];
    const sessionId = randomId();
    this.migrationId = typeof idValue === 'string' && idValue.length > 0 ? idValue : formatId(sessionId);
    const vm: IncomingVm = { uuid: h.vmId, name: h.vmName, ramBytes: h.ramBytes, config };
    this.vm = vm;
    this.log = this.log.child({ migration: this.migrationId, vm: h.vmName });
    this.mode = h.mode;
    this.verify = h.config[VERIFY_KEY] === true;
    if (h.streamIndex > 0) return this.joinStream(h);
    if (h.streamCount > 1 && h.mode !== 'precopy') return this.refuse('capability', `destination ${this.server.name} takes parallel streams for pre-copy only; ${h.streamCount} were offered for ${h.mode}`);
    if (h.streamCount > 1 && (h.capabilities & Capability.MultiStream) === 0) return this.refuse('capability', `${h.streamCount} streams offered without the multi-stream capability`);
    if (!isZeroId(h.sessionId)) return this.resumePostcopy(h);
    if (this.server.busyWith(this)) return this.refuse('busy', `destination ${this.server.name} is receiving as many migrations as it takes`);
    let r: Reservation;
    try {
      r = this.host.reserve(vm);
    } catch (e) {
      if (e instanceof RefusedError) return this.refuse(e.reason, e.message, e);
      this.log.error({ err: errorText(e) }, 'reservation failed');
      return this.refuse('internal', `destination ${this.server.name} could not reserve the VM: ${errorText(e)}`);
    }
    this.reservation = r;
    if (r.ram.bytes !== h.ramBytes) {
      this.fail(new Error(`the host reserved ${r.ram.bytes} bytes of RAM for a ${h.ramBytes}-byte VM`), 'internal');
      return;
    }
    this.ram = r.ram.u8;
    this.written = r.ram.written.bits;
    this.pages = new PageBatchReader({ ramPages: r.ram.pageCount });
    if (this.server.takeFault('reservation')) return this.fault('reservation');
    this.phase = 'transfer';
    this.sessionId = sessionId;
    this.granted = (h.capabilities & (h.mode === 'precopy' ? Capability.ZeroPages : Capability.ZeroPages | Capability.PostcopyRecovery | Capability.BalloonPages)) | grantedEncodings(h.capabilities) | (h.capabilities & (Capability.ResumedAt | Capability.PausedAt));
    // Runs of raw pages: pre-copy over one stream (a run's pages would belong to several streams).
    if (h.mode === 'precopy' && h.streamCount === 1) this.granted |= h.capabilities & Capability.PageRuns;
    // The image for a warm-up, if this host does them and pre-copy comes first.
    if (h.mode !== 'postcopy' && this.host.warmUp !== undefined) {
      this.granted |= h.capabilities & Capability.WarmImage;
      // ...and client traffic to replay to it, if it takes that too.
      if (this.host.warmTraffic !== undefined && (this.granted & Capability.WarmImage) !== 0) this.granted |= h.capabilities & Capability.WarmTraffic;
    }
    // Console history sent live, if this host joins it to the state's: pre-copy only (post-copy loads elsewhere).
    if (h.mode === 'precopy' && this.host.joinsConsole === true) this.granted |= h.capabilities & Capability.ConsolePrecopy;
    // The written pages, if this host backs fresh RAM with them; never post-copy (the VM runs at once).
    if (h.mode !== 'postcopy' && this.host.prefault !== undefined) this.granted |= h.capabilities & Capability.WrittenPages;
    if (h.streamCount > 1) {
      this.granted |= Capability.MultiStream;
      this.streamCount = h.streamCount;
      this.server.holdStreams(sessionId, this);
    }
    const accept = (): void => {
      if (this.phase !== 'transfer') return; // failed or closed while waiting
      this.send(encodeAccept({ version: PROTOCOL_VERSION, sessionId, capabilities: this.granted }));
      this.log.info({ ramBytes: h.ramBytes, session: formatId(sessionId) }, 'incoming migration accepted, RAM reserved');
    };
    // Post-copy switches right after ACCEPT: the host's standby vCPU starts first, so its start-up is not downtime.
    if (h.mode === 'postcopy' && r.ready !== undefined) void r.ready.then(accept, accept);
    else accept();
  }

  /** IMAGE: once, before any page, and only when granted; the host warms its standby thread with it. */
  private onImage(f: Frame): void {
    if ((this.granted & Capability.WarmImage) === 0 || this.owner !== undefined) throw violation('IMAGE without the warm-image capability, or on a data stream', 'IMAGE');
    if (this.imageSeen || this.pagesReceived > 0 || this.round > 1) throw violation(this.imageSeen ? 'a second IMAGE' : 'IMAGE after pages', 'IMAGE');
    this.imageSeen = true;
    const m = decodeImage(f.payload);
    const digest = 'sha256:' + Buffer.from(m.digest).toString('hex');
    if (digest !== this.vm!.config.imageDigest) throw violation(`IMAGE is ${digest}, but the VM's config names ${this.vm!.config.imageDigest}`, 'IMAGE');
    this.host.warmUp?.(this.vm!, this.reservation!, new Uint8Array(m.image)); // a copy: the host keeps it with the VM
  }

  /** WARM_TRAFFIC: once, right after IMAGE and before any page, and only when granted. */
  private onWarmTraffic(f: Frame): void {
    if ((this.granted & Capability.WarmTraffic) === 0 || this.owner !== undefined) throw violation('WARM_TRAFFIC without the warm-traffic capability, or on a data stream', 'WARM_TRAFFIC');
    if (!this.imageSeen || this.trafficSeen || this.pagesReceived > 0 || this.round > 1) throw violation(this.trafficSeen ? 'a second WARM_TRAFFIC' : !this.imageSeen ? 'WARM_TRAFFIC before IMAGE' : 'WARM_TRAFFIC after pages', 'WARM_TRAFFIC');
    this.trafficSeen = true;
    const m = decodeWarmTraffic(f.payload);
    this.host.warmTraffic?.(this.vm!, this.reservation!, m.samples);
  }

  /** CONSOLE: any number, before STATE, only when granted; each continues the history so far. */
  private onConsole(f: Frame): void {
    if ((this.granted & Capability.ConsolePrecopy) === 0 || this.owner !== undefined) throw violation('CONSOLE without the console-precopy capability, or on a data stream', 'CONSOLE');
    if (this.state !== undefined) throw violation('CONSOLE after STATE', 'CONSOLE');
    const m = decodeConsole(f.payload);
    const why = this.console.add(m.end, m.bytes);
    if (why !== undefined) throw violation(why, 'CONSOLE');
  }

  /** WRITTEN: once, before any page, only when granted; the host may back those pages now. */
  private onWritten(f: Frame): void {
    if ((this.granted & Capability.WrittenPages) === 0 || this.owner !== undefined) throw violation('WRITTEN without the written-pages capability, or on a data stream', 'WRITTEN');
    if (this.writtenSeen || this.pagesReceived > 0 || this.round > 1) throw violation(this.writtenSeen ? 'a second WRITTEN' : 'WRITTEN after pages', 'WRITTEN');
    this.writtenSeen = true;
    const m = decodeWritten(f.payload);
    const ramPages = this.reservation!.ram.pageCount;
    if (m.runs.ramPages !== ramPages) throw violation(`WRITTEN covers ${m.runs.ramPages} pages, but the VM has ${ramPages}`, 'WRITTEN');
    this.host.prefault?.(this.vm!, this.reservation!, m.runs);
  }

  // ---- parallel streams (migration-protocol.md §5.5) --------------------------------------------

  /** HELLO with streamIndex > 0: this connection becomes data stream `streamIndex` of a session. */
  private joinStream(h: Hello): void {
    const owner = this.server.findStreams(h.sessionId);
    if (owner === undefined || owner.phase !== 'transfer') return this.refuse('unknown-session', `session ${formatId(h.sessionId)} takes no more streams at ${this.server.name}`);
    const why = owner.acceptStream(this, h);
    if (why !== undefined) return this.refuse('bad-request', why);
    this.owner = owner;
    this.streamIndex = h.streamIndex;
    this.streamCount = h.streamCount;
    this.ram = owner.ram;
    this.written = owner.written;
    this.pages = owner.pages;
    this.granted = owner.granted;
    this.vm = owner.vm;
    this.cleanedUp = true; // the owner holds the reservation and reports the outcome
    this.phase = 'transfer';
    this.log = owner.log.child({ stream: h.streamIndex });
    this.send(encodeAccept({ version: PROTOCOL_VERSION, sessionId: h.sessionId, capabilities: owner.granted }));
  }

  /** Stream 0: may `s` join as data stream h.streamIndex? Undefined if yes (and it is recorded). */
  private acceptStream(s: IncomingSession, h: Hello): string | undefined {
    if (h.streamCount !== this.streamCount) return `stream ${h.streamIndex} says ${h.streamCount} streams, the session has ${this.streamCount}`;
    if (h.streamIndex >= this.streamCount) return `stream index ${h.streamIndex} is not below ${this.streamCount}`;
    if (!bytesEqual(h.vmId, this.vm!.uuid)) return `stream ${h.streamIndex} names another VM`;
    if (this.streams[h.streamIndex] !== undefined) return `stream ${h.streamIndex} has joined already`;
    this.streams[h.streamIndex] = s;
    return undefined;
  }

  /** Stream 0, before STATE and COMPLETE: every data stream joined and ended the same rounds. */
  private checkStreams(what: string): void {
    for (let i = 1; i < this.streamCount; i++) {
      const s = this.streams[i];
      if (s === undefined) throw violation(`${what} before stream ${i} joined`, what);
      if (s.lastRoundEnded !== this.lastRoundEnded || s.pagesInRound !== 0) {
        throw violation(`${what} while stream ${i} is in round ${s.round} (stream 0 ended round ${this.lastRoundEnded})`, what);
      }
    }
  }

  /** A data stream ended: the whole session fails unless stream 0 is already past its pages. */
  private streamGone(err: Error, abort: AbortReason | undefined): void {
    const owner = this.owner!;
    this.phase = 'done';
    this.socket.destroy();
    if (owner.phase === 'transfer') owner.fail(new Error(`stream ${this.streamIndex}: ${err.message}`), abort);
  }

  // ---- post-copy (docs/postcopy.md) -----------------------------------------------------------

  /** Hybrid's DISCARD or post-copy's STATE: from here on the receiver owns the VM's arrival. */
  private switchToPostcopy(f: Frame): void {
    if (this.pagesInRound !== 0) throw violation(`${frameTypeName(f.type)} inside a round (pages after the last ROUND_END)`, frameTypeName(f.type));
    if (this.mode === 'hybrid' && this.lastRoundEnded === 0) throw violation('DISCARD before any pre-copy round ended', 'DISCARD');
    const r = new PostcopyReceiver({
      host: this.host,
      vm: this.vm!,
      reservation: this.reservation!,
      sessionId: this.sessionId!,
      migrationId: this.migrationId,
      capabilities: this.granted,
      round: this.lastRoundEnded + 1,
      verify: this.verify,
      pausedSinceUs: () => this.pausedSinceUs,
      log: this.log,
      onState: (rec, state) => this.server.postcopyState(rec, state),
      onComplete: (rec, info) => {
        this.server.postcopyState(rec, 'complete');
        this.server.report('activated', rec.vm, { downtimeMs: info.downtimeMs, migrationId: rec.migrationId });
      },
    }, this.link);
    if (f.type === FrameType.Discard) r.discard(decodeDiscard(f.payload).runs);
    this.postcopy = r;
    this.server.holdPostcopy(r);
    if (f.type === FrameType.State) r.onFrame(f, this.link);
  }

  private dropPostcopy(): void {
    if (this.postcopy !== undefined) this.server.postcopyState(this.postcopy, 'complete');
    this.postcopy = undefined;
  }

  /** HELLO with a session id: a source resuming a post-copy whose connection broke. */
  private resumePostcopy(h: Hello): void {
    const r = this.server.findPostcopy(h.sessionId);
    if (r === undefined || r.state === 'complete' || formatId(r.vm.uuid) !== formatId(h.vmId)) {
      return this.refuse('unknown-session', `session ${formatId(h.sessionId)} is not held by ${this.server.name}`);
    }
    this.vm = r.vm;
    this.phase = 'transfer';
    this.postcopy = r;
    r.attach(this.link);
  }

  private refuse(reason: RefuseReason, text: string, cause?: Error): void {
    this.log.info({ reason, text }, 'incoming migration refused');
    this.phase = 'done';
    this.failure = cause ?? new RefusedError(reason === 'version' || reason === 'unknown-session' || reason === 'capability' ? 'bad-request' : reason, text);
    this.closeWith(encodeRefuse({ version: PROTOCOL_VERSION, reason, text }));
    this.server.report('failed', this.vm, this.failure);
    this.cleanedUp = true;
  }

  // ---- stages 2 and 3: pages, rounds, state ------------------------------------------------

  private checkRoundFault(): void {
    if (this.owner !== undefined) return; // fault points are stream 0's
    if ((this.round === 1 && this.server.takeFault('round1')) || (this.round === 2 && this.server.takeFault('round2'))) {
      this.fault(this.round === 1 ? 'round1' : 'round2');
    }
  }

  private onPages(f: FramePieces): void {
    if (this.phase !== 'transfer') throw violation(`PAGES in phase ${this.phase}`, 'PAGES');
    if (this.state !== undefined || this.owner?.state !== undefined) throw violation('PAGES after STATE', 'PAGES');
    const b = this.pages!.decodePieces(f.pieces, f.flags);
    if (b.demand) throw violation('a demand batch in a pre-copy migration', 'PAGES');
    if (b.round !== this.round) throw violation(`PAGES of round ${b.round} during round ${this.round}`, 'PAGES');
    if (this.pagesInRound === 0) {
      this.checkRoundFault();
      if (this.ended) return;
    }
    const ram = this.ram!;
    const written = this.written!;
    const n = b.count;
    for (let i = 0; i < n; i++) {
      const at = b.page(i) * PAGE_SIZE;
      // Page p travels on stream p mod n, so its versions arrive in order.
      if (this.streamCount > 1 && b.page(i) % this.streamCount !== this.streamIndex) throw violation(`page ${b.page(i)} on stream ${this.streamIndex} of ${this.streamCount}`, 'PAGES');
      switch (b.encoding(i)) {
        case PageEncoding.Raw:
          b.copyData(i, ram, at);
          written[b.page(i)] = 1;
          break;
        case PageEncoding.Zero:
          // Fresh reserved RAM is zero: writing zeros there would only fault the page in (on a
          // VM host that costs more than copying a page), so round 1 leaves it untouched.
          if (this.round !== 1 || (this.owner ?? this).reservation?.zeroed !== true) ram.fill(0, at, at + PAGE_SIZE);
          break;
        case PageEncoding.Delta:
          // XBZRLE against the version this RAM holds (the source caches exactly what it sent).
          if ((this.granted & Capability.Xbzrle) === 0) throw violation(`page ${b.page(i)} is a delta, but XBZRLE was not granted`, 'PAGES');
          b.copyData(i, this.deltaScratch, 0);
          xbzrleDecode(this.deltaScratch, 0, b.dataLength(i), ram, at, i);
          written[b.page(i)] = 1;
          break;
        default:
          throw violation(`page ${b.page(i)} uses encoding ${b.encoding(i)}, which this session did not grant`, 'PAGES');
      }
    }
    this.pagesInRound += n;
    this.pagesReceived += n;
  }

  /**
   * PAGE_RUN (page-runs granted): `f` holds the frame's first `f.length` payload bytes (all of it,
   * or at least the fixed fields); the rest of its `length` is read by the socket straight into RAM.
   */
  private onPageRun(f: FramePieces, length: number): void {
    if ((this.granted & Capability.PageRuns) === 0 || this.postcopy !== undefined) throw violation('PAGE_RUN without the page-runs capability', 'PAGE_RUN');
    if (this.phase !== 'transfer') throw violation(`PAGE_RUN in phase ${this.phase}`, 'PAGE_RUN');
    if (this.state !== undefined) throw violation('PAGE_RUN after STATE', 'PAGE_RUN');
    const fixed = f.length >= PAGE_RUN_FIXED_BYTES ? this.runHead : this.runHead.subarray(0, f.length);
    copyFromPieces(f.pieces, 0, fixed, 0, fixed.length);
    const ram = this.ram!;
    const h = decodePageRunHead(fixed, length, ram.length / PAGE_SIZE);
    if (h.round !== this.round) throw violation(`PAGE_RUN of round ${h.round} during round ${this.round}`, 'PAGE_RUN');
    if (this.pagesInRound === 0) {
      this.checkRoundFault();
      if (this.ended) return;
    }
    const at = h.first * PAGE_SIZE;
    const here = f.length - PAGE_RUN_FIXED_BYTES;
    copyFromPieces(f.pieces, PAGE_RUN_FIXED_BYTES, ram, at, here);
    this.written!.fill(1, h.first, h.first + h.count);
    this.pagesInRound += h.count;
    this.pagesReceived += h.count;
    const rest = length - f.length;
    if (rest > 0) {
      this.directAt = at + here;
      this.directLeft = rest;
    }
  }

  /** PAGES_COMPRESSED: back to the PAGES payload it holds (checked like any PAGES after this). */
  private inflate(f: Frame): FramePieces {
    const m = decodePagesCompressed(f.payload, f.flags);
    const name = m.algorithm === CompressionCode.Lz4 ? 'lz4' : 'zstd';
    if (!algorithmGranted(this.granted, name)) throw violation(`PAGES_COMPRESSED with ${name}, which this session did not grant`, 'PAGES_COMPRESSED');
    const raw = compressorForCode(m.algorithm)!.decompress(m.data, m.rawLength);
    return { type: FrameType.Pages, flags: f.flags, length: raw.length, pieces: [raw] };
  }

  private onRoundEnd(f: Frame): void {
    const m = decodeRoundEnd(f.payload);
    if (this.state !== undefined) throw violation('ROUND_END after STATE', 'ROUND_END');
    if (m.round !== this.round) throw violation(`ROUND_END of round ${m.round} during round ${this.round}`, 'ROUND_END');
    if (m.pagesSent !== this.pagesInRound) throw violation(`round ${m.round} claims ${m.pagesSent} pages, ${this.pagesInRound} arrived`, 'ROUND_END');
    if (this.pagesInRound === 0) {
      this.checkRoundFault();
      if (this.ended) return;
    }
    this.log.debug({ round: m.round, pages: m.pagesSent, dirtied: m.pagesDirtied }, 'round received');
    if (m.round === 1 && this.owner === undefined) this.host.bulkArrived?.(this.vm!, this.reservation!);
    this.lastRoundEnded = this.round;
    this.round++;
    this.pagesInRound = 0;
  }

  /**
   * PAUSED_AT (1.4, paused-at granted), once, before STATE: when the source paused the VM, taken
   * onto this host's clock (the same instant with the same boot id; else now minus the time the
   * source says had passed when it sent this, one-way transit not counted), never before this
   * connection was accepted. The guest clock moves forward by the time since at the resume.
   */
  private onPausedAt(f: Frame): void {
    const m = decodePausedAt(f.payload);
    if ((this.granted & Capability.PausedAt) === 0) throw violation('PAUSED_AT without the paused-at capability', 'PAUSED_AT');
    if (this.owner !== undefined) throw violation('PAUSED_AT on a data stream', 'PAUSED_AT');
    if (this.pausedSinceUs !== undefined) throw violation('a second PAUSED_AT', 'PAUSED_AT');
    if (this.phase !== 'transfer' || this.state !== undefined || this.postcopy?.stateReceived === true) {
      throw violation('PAUSED_AT after STATE', 'PAUSED_AT');
    }
    const now = monotonicUs();
    const since = isThisBoot(m.bootId) && m.pausedUs <= now ? m.pausedUs : now - (m.sentUs - m.pausedUs);
    // A pause cannot have begun before this migration reached us: a source claiming otherwise (a
    // bad clock, or a hostile peer) moves the guest clock by no more than the session's age.
    this.pausedSinceUs = Math.max(since, this.openedUs);
  }

  private onState(f: Frame): void {
    if (this.owner !== undefined) throw violation('STATE on a data stream', 'STATE');
    if (this.server.takeFault('stop-and-copy')) return this.fault('stop-and-copy');
    if (this.state !== undefined) throw violation('a second STATE', 'STATE');
    if (this.lastRoundEnded === 0) throw violation('STATE before any round ended', 'STATE');
    if (this.pagesInRound !== 0) throw violation('STATE inside a round (pages after the last ROUND_END)', 'STATE');
    this.checkStreams('STATE');
    const m = decodeState(f.payload);
    this.state = m.state.slice();
  }

  private onComplete(f: Frame): void {
    const m = decodeComplete(f.payload);
    if (this.state === undefined) throw violation('COMPLETE before STATE', 'COMPLETE');
    this.checkStreams('COMPLETE');
    if (m.round !== this.lastRoundEnded) throw violation(`COMPLETE names round ${m.round}, the last round was ${this.lastRoundEnded}`, 'COMPLETE');
    this.phase = 'committing';
    this.completeAt = performance.now();
    void this.commit(m.ramDigest);
  }

  // ---- stages 4 and 5: commitment, activation ------------------------------------------------

  private async commit(sourceDigest: Uint8Array | undefined): Promise<void> {
    const vm = this.vm!;
    let ours: Uint8Array | undefined;
    if (sourceDigest !== undefined) {
      ours = sha256(this.ram!);
      if (!bytesEqual(ours, sourceDigest)) {
        this.fail(new Error('the RAM received differs from the source\'s (SHA-256 mismatch)'), 'digest-mismatch');
        return;
      }
    }
    let prepared: PreparedVm;
    this.loading = true;
    try {
      const history = this.console.history();
      prepared = await this.host.load(vm, this.reservation!, this.state!, { postcopy: false, ...(history !== undefined ? { console: history } : {}) });
    } catch (e) {
      this.loading = false;
      if (this.phase === 'done') void this.cleanup();
      else this.fail(new Error(`the machine state was refused: ${errorText(e)}`), 'state-rejected');
      return;
    } finally {
      this.loading = false;
    }
    this.prepared = prepared;
    if (this.phase !== 'committing') {
      // Aborted (source ABORT, lost connection, shutdown) while the state was loading.
      void this.cleanup();
      return;
    }
    if (this.server.takeFault('before-commit')) return this.fault('before-commit');
    // From this write on the VM is ours: an ABORT that crosses COMMITTED is ignored, as the source will be.
    this.phase = 'committed';
    const err = await new Promise<Error | null | undefined>((resolve) => this.socket.write(encodeCommitted({ ramDigest: ours }), resolve));
    if (err) {
      // COMMITTED never left this host, so the source cannot be committed: give the VM back.
      this.phase = 'committing';
      this.fail(new Error(`could not send COMMITTED: ${errorText(err)}`), undefined);
      return;
    }
    try {
      prepared.resume(this.pausedSinceUs);
    } catch (e) {
      this.log.error({ err: errorText(e) }, 'the committed VM did not resume');
    }
    const resumedUs = monotonicUs();
    const switchoverUs = Math.round((performance.now() - this.completeAt) * 1000);
    if ((this.granted & Capability.ResumedAt) !== 0 && this.socket.writable) this.socket.write(encodeResumedAt({ bootId: bootId(), resumedUs }));
    this.closeWith(encodeActivated({ switchoverUs }));
    this.phase = 'done';
    this.cleanedUp = true;
    // The data streams stay open: the source closes them once it has read COMMITTED on stream 0
    // (closing them here could reach the source first and look like a failure).
    if (this.streamCount > 1 && this.sessionId !== undefined) this.server.dropStreams(this.sessionId, this);
    this.log.info({ switchoverMs: switchoverUs / 1000, pages: this.pagesReceived, rounds: this.lastRoundEnded }, 'incoming migration activated: the VM runs here');
    this.server.report('activated', vm, { downtimeMs: switchoverUs / 1000, migrationId: this.migrationId });
  }

  // ---- failure ------------------------------------------------------------------------------

  private fault(at: FaultPoint): void {
    this.log.warn({ at }, 'fault injection: dropping the connection');
    this.phase = 'done';
    this.failure = new Error(`fault injected at ${at}`);
    this.socket.destroy();
    void this.cleanup();
  }

  /** Ends the session before commitment: ABORT (if `abort`), close, drop the partial copy. */
  private fail(err: Error, abort: AbortReason | undefined): void {
    if (this.postcopy !== undefined) return this.onGone(err.message); // after the switch nothing is dropped
    if (this.owner !== undefined) {
      if (this.phase !== 'done') this.streamGone(err, abort);
      return;
    }
    if (this.streamCount > 1 && this.sessionId !== undefined) {
      this.server.dropStreams(this.sessionId, this);
      if (this.phase !== 'done' && this.phase !== 'committed') for (const s of this.streams) if (s !== undefined) s.closeStream();
    }
    if (this.phase === 'done' || this.phase === 'committed') return;
    const handshake = this.phase === 'handshake';
    this.phase = 'done';
    this.failure = err;
    this.log.warn({ err: err.message }, 'incoming migration failed; its partial copy is dropped');
    if (abort === undefined) this.socket.destroy();
    else if (handshake) this.closeWith(encodeRefuse({ version: PROTOCOL_VERSION, reason: REFUSE_FOR_ABORT[abort], text: err.message }));
    else this.closeWith(encodeAbort({ reason: abort, text: err.message }));
    void this.cleanup();
  }

  /** Releases the reservation or discards the loaded VM, once; waits for a load in flight. */
  private async cleanup(): Promise<void> {
    if (this.loading || this.cleanedUp) return;
    this.cleanedUp = true;
    if (this.directLeft > 0) {
      // The socket's next read is aimed at the RAM released below: stop reading first.
      this.directLeft = 0;
      this.socket.pause();
    }
    try {
      if (this.prepared !== undefined) await this.prepared.discard();
      else if (this.reservation !== undefined) this.host.release(this.vm!, this.reservation);
    } catch (e) {
      this.log.error({ err: errorText(e) }, 'dropping the partial copy failed');
    }
    this.server.report('failed', this.vm, this.failure ?? new Error('incoming migration failed'));
  }

  /** Stream 0 is done with this data stream. */
  private closeStream(): void {
    this.phase = 'done';
    this.socket.destroy();
  }

  private send(frame: Uint8Array): void {
    if (this.socket.writable) this.socket.write(frame);
  }

  /** Sends a last frame and closes; destroys the socket if the peer does not take it in time. */
  private closeWith(frame: Uint8Array): void {
    const s = this.socket;
    if (s.writable) s.end(frame);
    else s.destroy();
    const t = setTimeout(() => s.destroy(), LINGER_MS);
    t.unref();
  }
}

/** Copies `n` bytes from offset `from` of the concatenated `pieces` to `out` at `at`. */
function copyFromPieces(pieces: readonly Uint8Array[], from: number, out: Uint8Array, at: number, n: number): void {
  for (const q of pieces) {
    if (n === 0) return;
    if (from >= q.length) {
      from -= q.length;
      continue;
    }
    const k = Math.min(q.length - from, n);
    out.set(from === 0 && k === q.length ? q : q.subarray(from, from + k), at);
    at += k;
    n -= k;
    from = 0;
  }
}

function joinPieces(f: FramePieces): Uint8Array {
  if (f.pieces.length === 1) return f.pieces[0]!;
  const out = new Uint8Array(f.length);
  let o = 0;
  for (const q of f.pieces) {
    out.set(q, o);
    o += q.length;
  }
  return out;
}

function stripMigrationId(c: MachineConfig): MachineConfig {
  if (!(MIGRATION_ID_KEY in c)) return c;
  const out: MachineConfig = { ...c };
  delete out[MIGRATION_ID_KEY];
  return out;
}
