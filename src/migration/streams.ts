/**
 * Parallel TCP streams for page data, the source's side (migration-protocol.md §5.5). Stream 0
 * is the session's own connection (source.ts); this holds streams 1..n-1: each joins with HELLO
 * (its index, the session id), carries the PAGES and ROUND_END of the pages p with p mod n equal
 * to its index (so successive versions of a page stay in order), and answers PINGs so the source
 * knows when a stream's rounds have reached the destination. One failing stream fails the session.
 */
import { connect, type Socket } from 'node:net';
import type { GuestRam } from '../machine/memory/ram.js';
import { errorText } from './errors.js';
import { PageSender, type FrameSink, type PageSenderEncodings, type RoundTally } from './page-sender.js';
import {
  FRAME_HEADER_BYTES,
  FrameReader,
  FrameType,
  bytesEqual,
  decodeMessage,
  encodeHello,
  encodePing,
  encodePong,
  encodeRoundEnd,
  frameTypeName,
  type Body,
  type Hello,
} from './wire/index.js';

const ROUND_END_FRAME_BYTES = FRAME_HEADER_BYTES + 28;

/** Splits a round's page list by stream (p mod n) into reusable buffers; no allocation per round. */
export class StreamSplitter {
  private readonly bufs: Uint32Array[] = [];

  constructor(readonly count: number, ramPages: number) {
    for (let i = 0; i < count; i++) this.bufs.push(new Uint32Array(Math.ceil(ramPages / count) + 1));
  }

  /** Views of this splitter's buffers: valid until the next split. */
  split(list: Uint32Array): Uint32Array[] {
    const n = this.count;
    const fill = new Array<number>(n).fill(0);
    for (let k = 0; k < list.length; k++) {
      const p = list[k]!;
      const s = p % n;
      this.bufs[s]![fill[s]!++] = p;
    }
    return this.bufs.map((b, i) => b.subarray(0, fill[i]!));
  }
}

/** One joined data stream. */
class DataStream {
  readonly socket: Socket;
  private readonly reader = new FrameReader({ from: 'destination' });
  private accepted: ((err?: Error) => void) | undefined;
  private readonly pongs = new Map<bigint, () => void>();
  private nonce = 0n;
  private closing = false;
  sender: PageSender | undefined;
  tally: RoundTally | undefined;

  constructor(
    readonly index: number,
    host: string,
    port: number,
    private readonly sessionId: Uint8Array,
    private readonly onFail: (err: Error) => void,
  ) {
    const s = connect({ host, port });
    this.socket = s;
    s.setNoDelay(true);
    s.on('data', (chunk: Buffer) => this.onData(chunk));
    s.on('error', (e) => this.gone(`connection error: ${errorText(e)}`));
    s.on('close', () => this.gone('connection closed'));
  }

  /** Sends HELLO once connected; resolves on ACCEPT naming the same session. */
  join(hello: Body<Hello>): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.accepted = (err) => (err === undefined ? resolve() : reject(err));
      const go = (): void => {
        this.socket.write(encodeHello(hello));
      };
      if (this.socket.connecting) this.socket.once('connect', go);
      else go();
    });
  }

  write(frame: Uint8Array, done?: (err?: Error | null) => void): void {
    if (done !== undefined) this.socket.write(frame, done);
    else this.socket.write(frame);
  }

  /** Resolves once the destination answered a PING sent now (everything before it has arrived). */
  ping(): Promise<void> {
    const nonce = ++this.nonce;
    return new Promise<void>((resolve) => {
      this.pongs.set(nonce, resolve);
      this.write(encodePing({ nonce }));
    });
  }

  close(): void {
    this.closing = true;
    this.socket.end();
    const t = setTimeout(() => this.socket.destroy(), 1_000);
    t.unref();
  }

  destroy(): void {
    this.closing = true;
    this.socket.destroy();
  }

  private gone(why: string): void {
    if (this.closing) return;
    this.closing = true;
    const err = new Error(`stream ${this.index}: ${why}`);
    this.accepted?.(err);
    this.accepted = undefined;
    this.onFail(err);
  }

  private onData(chunk: Buffer): void {
    try {
      this.reader.push(chunk);
      for (;;) {
        const f = this.reader.next();
        if (f === undefined) return;
        const m = decodeMessage(f);
        switch (m.type) {
          case FrameType.Accept:
            if (!bytesEqual(m.sessionId, this.sessionId)) throw new Error(`stream ${this.index} was accepted into another session`);
            this.accepted?.();
            this.accepted = undefined;
            break;
          case FrameType.Refuse:
            throw new Error(`the destination refused stream ${this.index} (${m.reason}): ${m.text}`);
          case FrameType.Abort:
            throw new Error(`the destination aborted on stream ${this.index} (${m.reason}): ${m.text}`);
          case FrameType.Ping:
            this.write(encodePong({ nonce: m.nonce }));
            break;
          case FrameType.Pong: {
            const r = this.pongs.get(m.nonce);
            this.pongs.delete(m.nonce);
            r?.();
            break;
          }
          default:
            throw new Error(`unexpected ${frameTypeName(m.type)} on data stream ${this.index}`);
        }
      }
    } catch (e) {
      this.gone(errorText(e));
      this.socket.destroy();
    }
  }
}

