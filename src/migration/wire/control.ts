/**
 * Codecs of the small messages: ABORT, ROUND_END, STATE, DISCARD, COMPLETE, COMMITTED,
 * ACTIVATED, PAGE_REQUEST, RESUME, PING, PONG. One encode/decode pair each.
 */
import {
  ABORT_FIXED_BYTES,
  DIGEST_BYTES,
  DISCARD_FIXED_BYTES,
  FRAME_HEADER_BYTES,
  FrameType,
  ID_BYTES,
  MAX_REASON_TEXT_BYTES,
  MAX_REQUEST_PAGES,
  MAX_STATE_BYTES,
  PAGE_REQUEST_FIXED_BYTES,
  RESUME_FIXED_BYTES,
  RESUMED_AT_BYTES,
  PAUSED_AT_BYTES,
  ROUND_END_BYTES,
  STATE_FIXED_BYTES,
  frameTypeName,
} from './constants.js';
import { FrameWriter, PayloadReader, checkBytes, checkU32, checkU64, utf8BytesTruncated, writeHeader } from './bytes.js';
import { WireError } from './errors.js';
import { bytesEqual, sha256 } from './ids.js';
import {
  ABORT_REASONS,
  type Abort,
  type Activated,
  type Body,
  type Committed,
  type Complete,
  type Discard,
  type Written,
  type PageRequest,
  type Ping,
  type Pong,
  type Resume,
  type ResumedAt,
  type PausedAt,
  type RoundEnd,
  type State,
} from './messages.js';
import { readRuns, runsBytes, writeRuns, type PageRuns } from './page-runs.js';

// ---- ABORT: reason u8 | reserved u8 | textLength u16 | text ---------------------------------

export function encodeAbort(m: Body<Abort>): Uint8Array {
  const code = ABORT_REASONS.indexOf(m.reason) + 1;
  if (code === 0) throw new WireError('bad-value', `'${String(m.reason)}' is not an abort reason`, { message: 'ABORT', field: 'reason' });
  const text = utf8BytesTruncated(m.text, MAX_REASON_TEXT_BYTES);
  return new FrameWriter(FrameType.Abort, ABORT_FIXED_BYTES + text.length).u8(code).u8(0).u16(text.length).raw(text).finish();
}

export function decodeAbort(payload: Uint8Array): Abort {
  const r = new PayloadReader(payload, 'ABORT');
  const code = r.u8('reason');
  r.reserved(1, 'reserved');
  const length = r.u16('textLength');
  const reason = ABORT_REASONS[code - 1];
  if (reason === undefined) r.fail('bad-value', 'reason', `code ${code} is not an abort reason (1..${ABORT_REASONS.length})`);
  if (length > MAX_REASON_TEXT_BYTES) r.fail('oversized', 'textLength', `${length} exceeds ${MAX_REASON_TEXT_BYTES}`);
  const text = r.utf8(length, 'text');
  r.end();
  return { type: FrameType.Abort, reason: reason!, text };
}

// ---- ROUND_END: round u32 | pagesSent u32 | pagesDirtied u32 | durationUs u64 | bytes u64 ---

export function encodeRoundEnd(m: Body<RoundEnd>): Uint8Array {
  checkU32('ROUND_END', 'round', m.round);
  checkU32('ROUND_END', 'pagesSent', m.pagesSent);
  checkU32('ROUND_END', 'pagesDirtied', m.pagesDirtied);
  checkU64('ROUND_END', 'durationUs', m.durationUs);
  checkU64('ROUND_END', 'bytes', m.bytes);
  return new FrameWriter(FrameType.RoundEnd, ROUND_END_BYTES)
    .u32(m.round).u32(m.pagesSent).u32(m.pagesDirtied).u64(m.durationUs).u64(m.bytes).finish();
}

export function decodeRoundEnd(payload: Uint8Array): RoundEnd {
  const r = new PayloadReader(payload, 'ROUND_END');
  const m: RoundEnd = {
    type: FrameType.RoundEnd,
    round: r.u32('round'),
    pagesSent: r.u32('pagesSent'),
    pagesDirtied: r.u32('pagesDirtied'),
    durationUs: r.u64('durationUs'),
    bytes: r.u64('bytes'),
  };
  r.end();
  return m;
}

// ---- STATE: sha256 32 | stateLength u32 | state ---------------------------------------------

