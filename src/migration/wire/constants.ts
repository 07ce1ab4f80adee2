/**
 * Numbers that define the tern migration wire format, protocol 1.0. Every layout, bound and
 * code here is documented byte by byte in docs/migration-protocol.md; change both together.
 */

export const PROTOCOL_MAJOR = 1;
/**
 * 1.1 added POSTCOPY_STATS (0x23), PAGES_COMPRESSED (0x14) and the lz4 / zstd capability bits;
 * 1.2 added IMAGE (0x15) and the warm-image capability bit;
 * 1.3 added RESUMED_AT (0x24) and the resumed-at capability bit;
 * 1.4 added PAUSED_AT (0x25) and the paused-at capability bit;
 * 1.5 added PAGE_RUN (0x16) and the page-runs capability bit;
 * 1.6 added WARM_TRAFFIC (0x17) and the warm-traffic capability bit;
 * 1.7 added CONSOLE (0x18) and the console-precopy capability bit;
 * 1.8 added WRITTEN (0x19) and the written-pages capability bit.
 */
export const PROTOCOL_MINOR = 8;

export interface ProtocolVersion {
  readonly major: number;
  readonly minor: number;
}

export const PROTOCOL_VERSION: ProtocolVersion = Object.freeze({ major: PROTOCOL_MAJOR, minor: PROTOCOL_MINOR });

/**
 * First 8 payload bytes of HELLO, ACCEPT and REFUSE. Frozen across all versions (the version
 * travels in the next 4 bytes), so a peer of another version is told apart from a wrong peer.
 */
export const MAGIC_TEXT = 'TERNMIGR';
export const MAGIC: ReadonlyArray<number> = Object.freeze([0x54, 0x45, 0x52, 0x4e, 0x4d, 0x49, 0x47, 0x52]);

/** Frame type codes (byte 0 of every frame header). */
export const enum FrameType {
  Hello = 0x01,
  Accept = 0x02,
  Refuse = 0x03,
  Abort = 0x04,
  Pages = 0x10,
  RoundEnd = 0x11,
  State = 0x12,
  Discard = 0x13,
  /** Since 1.1: a PAGES payload compressed as a whole (needs the compression capability). */
  PagesCompressed = 0x14,
  /** Since 1.2: the guest image the VM booted from, for the destination's warm-up (warm-image capability). */
  Image = 0x15,
  /** Since 1.5 (page-runs): consecutive raw pages, their bytes exactly as in guest RAM. */
  PageRun = 0x16,
  /** Since 1.6 (warm-traffic): the first bytes clients sent to the VM's ports, for the destination's warm-up. */
  WarmTraffic = 0x17,
  /** Since 1.7 (console-precopy): console history sent live, so the state in the downtime carries only its tail. */
  Console = 0x18,
  /** Since 1.8 (written-pages): the pages the guest has written, sent before round 1 so the destination backs them first. */
  Written = 0x19,
  Complete = 0x20,
  Committed = 0x21,
  Activated = 0x22,
  /** Since 1.1: the destination's post-copy figures (network faults, latency, written pages). */
  PostcopyStats = 0x23,
  /** Since 1.3: the destination's boot id and CLOCK_MONOTONIC at the vCPU resume (resumed-at capability). */
  ResumedAt = 0x24,
  /** Since 1.4: the source's boot id, its CLOCK_MONOTONIC at the vCPU pause and at sending (paused-at capability). */
  PausedAt = 0x25,
  PageRequest = 0x30,
  Resume = 0x31,
  Ping = 0x40,
  Pong = 0x41,
}

/** Bits of the frame header's flags byte. Every bit not allowed for a type must be zero. */
export const enum FrameFlag {
  /** PAGES only: this batch answers a PAGE_REQUEST (post-copy network fault). */
  Demand = 0x01,
}

/** Encoding of one page entry in a PAGES batch. */
export const enum PageEncoding {
  /** WIRE_PAGE_SIZE bytes of page contents follow. */
  Raw = 0,
  /** The page is all zero; no data follows. */
  Zero = 1,
  /** XBZRLE-style delta against the previous version the receiver holds: u32 length + bytes. */
  Delta = 2,
  /** Compressed page contents: u32 length + bytes. */
  Compressed = 3,
}