export interface DataStreamsOptions {
  readonly host: string;
  readonly port: number;
  /** Streams in all, stream 0 included (2..16). */
  readonly count: number;
  readonly sessionId: Uint8Array;
  /** HELLO of stream 0; each data stream sends it with its own index. */
  readonly hello: Body<Hello>;
  readonly ram: GuestRam;
  readonly zeroPages: boolean;
  readonly encodings: PageSenderEncodings;
  /** Awaits a promise unless the migration fails first (the source's guard). */
  readonly guard: <T>(p: Promise<T>) => Promise<T>;
  /** A data stream failed: the migration fails. */
  readonly onFail: (err: Error) => void;
}

/** Streams 1..n-1 of a session, each with its own PageSender. */
export class DataStreams {
  private readonly streams: DataStream[] = [];
  private readonly splitter: StreamSplitter;
  private failed: Error | undefined;

  constructor(private readonly o: DataStreamsOptions) {
    this.splitter = new StreamSplitter(o.count, o.ram.pageCount);
  }

  get count(): number {
    return this.o.count;
  }

  /** Connects and joins every data stream. */
  async open(): Promise<void> {
    const o = this.o;
    for (let i = 1; i < o.count; i++) {
      const st = new DataStream(i, o.host, o.port, o.sessionId, (e) => this.fail(e));
      this.streams.push(st);
      const sink: FrameSink = {
        write: (frame, done) => {
          if (this.failed !== undefined) throw this.failed;
          st.write(frame, done);
        },
        guard: o.guard,
      };
      st.sender = new PageSender(o.ram, sink, o.zeroPages, o.encodings);
    }
    await o.guard(Promise.all(this.streams.map((st) => st.join({ ...o.hello, streamIndex: st.index, sessionId: o.sessionId }))));
  }

  /** Splits `list` by stream; returns stream 0's share (for the caller's own sender). */
  split(list: Uint32Array): { own: Uint32Array; rest: Uint32Array[] } {
    const parts = this.splitter.split(list);
    return { own: parts[0]!, rest: parts.slice(1) };
  }

  /** Each data stream's share of the rate (bytes/s; Infinity: unlimited). */
  setRate(bytesPerSecond: number): void {
    for (const st of this.streams) st.sender!.setRate(bytesPerSecond);
  }

  /** Sends each data stream its share of a round; resolves with their tallies. */
  async sendRound(rest: Uint32Array[], round: number, skipDirty: boolean, paused: boolean, blocks?: Uint8Array): Promise<RoundTally[]> {
    const tallies = await Promise.all(this.streams.map((st, i) => st.sender!.sendRound(rest[i]!, round, skipDirty, paused, blocks)));
    this.streams.forEach((st, i) => (st.tally = tallies[i]));
    return tallies;
  }

  /** ROUND_END on every data stream, with its own pages and bytes and the round's figures. */
  roundEnd(round: number, pagesDirtied: number, durationUs: number): number {
    let bytes = 0;
    for (const st of this.streams) {
      const t = st.tally!;
      st.write(encodeRoundEnd({ round, pagesSent: t.pages, pagesDirtied, durationUs, bytes: t.bytes + ROUND_END_FRAME_BYTES }));
      bytes += ROUND_END_FRAME_BYTES;
    }
    return bytes;
  }

  /**
   * Resolves once every data stream's frames so far have reached the destination. Never
   * rejects (a stream that dies fails the migration through onFail): await it under a guard.
   */
  ping(): Promise<void> {
    return Promise.all(this.streams.map((st) => st.ping())).then(() => undefined);
  }

  get totalBytes(): number {
    return this.sum((s) => s.totalBytes);
  }
  get totalPages(): number {
    return this.sum((s) => s.totalPages);
  }
  get totalZeroPages(): number {
    return this.sum((s) => s.totalZeroPages);
  }
  get compressionIn(): number {
    return this.sum((s) => s.compressionIn);
  }
  get compressionOut(): number {
    return this.sum((s) => s.compressionOut);
  }
  get compressionSkipped(): number {
    return this.sum((s) => s.compressionBackoff.skipped);
  }

  private sum(f: (s: PageSender) => number): number {
    let n = 0;
    for (const st of this.streams) n += f(st.sender!);
    return n;
  }

  /** The migration is over: close the data streams. */
  close(): void {
    for (const st of this.streams) {
      st.close();
      st.sender?.dispose();
    }
  }

  destroy(): void {
    for (const st of this.streams) {
      st.destroy();
      st.sender?.dispose();
    }
  }

  private fail(err: Error): void {
    if (this.failed !== undefined) return;
    this.failed = err;
    this.destroy();
    this.o.onFail(err);
  }
}