/**
 * The STATE frame in two parts, header+digest+length (44 bytes) and the blob itself, so a
 * multi-megabyte state goes to the socket without being copied.
 */
export function encodeStateParts(state: Uint8Array): [Uint8Array, Uint8Array] {
  if (state.length === 0) throw new WireError('bad-value', 'the machine state is empty', { message: 'STATE', field: 'stateLength' });
  if (state.length > MAX_STATE_BYTES) throw new WireError('oversized', `${state.length} bytes exceed ${MAX_STATE_BYTES}`, { message: 'STATE', field: 'stateLength' });
  const head = new Uint8Array(FRAME_HEADER_BYTES + STATE_FIXED_BYTES);
  const view = new DataView(head.buffer);
  writeHeader(view, 0, FrameType.State, 0, STATE_FIXED_BYTES + state.length);
  head.set(sha256(state), FRAME_HEADER_BYTES);
  view.setUint32(FRAME_HEADER_BYTES + DIGEST_BYTES, state.length, true);
  return [head, state];
}

/** The whole STATE frame in one buffer (copies the blob). The digest is computed here. */
export function encodeState(m: { readonly state: Uint8Array }): Uint8Array {
  const [head, state] = encodeStateParts(m.state);
  const out = new Uint8Array(head.length + state.length);
  out.set(head, 0);
  out.set(state, head.length);
  return out;
}

/**
 * The layout STATE and IMAGE share, `sha256 32 | length u32 | blob`, read whole: bounds, then the
 * digest. `field` names the blob ('state', 'image'); `noun` is how errors call it. The blob is a
 * view into the payload.
 */
export function readDigestedBlob(r: PayloadReader, field: string, noun: string, max: number): { blob: Uint8Array; digest: Uint8Array } {
  const digest = r.fixed(DIGEST_BYTES, 'digest');
  const length = r.u32(`${field}Length`);
  if (length === 0) r.fail('bad-value', `${field}Length`, `is 0; ${noun} is never empty`);
  if (length > max) r.fail('oversized', `${field}Length`, `${length} exceeds ${max}`);
  const blob = r.counted(length, field);
  r.end();
  if (!bytesEqual(sha256(blob), digest)) r.fail('bad-digest', 'digest', `SHA-256 of the ${length}-byte ${field} does not match: the ${field} was corrupted in transit`);
  return { blob, digest };
}

/** Verifies the digest; `state` is a view into the payload. */
export function decodeState(payload: Uint8Array): State {
  const { blob, digest } = readDigestedBlob(new PayloadReader(payload, 'STATE'), 'state', 'a machine state', MAX_STATE_BYTES);
  return { type: FrameType.State, state: blob, digest };
}

// ---- DISCARD, and WRITTEN (1.8):
// ramPages u32 | pageCount u32 | runCount u32 | runs (first u32, length u32)* ------------------

function encodeRunsFrame(type: FrameType.Discard | FrameType.Written, runs: PageRuns): Uint8Array {
  const w = new FrameWriter(type, DISCARD_FIXED_BYTES - 12 + runsBytes(runs));
  writeRuns(w, frameTypeName(type), runs);
  return w.finish();
}

function decodeRuns(payload: Uint8Array, message: string): PageRuns {
  const r = new PayloadReader(payload, message);
  const runs = readRuns(r);
  r.end();
  return runs;
}

export function encodeDiscard(m: Body<Discard>): Uint8Array {
  return encodeRunsFrame(FrameType.Discard, m.runs);
}

export function decodeDiscard(payload: Uint8Array): Discard {
  return { type: FrameType.Discard, runs: decodeRuns(payload, 'DISCARD') };
}

export function encodeWritten(m: Body<Written>): Uint8Array {
  return encodeRunsFrame(FrameType.Written, m.runs);
}

export function decodeWritten(payload: Uint8Array): Written {
  return { type: FrameType.Written, runs: decodeRuns(payload, 'WRITTEN') };
}

// ---- COMPLETE: round u32 | hasDigest u8 | reserved 3 | [ramDigest 32] -------------------------
// ---- COMMITTED: hasDigest u8 | reserved 3 | [ramDigest 32] ------------------------------------