/** Capability bits (HELLO offers, ACCEPT grants a subset). Unknown bits are ignored, not refused. */
export const enum Capability {
  ZeroPages = 1 << 0,
  Xbzrle = 1 << 1,
  Compression = 1 << 2,
  MultiStream = 1 << 3,
  PostcopyRecovery = 1 << 4,
  /** Since 1.1: PAGES_COMPRESSED may use LZ4 (algorithm 1). */
  Lz4 = 1 << 5,
  /** Since 1.1: PAGES_COMPRESSED may use zstd (algorithm 2). */
  Zstd = 1 << 6,
  /**
   * Post-copy: at the switch the destination installs the pages the loaded balloon state marks
   * discarded as zero pages, so the source neither pushes them nor serves them (docs/postcopy.md).
   */
  BalloonPages = 1 << 7,
  /**
   * Since 1.2: the source sends IMAGE, the guest image the VM booted from, so the destination can
   * run it on its standby vCPU thread during pre-copy and resume the VM on compiled code.
   */
  WarmImage = 1 << 8,
  /**
   * Since 1.3: the destination sends RESUMED_AT before ACTIVATED; a source on the same machine
   * (same boot id) measures the downtime on the one clock both read, not as an estimate.
   */
  ResumedAt = 1 << 9,
  /**
   * Since 1.4: the source sends PAUSED_AT before STATE; the destination moves the guest clock
   * forward by the switchover pause as it resumes the VM (guest clock 'continuous'). Offered only
   * by a source that wants it; a destination that does not grant it resumes the clock where it stopped.
   */
  PausedAt = 1 << 10,
  /**
   * Since 1.5: the source may send runs of consecutive raw pages as PAGE_RUN frames (pre-copy,
   * one stream), which the destination reads from the socket straight into guest RAM.
   */
  PageRuns = 1 << 11,
  /**
   * Since 1.6 (with warm-image): the source sends WARM_TRAFFIC after IMAGE, the first bytes
   * clients sent on connections to the VM's vsock ports, which the destination's warm-up sends
   * to the throwaway boot of the image so the guest's request paths run compiled at the resume.
   */
  WarmTraffic = 1 << 12,
  /**
   * Since 1.7: the source sends the VM's console history live in CONSOLE frames (all of it
   * first, then what was printed since, after each round), and the machine state it saves at the
   * pause carries only what was printed after the last of them; the destination joins the two.
   * Up to 1 MiB of history no longer travels inside the downtime.
   */
  ConsolePrecopy = 1 << 13,
  /**
   * Since 1.8: right after ACCEPT (after IMAGE and WARM_TRAFFIC), the source sends WRITTEN, the
   * pages that may hold data (every page but those the guest never wrote). A destination that
   * allocated fresh RAM writes those pages while it waits for round 1, so the kernel's page
   * faults are not taken while pages arrive. Pre-copy and hybrid, new sessions only.
   */
  WrittenPages = 1 << 14,
}

export const CAPABILITY_NAMES: ReadonlyArray<readonly [number, string]> = [
  [Capability.ZeroPages, 'zero-pages'],
  [Capability.Xbzrle, 'xbzrle'],
  [Capability.Compression, 'compression'],
  [Capability.MultiStream, 'multi-stream'],
  [Capability.PostcopyRecovery, 'postcopy-recovery'],
  [Capability.Lz4, 'lz4'],
  [Capability.Zstd, 'zstd'],
  [Capability.BalloonPages, 'balloon-pages'],
  [Capability.WarmImage, 'warm-image'],
  [Capability.ResumedAt, 'resumed-at'],
  [Capability.PausedAt, 'paused-at'],
  [Capability.PageRuns, 'page-runs'],
  [Capability.WarmTraffic, 'warm-traffic'],
  [Capability.ConsolePrecopy, 'console-precopy'],
  [Capability.WrittenPages, 'written-pages'],
];

/** Capability bits this version defines. */
export const KNOWN_CAPABILITIES = 0x7fff;

export const FRAME_HEADER_BYTES = 8;
/** The page size of protocol 1.x; a raw PAGES entry carries exactly this many bytes. */
export const WIRE_PAGE_SIZE = 4096;
export const ID_BYTES = 16;
export const DIGEST_BYTES = 32;

export const MAX_STATE_BYTES = 16 * 1024 * 1024;
/** The largest guest image an IMAGE frame carries (tern's guests are tens of KiB). */
export const MAX_IMAGE_BYTES = 8 * 1024 * 1024;
/** No frame payload may exceed this; checked from the header before anything is buffered. */
export const MAX_FRAME_PAYLOAD = MAX_STATE_BYTES + 4096;
export const MAX_BATCH_PAGES = 1024;
/** A delta or compressed entry larger than a page is pointless: send the page raw instead. */
export const MAX_ENCODED_PAGE_BYTES = WIRE_PAGE_SIZE;
export const MAX_NAME_BYTES = 255;
export const MAX_CONFIG_BYTES = 64 * 1024;
export const MAX_REASON_TEXT_BYTES = 1024;
export const MAX_REQUEST_PAGES = 64;
export const MAX_STREAMS = 16;

