/**
 * The messages of the migration protocol as TypeScript values. Each carries its frame type as
 * the discriminant `type`; codecs live in handshake.ts, pages.ts and control.ts.
 */
import type { PagesCompressed } from './pages-compressed.js';
import type { FrameType, ProtocolVersion } from './constants.js';
import type { PageBatch } from './pages.js';
import type { PageRuns } from './page-runs.js';

export type JsonValue = string | number | boolean | null | JsonValue[] | JsonObject;
export interface JsonObject {
  [key: string]: JsonValue;
}

/** One device of the machine; `kind` names it (e.g. 'virtio-vsock'), other keys are its settings. */
export interface DeviceSpec {
  kind: string;
  [key: string]: JsonValue;
}

/** What the destination must reproduce. Unknown keys travel untouched (newer peers may add some). */
export interface MachineConfig {
  /** Digest of the guest image, e.g. 'sha256:…'. */
  imageDigest: string;
  /** The kernel command line (/chosen/bootargs). */
  bootArgs: string;
  devices: DeviceSpec[];
  [key: string]: JsonValue;
}

export type MigrationMode = 'precopy' | 'postcopy' | 'hybrid';
export const MIGRATION_MODES: readonly MigrationMode[] = ['precopy', 'postcopy', 'hybrid'];

/** Why a destination refuses a HELLO. Wire code = index + 1. */
export type RefuseReason =
  | 'busy'
  | 'exists'
  | 'too-big'
  | 'config-mismatch'
  | 'version'
  | 'bad-request'
  | 'unknown-session'
  | 'capability'
  | 'internal';
export const REFUSE_REASONS: readonly RefuseReason[] = [
  'busy', 'exists', 'too-big', 'config-mismatch', 'version', 'bad-request', 'unknown-session', 'capability', 'internal',
];

/** Why either side abandons a session. Wire code = index + 1. */
export type AbortReason =
  | 'cancelled'
  | 'timeout'
  | 'protocol'
  | 'io'
  | 'digest-mismatch'
  | 'state-rejected'
  | 'resources'
  | 'internal';
export const ABORT_REASONS: readonly AbortReason[] = [
  'cancelled', 'timeout', 'protocol', 'io', 'digest-mismatch', 'state-rejected', 'resources', 'internal',
];

export interface Hello {
  readonly type: FrameType.Hello;
  readonly version: ProtocolVersion;
  /** 16 bytes. */
  readonly vmId: Uint8Array;
  /** 1..255 bytes of UTF-8. */
  readonly vmName: string;
  readonly ramBytes: number;
  /** Must be WIRE_PAGE_SIZE (4096) in protocol 1.x. */
  readonly pageSize: number;
  readonly config: MachineConfig;
  readonly mode: MigrationMode;
  /** Capability bitmask offered by the source. */
  readonly capabilities: number;
  readonly streamIndex: number;
  readonly streamCount: number;
  /** 16 bytes; all zero for a new session, the session's id when joining or resuming. */
  readonly sessionId: Uint8Array;
}

export interface Accept {
  readonly type: FrameType.Accept;
  readonly version: ProtocolVersion;
  /** 16 bytes, never all zero. */
  readonly sessionId: Uint8Array;
  /** The subset of the offered capabilities the session uses. */
  readonly capabilities: number;
}

export interface Refuse {
  readonly type: FrameType.Refuse;
  readonly version: ProtocolVersion;
  readonly reason: RefuseReason;
  /** Human-readable; at most 1024 bytes of UTF-8 (encoders truncate). */
  readonly text: string;
}

export interface Abort {
  readonly type: FrameType.Abort;
  readonly reason: AbortReason;
  readonly text: string;
}

export interface Pages {
  readonly type: FrameType.Pages;
  readonly batch: PageBatch;
}

export interface RoundEnd {
  readonly type: FrameType.RoundEnd;
  readonly round: number;
  /** Page entries sent on this stream in the round. */
  readonly pagesSent: number;
  /** Pages found dirty at the end of the round (what the next round must send). */
  readonly pagesDirtied: number;
  readonly durationUs: number;
  /** Frame bytes (headers included) sent on this stream in the round. */
  readonly bytes: number;
}

export interface State {
  readonly type: FrameType.State;
  /** The machine state blob (saveState()); a view into the frame when decoded. */
  readonly state: Uint8Array;
  /** SHA-256 of `state`; decoding verifies it. */
  readonly digest: Uint8Array;
}

export interface Discard {
  readonly type: FrameType.Discard;
  /** Pages the destination must drop and treat as absent (dirtied since they were sent). */
  readonly runs: PageRuns;
}

/** Since 1.8 (written-pages): the pages that may hold data, for the destination to back before round 1. */
export interface Written {
  readonly type: FrameType.Written;
  /** Every page the guest has written (or all pages, where writes are not tracked). */
  readonly runs: PageRuns;
}