function readOptionalDigest(r: PayloadReader): Uint8Array | undefined {
  const has = r.u8('hasDigest');
  r.reserved(3, 'reserved');
  if (has > 1) r.fail('bad-value', 'hasDigest', `is ${has}, must be 0 or 1`);
  return has === 1 ? r.fixed(DIGEST_BYTES, 'ramDigest') : undefined;
}

function digestBytes(message: string, d: Uint8Array | undefined): number {
  if (d === undefined) return 0;
  checkBytes(message, 'ramDigest', d, DIGEST_BYTES);
  return DIGEST_BYTES;
}

export function encodeComplete(m: Body<Complete>): Uint8Array {
  checkU32('COMPLETE', 'round', m.round);
  const n = digestBytes('COMPLETE', m.ramDigest);
  const w = new FrameWriter(FrameType.Complete, 8 + n).u32(m.round).u8(n > 0 ? 1 : 0).zeros(3);
  if (m.ramDigest !== undefined) w.raw(m.ramDigest);
  return w.finish();
}

export function decodeComplete(payload: Uint8Array): Complete {
  const r = new PayloadReader(payload, 'COMPLETE');
  const round = r.u32('round');
  const ramDigest = readOptionalDigest(r);
  r.end();
  return { type: FrameType.Complete, round, ramDigest };
}

export function encodeCommitted(m: Body<Committed>): Uint8Array {
  const n = digestBytes('COMMITTED', m.ramDigest);
  const w = new FrameWriter(FrameType.Committed, 4 + n).u8(n > 0 ? 1 : 0).zeros(3);
  if (m.ramDigest !== undefined) w.raw(m.ramDigest);
  return w.finish();
}

export function decodeCommitted(payload: Uint8Array): Committed {
  const r = new PayloadReader(payload, 'COMMITTED');
  const ramDigest = readOptionalDigest(r);
  r.end();
  return { type: FrameType.Committed, ramDigest };
}

// ---- ACTIVATED: switchoverUs u64 ---------------------------------------------------------------

export function encodeActivated(m: Body<Activated>): Uint8Array {
  checkU64('ACTIVATED', 'switchoverUs', m.switchoverUs);
  return new FrameWriter(FrameType.Activated, 8).u64(m.switchoverUs).finish();
}

export function decodeActivated(payload: Uint8Array): Activated {
  const r = new PayloadReader(payload, 'ACTIVATED');
  const switchoverUs = r.u64('switchoverUs');
  r.end();
  return { type: FrameType.Activated, switchoverUs };
}

// ---- RESUMED_AT (1.3): bootId 16 bytes | resumedUs u64 ----------------------------------------

export function encodeResumedAt(m: Body<ResumedAt>): Uint8Array {
  checkBytes('RESUMED_AT', 'bootId', m.bootId, ID_BYTES);
  checkU64('RESUMED_AT', 'resumedUs', m.resumedUs);
  return new FrameWriter(FrameType.ResumedAt, RESUMED_AT_BYTES).raw(m.bootId).u64(m.resumedUs).finish();
}

export function decodeResumedAt(payload: Uint8Array): ResumedAt {
  const r = new PayloadReader(payload, 'RESUMED_AT');
  const bootId = r.fixed(ID_BYTES, 'bootId').slice();
  const resumedUs = r.u64('resumedUs');
  r.end();
  return { type: FrameType.ResumedAt, bootId, resumedUs };
}

// ---- PAUSED_AT (1.4): bootId 16 bytes | pausedUs u64 | sentUs u64 ---------------------------

export function encodePausedAt(m: Body<PausedAt>): Uint8Array {
  checkBytes('PAUSED_AT', 'bootId', m.bootId, ID_BYTES);
  checkU64('PAUSED_AT', 'pausedUs', m.pausedUs);
  checkU64('PAUSED_AT', 'sentUs', m.sentUs);
  checkPausedBeforeSent(m.pausedUs, m.sentUs);
  return new FrameWriter(FrameType.PausedAt, PAUSED_AT_BYTES).raw(m.bootId).u64(m.pausedUs).u64(m.sentUs).finish();
}

export function decodePausedAt(payload: Uint8Array): PausedAt {
  const r = new PayloadReader(payload, 'PAUSED_AT');
  const bootId = r.fixed(ID_BYTES, 'bootId').slice();
  const pausedUs = r.u64('pausedUs');
  const sentUs = r.u64('sentUs');
  r.end();
  checkPausedBeforeSent(pausedUs, sentUs);
  return { type: FrameType.PausedAt, bootId, pausedUs, sentUs };
}