export const HELLO_FIXED_BYTES = 70;
export const ACCEPT_BYTES = 32;
export const REFUSE_FIXED_BYTES = 16;
export const ABORT_FIXED_BYTES = 4;
export const PAGES_FIXED_BYTES = 12;
export const ROUND_END_BYTES = 28;
export const STATE_FIXED_BYTES = 36;
export const RESUME_FIXED_BYTES = 28;
export const DISCARD_FIXED_BYTES = 12;
export const PAGE_REQUEST_FIXED_BYTES = 8;
export const PAGES_COMPRESSED_FIXED_BYTES = 8;
export const POSTCOPY_STATS_BYTES = 24;
/** RESUMED_AT: boot id (16) + resumedUs (8). */
export const RESUMED_AT_BYTES = 24;
/** PAUSED_AT: boot id (16) + pausedUs (8) + sentUs (8). */
export const PAUSED_AT_BYTES = 32;
export const IMAGE_FIXED_BYTES = DIGEST_BYTES + 4;
/** PAGE_RUN: round u32 + first page u32 + count u32, then count pages of bytes. */
export const PAGE_RUN_FIXED_BYTES = 12;
/** Pages in one PAGE_RUN at most (1 MiB of data). */
export const MAX_RUN_PAGES = 256;
/** WARM_TRAFFIC: count u16 + reserved u16, then per sample vmPort u32 + length u16 + bytes. */
export const WARM_TRAFFIC_FIXED_BYTES = 4;
export const WARM_SAMPLE_FIXED_BYTES = 6;
/** Samples in one WARM_TRAFFIC at most (one per guest port). */
export const MAX_WARM_SAMPLES = 16;
/** Bytes of one sample at most: the start of a connection's client→VM stream. */
export const MAX_WARM_SAMPLE_BYTES = 512;
/** CONSOLE: end u64, then the bytes. */
export const CONSOLE_FIXED_BYTES = 8;
/** Console history in one CONSOLE frame at most: what a machine keeps (machine/console-log.ts). */
export const MAX_CONSOLE_BYTES = 1024 * 1024;

/** Worst-case entry: page u32 + encoding u8 + length u32 + a page of bytes. */
export const MAX_PAGE_ENTRY_BYTES = 4 + 1 + 4 + MAX_ENCODED_PAGE_BYTES;
export const MAX_PAGES_PAYLOAD = PAGES_FIXED_BYTES + MAX_BATCH_PAGES * MAX_PAGE_ENTRY_BYTES;
/** A compressed batch is sent only when smaller than the batch, so this bounds it. */
export const MAX_PAGES_COMPRESSED_PAYLOAD = PAGES_COMPRESSED_FIXED_BYTES + MAX_PAGES_PAYLOAD;
/** Runs that fit the frame bound: enough for any set over 2^22 pages (16 GiB of 4 KiB pages). */
export const MAX_PAGE_RUNS = Math.floor((MAX_FRAME_PAYLOAD - RESUME_FIXED_BYTES) / 8);

const NAMES: { [t: number]: string } = {
  [FrameType.Hello]: 'HELLO',
  [FrameType.Accept]: 'ACCEPT',
  [FrameType.Refuse]: 'REFUSE',
  [FrameType.Abort]: 'ABORT',
  [FrameType.Pages]: 'PAGES',
  [FrameType.RoundEnd]: 'ROUND_END',
  [FrameType.State]: 'STATE',
  [FrameType.Discard]: 'DISCARD',
  [FrameType.PagesCompressed]: 'PAGES_COMPRESSED',
  [FrameType.Image]: 'IMAGE',
  [FrameType.PageRun]: 'PAGE_RUN',
  [FrameType.WarmTraffic]: 'WARM_TRAFFIC',
  [FrameType.Console]: 'CONSOLE',
  [FrameType.Written]: 'WRITTEN',
  [FrameType.Complete]: 'COMPLETE',
  [FrameType.Committed]: 'COMMITTED',
  [FrameType.Activated]: 'ACTIVATED',
  [FrameType.PostcopyStats]: 'POSTCOPY_STATS',
  [FrameType.ResumedAt]: 'RESUMED_AT',
  [FrameType.PausedAt]: 'PAUSED_AT',
  [FrameType.PageRequest]: 'PAGE_REQUEST',
  [FrameType.Resume]: 'RESUME',
  [FrameType.Ping]: 'PING',
  [FrameType.Pong]: 'PONG',
};

