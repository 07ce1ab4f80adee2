/**
 * The tern migration wire format (protocol 1.x): framing, message codecs and the PAGES hot path.
 * Layouts are documented byte by byte in docs/migration-protocol.md.
 */
export {
  PROTOCOL_MAJOR,
  PROTOCOL_MINOR,
  PROTOCOL_VERSION,
  MAGIC,
  MAGIC_TEXT,
  FrameType,
  FrameFlag,
  PageEncoding,
  Capability,
  CAPABILITY_NAMES,
  KNOWN_CAPABILITIES,
  FRAME_HEADER_BYTES,
  WIRE_PAGE_SIZE,
  ID_BYTES,
  DIGEST_BYTES,
  MAX_FRAME_PAYLOAD,
  MAX_STATE_BYTES,
  MAX_IMAGE_BYTES,
  MAX_BATCH_PAGES,
  MAX_ENCODED_PAGE_BYTES,
  MAX_NAME_BYTES,
  MAX_CONFIG_BYTES,
  MAX_REASON_TEXT_BYTES,
  MAX_REQUEST_PAGES,
  MAX_STREAMS,
  MAX_PAGE_RUNS,
  MAX_RUN_PAGES,
  PAGE_RUN_FIXED_BYTES,
  MAX_WARM_SAMPLES,
  MAX_WARM_SAMPLE_BYTES,
  MAX_CONSOLE_BYTES,
  MAX_PAGES_PAYLOAD,
  MAX_PAGES_COMPRESSED_PAYLOAD,
  frameTypeName,
  isFrameType,
  maxPayloadFor,
  senderOf,
  capabilityNames,
  formatVersion,
  negotiateVersion,
  type ProtocolVersion,
  type Sender,
} from './constants.js';
export { WireError, isWireError, type WireErrorCode, type WireErrorDetail } from './errors.js';
export { copyBytes } from './bytes.js';
export {
  FrameReader,
  decodeFrameHeader,
  encodeFrame,
  encodeFrameHeader,
  type Frame,
  type FrameHeader,
  type FramePieces,
  type FrameReaderOptions,
} from './frame.js';
export * from './messages.js';
export { decodeHello, encodeHello, decodeAccept, encodeAccept, decodeRefuse, encodeRefuse, checkMachineConfig } from './handshake.js';
export {
  PageBatchBuilder,
  PageBatchReader,
  decodePages,
  encodePages,
  type PageBatch,
  type PageEntry,
  type PageBatchReaderOptions,
} from './pages.js';
export {
  encodeAbort,
  decodeAbort,
  encodeRoundEnd,
  decodeRoundEnd,
  encodeState,
  encodeStateParts,
  decodeState,
  encodeDiscard,
  decodeDiscard,
  encodeWritten,
  decodeWritten,
  encodeComplete,
  decodeComplete,
  encodeCommitted,
  decodeCommitted,
  encodeActivated,
  decodeActivated,
  encodeResumedAt,
  decodeResumedAt,
  encodePausedAt,
  decodePausedAt,
  encodePageRequest,
  decodePageRequest,
  encodeResume,
  decodeResume,
  encodePing,
  decodePing,
  encodePong,
  decodePong,
} from './control.js';
export { encodePostcopyStats, decodePostcopyStats } from './postcopy-stats.js';
export { encodeImage, decodeImage } from './image.js';
export { encodeWarmTraffic, decodeWarmTraffic } from './warm-traffic.js';
export { encodeConsole, decodeConsole } from './console.js';
export { PAGE_RUN_HEAD_BYTES, writePageRunHead, decodePageRunHead, encodePageRun, decodePageRun, type PageRunHead } from './page-run.js';
export {
  CompressionCode,
  MIN_PAGES_PAYLOAD,
  encodePagesCompressed,
  encodePagesCompressedHead,
  decodePagesCompressed,
  type PagesCompressed,
} from './pages-compressed.js';
export { pageRunsFromMap, pageRunsFromList, forEachRunPage, runsContain, type PageRuns } from './page-runs.js';
export { decodeMessage, encodeMessage, type DecodeOptions } from './codec.js';
export { NO_SESSION, randomId, isZeroId, formatId, parseId, sha256, bytesEqual } from './ids.js';
