/** Dispatch over all messages: a frame to its Message, a Message to its frame bytes. */
import { FrameType, allowedFlagsFor, frameTypeName } from './constants.js';
import {
  decodeAbort,
  decodeActivated,
  decodeResumedAt,
  decodePausedAt,
  decodeCommitted,
  decodeComplete,
  decodeDiscard,
  decodeWritten,
  decodePageRequest,
  decodePing,
  decodePong,
  decodeResume,
  decodeRoundEnd,
  decodeState,
  encodeAbort,
  encodeActivated,
  encodeResumedAt,
  encodePausedAt,
  encodeCommitted,
  encodeComplete,
  encodeDiscard,
  encodeWritten,
  encodePageRequest,
  encodePing,
  encodePong,
  encodeResume,
  encodeRoundEnd,
  encodeState,
} from './control.js';
import { WireError } from './errors.js';
import type { Frame } from './frame.js';
import { decodeAccept, decodeHello, decodeRefuse, encodeAccept, encodeHello, encodeRefuse } from './handshake.js';
import type { Message } from './messages.js';
import { decodePages, encodePages } from './pages.js';
import { decodePagesCompressed, encodePagesCompressed } from './pages-compressed.js';
import { decodePostcopyStats, encodePostcopyStats } from './postcopy-stats.js';
import { decodeImage, encodeImage } from './image.js';
import { decodePageRun, encodePageRun } from './page-run.js';
import { decodeWarmTraffic, encodeWarmTraffic } from './warm-traffic.js';
import { decodeConsole, encodeConsole } from './console.js';

export interface DecodeOptions {
  /** Guest RAM pages, when known: PAGES entries beyond it are refused. */
  readonly ramPages?: number;
}

/**
 * Decodes any frame. PAGES becomes a fresh PageBatchReader; the page-copy hot path should
 * instead keep one PageBatchReader and call its decode(frame.payload, frame.flags).
 */
export function decodeMessage(frame: Frame, options: DecodeOptions = {}): Message {
  const p = frame.payload;
  const extra = frame.flags & ~allowedFlagsFor(frame.type);
  if (extra !== 0) {
    throw new WireError('reserved-bits', `flag bits 0x${extra.toString(16)} are not defined for ${frameTypeName(frame.type)}`, { message: frameTypeName(frame.type), field: 'flags' });
  }
  switch (frame.type) {
    case FrameType.Hello: return decodeHello(p);
    case FrameType.Accept: return decodeAccept(p);
    case FrameType.Refuse: return decodeRefuse(p);
    case FrameType.Abort: return decodeAbort(p);
    case FrameType.Pages: return { type: FrameType.Pages, batch: decodePages(p, frame.flags, options.ramPages) };
    case FrameType.RoundEnd: return decodeRoundEnd(p);
    case FrameType.State: return decodeState(p);
    case FrameType.Discard: return decodeDiscard(p);
    case FrameType.PagesCompressed: return decodePagesCompressed(p, frame.flags);
    case FrameType.Complete: return decodeComplete(p);
    case FrameType.Committed: return decodeCommitted(p);
    case FrameType.Activated: return decodeActivated(p);
    case FrameType.PostcopyStats: return decodePostcopyStats(p);
    case FrameType.ResumedAt: return decodeResumedAt(p);
    case FrameType.PausedAt: return decodePausedAt(p);
    case FrameType.Image: return decodeImage(p);
    case FrameType.PageRun: return decodePageRun(p, options.ramPages);
    case FrameType.WarmTraffic: return decodeWarmTraffic(p);
    case FrameType.Console: return decodeConsole(p);
    case FrameType.Written: return decodeWritten(p);
    case FrameType.PageRequest: return decodePageRequest(p);
    case FrameType.Resume: return decodeResume(p);
    case FrameType.Ping: return decodePing(p);
    case FrameType.Pong: return decodePong(p);
    default:
      throw new WireError('unknown-type', `frame type 0x${(frame.type as number).toString(16).padStart(2, '0')} is not defined`, { field: 'type' });
  }
}

/** Encodes any message as one frame (header included). */
export function encodeMessage(m: Message): Uint8Array {
  switch (m.type) {
    case FrameType.Hello: return encodeHello(m);
    case FrameType.Accept: return encodeAccept(m);
    case FrameType.Refuse: return encodeRefuse(m);
    case FrameType.Abort: return encodeAbort(m);
    case FrameType.Pages: return encodePages(m);
    case FrameType.RoundEnd: return encodeRoundEnd(m);
    case FrameType.State: return encodeState(m);
    case FrameType.Discard: return encodeDiscard(m);
    case FrameType.PagesCompressed: return encodePagesCompressed(m);
    case FrameType.Complete: return encodeComplete(m);
    case FrameType.Committed: return encodeCommitted(m);
    case FrameType.Activated: return encodeActivated(m);
    case FrameType.PostcopyStats: return encodePostcopyStats(m);
    case FrameType.ResumedAt: return encodeResumedAt(m);
    case FrameType.PausedAt: return encodePausedAt(m);
    case FrameType.Image: return encodeImage(m);
    case FrameType.PageRun: return encodePageRun(m);
    case FrameType.WarmTraffic: return encodeWarmTraffic(m);
    case FrameType.Console: return encodeConsole(m);
    case FrameType.Written: return encodeWritten(m);
    case FrameType.PageRequest: return encodePageRequest(m);
    case FrameType.Resume: return encodeResume(m);
    case FrameType.Ping: return encodePing(m);
    case FrameType.Pong: return encodePong(m);
  }
}
