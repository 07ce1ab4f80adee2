/**
 * Compression of the page stream: whole PAGES payloads go as PAGES_COMPRESSED frames, LZ4 or
 * zstd. Node 20's zlib has neither, so they come from npm packages that ship prebuilt binaries
 * (no compiler needed to install): lz4-napi (LZ4 both ways), @mongodb-js/zstd (zstd compression,
 * on libuv's thread pool) and fzstd (zstd decompression in plain JS, synchronous, into a buffer of
 * the declared size). The destination decompresses synchronously so its receive path keeps its
 * frame order; a corrupt or hostile block is a WireError, never a crash or an oversized buffer.
 */
import { createRequire } from 'node:module';
import { CompressionCode, WireError } from '../wire/index.js';

export type CompressionAlgorithm = 'lz4' | 'zstd';

export const COMPRESSION_ALGORITHMS: readonly CompressionAlgorithm[] = ['lz4', 'zstd'];

/** QEMU's multifd-zstd-level default: speed over ratio, as a migration wants. */
export const ZSTD_LEVEL = 1;

export interface PageStreamCompressor {
  readonly algorithm: CompressionAlgorithm;
  readonly code: CompressionCode;
  /** Compresses a PAGES payload (off the main thread where the library can). */
  compress(data: Uint8Array): Promise<Uint8Array>;
  /**
   * Decompresses a block that must expand to exactly `rawLength` bytes (checked before any
   * buffer is sized from the block's own header). Throws WireError on anything else.
   */
  decompress(data: Uint8Array, rawLength: number): Uint8Array;
}

/** A compression library is missing or failed to load: a local error, not the peer's fault. */
export class CompressionUnavailableError extends Error {
  constructor(readonly algorithm: CompressionAlgorithm, cause: unknown) {
    super(`${algorithm} compression is not available on this host: ${cause instanceof Error ? cause.message : String(cause)}`);
    this.name = 'CompressionUnavailableError';
  }
}

interface Lz4Module {
  compress(data: Uint8Array): Promise<Buffer>;
  uncompressSync(data: Uint8Array): Buffer;
}
interface ZstdModule {
  compress(data: Buffer, level?: number): Promise<Buffer>;
}
interface FzstdModule {
  decompress(data: Uint8Array, out?: Uint8Array): Uint8Array;
}

const require = createRequire(import.meta.url);
const loaded = new Map<CompressionAlgorithm, PageStreamCompressor | CompressionUnavailableError>();

function corrupt(algorithm: CompressionAlgorithm, text: string): WireError {
  return new WireError('bad-value', `${algorithm} block ${text}`, { message: 'PAGES_COMPRESSED', field: 'data' });
}