/** Largest payload each type may carry; the reader rejects a longer frame from its header. */
const MAX_PAYLOAD: { [t: number]: number } = {
  [FrameType.Hello]: HELLO_FIXED_BYTES + MAX_NAME_BYTES + MAX_CONFIG_BYTES,
  [FrameType.Accept]: ACCEPT_BYTES,
  [FrameType.Refuse]: REFUSE_FIXED_BYTES + MAX_REASON_TEXT_BYTES,
  [FrameType.Abort]: ABORT_FIXED_BYTES + MAX_REASON_TEXT_BYTES,
  [FrameType.Pages]: MAX_PAGES_PAYLOAD,
  [FrameType.RoundEnd]: ROUND_END_BYTES,
  [FrameType.State]: STATE_FIXED_BYTES + MAX_STATE_BYTES,
  [FrameType.Discard]: DISCARD_FIXED_BYTES + 8 * MAX_PAGE_RUNS,
  [FrameType.PagesCompressed]: MAX_PAGES_COMPRESSED_PAYLOAD,
  [FrameType.Image]: IMAGE_FIXED_BYTES + MAX_IMAGE_BYTES,
  [FrameType.PageRun]: PAGE_RUN_FIXED_BYTES + MAX_RUN_PAGES * WIRE_PAGE_SIZE,
  [FrameType.WarmTraffic]: WARM_TRAFFIC_FIXED_BYTES + MAX_WARM_SAMPLES * (WARM_SAMPLE_FIXED_BYTES + MAX_WARM_SAMPLE_BYTES),
  [FrameType.Console]: CONSOLE_FIXED_BYTES + MAX_CONSOLE_BYTES,
  [FrameType.Written]: DISCARD_FIXED_BYTES + 8 * MAX_PAGE_RUNS,
  [FrameType.Complete]: 8 + DIGEST_BYTES,
  [FrameType.Committed]: 4 + DIGEST_BYTES,
  [FrameType.Activated]: 8,
  [FrameType.PostcopyStats]: POSTCOPY_STATS_BYTES,
  [FrameType.ResumedAt]: RESUMED_AT_BYTES,
  [FrameType.PausedAt]: PAUSED_AT_BYTES,
  [FrameType.PageRequest]: PAGE_REQUEST_FIXED_BYTES + 4 * MAX_REQUEST_PAGES,
  [FrameType.Resume]: RESUME_FIXED_BYTES + 8 * MAX_PAGE_RUNS,
  [FrameType.Ping]: 8,
  [FrameType.Pong]: 8,
};

/** Flag bits each type may carry. */
const ALLOWED_FLAGS: { [t: number]: number } = { [FrameType.Pages]: FrameFlag.Demand, [FrameType.PagesCompressed]: FrameFlag.Demand };

/** Which side sends each type; the reader can enforce it. */
export type Sender = 'source' | 'destination' | 'either';

const SENDERS: { [t: number]: Sender } = {
  [FrameType.Hello]: 'source',
  [FrameType.Accept]: 'destination',
  [FrameType.Refuse]: 'destination',
  [FrameType.Abort]: 'either',
  [FrameType.Pages]: 'source',
  [FrameType.RoundEnd]: 'source',
  [FrameType.State]: 'source',
  [FrameType.Discard]: 'source',
  [FrameType.PagesCompressed]: 'source',
  [FrameType.Image]: 'source',
  [FrameType.PageRun]: 'source',
  [FrameType.WarmTraffic]: 'source',
  [FrameType.Console]: 'source',
  [FrameType.Written]: 'source',
  [FrameType.Complete]: 'source',
  [FrameType.Committed]: 'destination',
  [FrameType.Activated]: 'destination',
  [FrameType.PostcopyStats]: 'destination',
  [FrameType.ResumedAt]: 'destination',
  [FrameType.PausedAt]: 'source',
  [FrameType.PageRequest]: 'destination',
  [FrameType.Resume]: 'destination',
  [FrameType.Ping]: 'either',
  [FrameType.Pong]: 'either',
};

export function isFrameType(t: number): t is FrameType {
  return NAMES[t] !== undefined;
}

/** 'PAGES' for a known type, 'type 0x7f' otherwise. */
export function frameTypeName(t: number): string {
  return NAMES[t] ?? `type 0x${t.toString(16).padStart(2, '0')}`;
}

export function maxPayloadFor(t: FrameType): number {
  return MAX_PAYLOAD[t] ?? 0;
}

export function allowedFlagsFor(t: FrameType): number {
  return ALLOWED_FLAGS[t] ?? 0;
}

export function senderOf(t: FrameType): Sender {
  return SENDERS[t] ?? 'either';
}

export function capabilityNames(mask: number): string[] {
  const out: string[] = [];
  for (const [bit, name] of CAPABILITY_NAMES) if ((mask & bit) !== 0) out.push(name);
  const unknown = (mask & ~KNOWN_CAPABILITIES) >>> 0;
  if (unknown !== 0) out.push(`unknown(0x${unknown.toString(16)})`);
  return out;
}

export function formatVersion(v: ProtocolVersion): string {
  return `${v.major}.${v.minor}`;
}

/** The version a session runs at: same major required, lower minor wins. Undefined if majors differ. */
export function negotiateVersion(local: ProtocolVersion, peer: ProtocolVersion): ProtocolVersion | undefined {
  if (local.major !== peer.major) return undefined;
  return { major: local.major, minor: Math.min(local.minor, peer.minor) };
}