export interface Complete {
  readonly type: FrameType.Complete;
  /** The last round whose pages were sent. */
  readonly round: number;
  /** Optional SHA-256 over all of RAM, for debug verification. */
  readonly ramDigest: Uint8Array | undefined;
}

export interface Committed {
  readonly type: FrameType.Committed;
  readonly ramDigest: Uint8Array | undefined;
}

export interface Activated {
  readonly type: FrameType.Activated;
  /** Microseconds from COMPLETE (post-copy: STATE) received to the vCPU running, at the destination. */
  readonly switchoverUs: number;
}

/** Since 1.3: when the destination resumed the vCPU, on its own clock (sent just before ACTIVATED). */
export interface ResumedAt {
  readonly type: FrameType.ResumedAt;
  /** The destination's boot id (16 bytes; all zero: unknown). */
  readonly bootId: Uint8Array;
  /** Its CLOCK_MONOTONIC at the vCPU resume, µs. */
  readonly resumedUs: number;
}

/**
 * Since 1.4: when the source paused the vCPU and when it sent this, both on its own clock (sent
 * just before STATE). The destination learns how long the VM has been paused so far, and with the
 * same boot id the exact instant.
 */
export interface PausedAt {
  readonly type: FrameType.PausedAt;
  /** The source's boot id (16 bytes; all zero: unknown). */
  readonly bootId: Uint8Array;
  /** Its CLOCK_MONOTONIC at the vCPU pause, µs. */
  readonly pausedUs: number;
  /** Its CLOCK_MONOTONIC as it wrote this frame, µs (not before pausedUs). */
  readonly sentUs: number;
}

/** Since 1.1: what the destination saw of a post-copy (sent before COMMITTED). */
export interface PostcopyStats {
  readonly type: FrameType.PostcopyStats;
  /** PAGE_REQUESTs sent: vCPU accesses to pages that were absent and not yet asked for. */
  readonly networkFaults: number;
  /** Distinct pages the guest wrote at the destination while pages were still absent. */
  readonly writtenPages: number;
  /** Fault service latency (fault seen to page installed), µs. */
  readonly latencyP50Us: number;
  readonly latencyP99Us: number;
  readonly latencyMaxUs: number;
}

/** Since 1.2: the guest image the VM booted from (warm-image capability). */
export interface Image {
  readonly type: FrameType.Image;
  /** The ELF file's bytes. */
  readonly image: Uint8Array;
  /** Its SHA-256, checked by the decoder. */
  readonly digest: Uint8Array;
}

/** Since 1.5 (page-runs): `count` consecutive raw pages from `first`, sent in round `round`. */
export interface PageRun {
  readonly type: FrameType.PageRun;
  readonly round: number;
  readonly first: number;
  readonly count: number;
  /** count × 4096 bytes. */
  readonly data: Uint8Array;
}

/** One vsock port of the VM and the first bytes a client sent on a connection to it (possibly none). */
export interface TrafficSample {
  readonly vmPort: number;
  readonly bytes: Uint8Array;
}

/** Since 1.6 (warm-traffic): samples of client traffic for the destination's warm-up. */
export interface WarmTraffic {
  readonly type: FrameType.WarmTraffic;
  readonly samples: readonly TrafficSample[];
}

/**
 * Since 1.7 (console-precopy): console history. `bytes` are the last bytes.length of the first
 * `end` bytes the guest ever printed; a frame after the first starts where the one before ended.
 */
export interface ConsoleHistory {
  readonly type: FrameType.Console;
  readonly end: number;
  readonly bytes: Uint8Array;
}

export interface PageRequest {
  readonly type: FrameType.PageRequest;
  /** Non-zero; echoed in the PAGES frames (flag demand) that answer it. */
  readonly requestId: number;
  readonly pages: Uint32Array;
}

export interface Resume {
  readonly type: FrameType.Resume;
  readonly sessionId: Uint8Array;
  /** The pages the destination still lacks. */
  readonly runs: PageRuns;
}

export interface Ping {
  readonly type: FrameType.Ping;
  readonly nonce: bigint;
}

export interface Pong {
  readonly type: FrameType.Pong;
  /** The PING's nonce, echoed. */
  readonly nonce: bigint;
}

export type Message =
  | Hello
  | Accept
  | Refuse
  | Abort
  | Pages
  | RoundEnd
  | State
  | Discard
  | Complete
  | Committed
  | Activated
  | PagesCompressed
  | PostcopyStats
  | ResumedAt
  | PausedAt
  | Image
  | PageRun
  | WarmTraffic
  | ConsoleHistory
  | Written
  | PageRequest
  | Resume
  | Ping
  | Pong;

/** A message's fields without its discriminant: what its encoder takes. */
export type Body<M extends Message> = Omit<M, 'type'>;