function asBuffer(data: Uint8Array): Buffer {
  return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

function makeLz4(): PageStreamCompressor {
  const lz4 = require('lz4-napi') as Lz4Module;
  return {
    algorithm: 'lz4',
    code: CompressionCode.Lz4,
    compress: (data) => lz4.compress(asBuffer(data)),
    decompress(data, rawLength) {
      // lz4-napi's blocks start with the uncompressed size (u32 LE), and the library allocates
      // that much: check it against the bound we know before handing the block over.
      if (data.length < 5) throw corrupt('lz4', `of ${data.length} bytes is too short`);
      const declared = (data[0]! | (data[1]! << 8) | (data[2]! << 16) | (data[3]! << 24)) >>> 0;
      if (declared !== rawLength) throw corrupt('lz4', `declares ${declared} bytes, the frame ${rawLength}`);
      let out: Buffer;
      try {
        out = lz4.uncompressSync(data);
      } catch (e) {
        throw corrupt('lz4', `is corrupt: ${e instanceof Error ? e.message : String(e)}`);
      }
      if (out.length !== rawLength) throw corrupt('lz4', `expands to ${out.length} bytes, not ${rawLength}`);
      return out;
    },
  };
}

/**
 * Given the output buffer, fzstd allocates nothing from the frame header and throws rather than
 * write past it. The header is still checked: zstd magic, no dictionary, and a declared content
 * size (optional in zstd) equal to `rawLength`. A block that expands to less than rawLength
 * leaves zeros at the end, which the PAGES decoder then refuses like any other bad batch.
 */
function checkZstdHeader(d: Uint8Array, rawLength: number): void {
  if (d.length < 6 || d[0] !== 0x28 || d[1] !== 0xb5 || d[2] !== 0x2f || d[3] !== 0xfd) throw corrupt('zstd', 'does not start with a zstd frame');
  const flg = d[4]!;
  if ((flg & 0x08) !== 0) throw corrupt('zstd', 'has a reserved frame header bit set');
  if ((flg & 0x03) !== 0) throw corrupt('zstd', 'names a dictionary');
  const singleSegment = (flg >> 5) & 1;
  const fcf = flg >> 6;
  const size = fcf !== 0 ? 1 << fcf : singleSegment;
  if (size === 0) return; // no content size declared
  const at = 5 + (singleSegment ? 0 : 1);
  if (d.length < at + size) throw corrupt('zstd', 'ends inside its frame header');
  let declared = 0;
  for (let i = size - 1; i >= 0; i--) declared = declared * 256 + d[at + i]!;
  if (fcf === 1) declared += 256;
  if (declared !== rawLength) throw corrupt('zstd', `declares ${declared} bytes, the frame ${rawLength}`);
}

function makeZstd(): PageStreamCompressor {
  const zstd = require('@mongodb-js/zstd') as ZstdModule;
  const fzstd = require('fzstd') as FzstdModule;
  return {
    algorithm: 'zstd',
    code: CompressionCode.Zstd,
    compress: (data) => zstd.compress(asBuffer(data), ZSTD_LEVEL),
    decompress(data, rawLength) {
      checkZstdHeader(data, rawLength);
      const out = new Uint8Array(rawLength);
      try {
        fzstd.decompress(data, out); // throws rather than write past `out`
      } catch (e) {
        throw corrupt('zstd', `is corrupt: ${e instanceof Error ? e.message : String(e)}`);
      }
      return out;
    },
  };
}

/** The compressor for `algorithm`, loaded once; throws CompressionUnavailableError if its package is missing. */
export function compressor(algorithm: CompressionAlgorithm): PageStreamCompressor {
  let c = loaded.get(algorithm);
  if (c === undefined) {
    try {
      c = algorithm === 'lz4' ? makeLz4() : algorithm === 'zstd' ? makeZstd() : undefined;
      if (c === undefined) throw new Error(`unknown algorithm '${String(algorithm)}'`);
    } catch (e) {
      c = new CompressionUnavailableError(algorithm, e);
    }
    loaded.set(algorithm, c);
  }
  if (c instanceof CompressionUnavailableError) throw c;
  return c;
}

/** The compressor for a wire code, or undefined for an unknown code. */
export function compressorForCode(code: number): PageStreamCompressor | undefined {
  if (code === CompressionCode.Lz4) return compressor('lz4');
  if (code === CompressionCode.Zstd) return compressor('zstd');
  return undefined;
}

/** Can this host use `algorithm`? */
export function compressionAvailable(algorithm: CompressionAlgorithm): boolean {
  try {
    compressor(algorithm);
    return true;
  } catch {
    return false;
  }
}

/** Longest run of batches sent plain after batches that did not shrink. */
export const MAX_COMPRESSION_BACKOFF = 8;

/**
 * When to try compressing a batch. Guest memory that is random or already compressed does not
 * shrink, and compressing it only costs time: after a batch that did not shrink by at least
 * 1/32, the next 1 batch goes plain, after another miss 2, then 4, then 8 (at most); a batch that
 * shrinks resets it.
 */
export class CompressionBackoff {
  private skip = 0;
  private penalty = 0;
  /** Batches sent plain without trying. */
  skipped = 0;

  shouldTry(): boolean {
    if (this.skip === 0) return true;
    this.skip--;
    this.skipped++;
    return false;
  }

  /** The outcome of a try: `rawBytes` in, `compressedBytes` out. */
  record(rawBytes: number, compressedBytes: number): void {
    if (compressedBytes <= rawBytes - rawBytes / 32) {
      this.penalty = 0;
      return;
    }
    this.penalty = this.penalty === 0 ? 1 : Math.min(MAX_COMPRESSION_BACKOFF, this.penalty * 2);
    this.skip = this.penalty;
  }
}