/** PAUSED_AT cannot be sent before the pause it reports. */
function checkPausedBeforeSent(pausedUs: number, sentUs: number): void {
  if (sentUs < pausedUs) throw new WireError('bad-value', `PAUSED_AT sentUs ${sentUs} is before pausedUs ${pausedUs}`, { message: 'PAUSED_AT', field: 'sentUs' });
}

// ---- PAGE_REQUEST: requestId u32 | count u16 | reserved u16 | pages u32* ---------------------

export function encodePageRequest(m: Body<PageRequest>): Uint8Array {
  const f = (field: string, text: string): never => {
    throw new WireError('bad-value', text, { message: 'PAGE_REQUEST', field });
  };
  checkU32('PAGE_REQUEST', 'requestId', m.requestId);
  if (m.requestId === 0) f('requestId', 'is 0; request ids start at 1');
  const n = m.pages.length;
  if (n === 0 || n > MAX_REQUEST_PAGES) throw new WireError('bad-count', `${n} pages is outside 1..${MAX_REQUEST_PAGES}`, { message: 'PAGE_REQUEST', field: 'count' });
  const w = new FrameWriter(FrameType.PageRequest, PAGE_REQUEST_FIXED_BYTES + 4 * n).u32(m.requestId).u16(n).u16(0);
  for (let i = 0; i < n; i++) w.u32(m.pages[i]!);
  return w.finish();
}

export function decodePageRequest(payload: Uint8Array): PageRequest {
  const r = new PayloadReader(payload, 'PAGE_REQUEST');
  const requestId = r.u32('requestId');
  const count = r.u16('count');
  r.reserved(2, 'reserved');
  if (requestId === 0) r.fail('bad-value', 'requestId', 'is 0; request ids start at 1');
  if (count === 0 || count > MAX_REQUEST_PAGES) r.fail('bad-count', 'count', `${count} is outside 1..${MAX_REQUEST_PAGES}`);
  if (r.remaining < count * 4) r.fail('bad-count', 'pages', `count ${count} needs ${count * 4} bytes, the payload has ${r.remaining} left`);
  const pages = new Uint32Array(count);
  for (let i = 0; i < count; i++) pages[i] = r.u32(`pages[${i}]`);
  r.end();
  return { type: FrameType.PageRequest, requestId, pages };
}

// ---- RESUME: sessionId 16 | ramPages u32 | pageCount u32 | runCount u32 | runs ----------------

export function encodeResume(m: Body<Resume>): Uint8Array {
  checkBytes('RESUME', 'sessionId', m.sessionId, ID_BYTES);
  const w = new FrameWriter(FrameType.Resume, RESUME_FIXED_BYTES - 12 + runsBytes(m.runs)).raw(m.sessionId);
  writeRuns(w, 'RESUME', m.runs);
  return w.finish();
}

export function decodeResume(payload: Uint8Array): Resume {
  const r = new PayloadReader(payload, 'RESUME');
  const sessionId = r.fixed(ID_BYTES, 'sessionId');
  const runs = readRuns(r);
  r.end();
  return { type: FrameType.Resume, sessionId, runs };
}

// ---- PING / PONG: nonce u64 --------------------------------------------------------------------

function checkNonce(message: string, v: bigint): void {
  if (typeof v !== 'bigint' || v < 0n || v > 0xffff_ffff_ffff_ffffn) throw new WireError('bad-value', `${String(v)} is not a u64`, { message, field: 'nonce' });
}

export function encodePing(m: Body<Ping>): Uint8Array {
  checkNonce('PING', m.nonce);
  return new FrameWriter(FrameType.Ping, 8).big64(m.nonce).finish();
}

export function decodePing(payload: Uint8Array): Ping {
  const r = new PayloadReader(payload, 'PING');
  const nonce = r.big64('nonce');
  r.end();
  return { type: FrameType.Ping, nonce };
}

export function encodePong(m: Body<Pong>): Uint8Array {
  checkNonce('PONG', m.nonce);
  return new FrameWriter(FrameType.Pong, 8).big64(m.nonce).finish();
}

export function decodePong(payload: Uint8Array): Pong {
  const r = new PayloadReader(payload, 'PONG');
  const nonce = r.big64('nonce');
  r.end();
  return { type: FrameType.Pong, nonce };
}
