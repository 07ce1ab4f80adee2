/**
 * Which encodings a migration uses: the source offers capability bits for what it was asked to
 * use, the destination grants those it can decode, and the source builds its encoders from the
 * grant. Also the report figures, so source.ts only wires these in.
 */
import type { CompressionReport, XbzrleReport } from '../report.js';
import { Capability } from '../wire/index.js';
import { compressionAvailable, compressor, type CompressionAlgorithm } from './compress.js';
import { XbzrleEncoder } from './xbzrle.js';

export interface EncodingOptions {
  /** XBZRLE with a page cache of this many bytes; undefined: off. */
  readonly xbzrleCacheBytes?: number;
  /** Compress the page stream; undefined: off. */
  readonly compression?: CompressionAlgorithm;
}

const ALGORITHM_BIT: { readonly [a in CompressionAlgorithm]: number } = { lz4: Capability.Lz4, zstd: Capability.Zstd };

/** HELLO capability bits for these options (besides zero pages, which the caller adds). */
export function offeredCapabilities(o: EncodingOptions): number {
  let caps = 0;
  if (o.xbzrleCacheBytes !== undefined) caps |= Capability.Xbzrle;
  if (o.compression !== undefined) caps |= Capability.Compression | ALGORITHM_BIT[o.compression];
  return caps;
}

/** Destination: the encoding bits of an offer that this host decodes (a subset of `offered`). */
export function grantedEncodings(offered: number): number {
  let g = offered & Capability.Xbzrle;
  if ((offered & Capability.Compression) !== 0) {
    for (const a of ['lz4', 'zstd'] as const) {
      if ((offered & ALGORITHM_BIT[a]) !== 0 && compressionAvailable(a)) g |= ALGORITHM_BIT[a];
    }
    if (g & (Capability.Lz4 | Capability.Zstd)) g |= Capability.Compression;
  }
  return g;
}

/** Destination: may PAGES_COMPRESSED use this algorithm? */
export function algorithmGranted(granted: number, a: CompressionAlgorithm): boolean {
  return (granted & Capability.Compression) !== 0 && (granted & ALGORITHM_BIT[a]) !== 0;
}

/** The source's encoders for a session, built from what the destination granted. */
export class SourceEncodings {
  xbzrle: XbzrleEncoder | undefined;
  /** The round after which the XBZRLE fallback turned XBZRLE on. */
  private fallbackRound: number | undefined;
  private readonly compression: CompressionAlgorithm | undefined;

  /** Throws an Error naming what the destination did not grant. */
  constructor(o: EncodingOptions, private readonly granted: number, private readonly ramPages: number, peer: string) {
    if (o.xbzrleCacheBytes !== undefined) {
      if ((granted & Capability.Xbzrle) === 0) throw new Error(`destination ${peer} does not take XBZRLE delta pages`);
      this.xbzrle = new XbzrleEncoder(o.xbzrleCacheBytes, ramPages);
    }
    if (o.compression !== undefined) {
      if (!algorithmGranted(granted, o.compression)) throw new Error(`destination ${peer} does not take ${o.compression}-compressed pages`);
      compressor(o.compression); // load it now: a missing package fails the reservation, not a round
      this.compression = o.compression;
    }
  }

  /** For PageSender. */
  get encodings(): { xbzrle?: XbzrleEncoder; compressor?: ReturnType<typeof compressor> } {
    return {
      ...(this.xbzrle !== undefined ? { xbzrle: this.xbzrle } : {}),
      ...(this.compression !== undefined ? { compressor: compressor(this.compression) } : {}),
    };
  }

  /** The destination takes deltas and XBZRLE is not on yet: the fallback can turn it on. */
  get canFallBackToXbzrle(): boolean {
    return this.xbzrle === undefined && (this.granted & Capability.Xbzrle) !== 0;
  }

  /** Turns XBZRLE on after `round` (the fallback); returns the encoder for the senders. */
  fallBackToXbzrle(round: number, cacheBytes: number): XbzrleEncoder {
    this.fallbackRound = round;
    return (this.xbzrle = new XbzrleEncoder(cacheBytes, this.ramPages));
  }

  xbzrleReport(): XbzrleReport | undefined {
    const s = this.xbzrle?.stats();
    return s === undefined ? undefined : { ...s, ...(this.fallbackRound !== undefined ? { fallbackRound: this.fallbackRound } : {}) };
  }

  compressionReport(inputBytes: number, outputBytes: number, skippedBatches: number): CompressionReport | undefined {
    if (this.compression === undefined) return undefined;
    return { algorithm: this.compression, inputBytes, outputBytes, ratio: outputBytes > 0 ? Math.round((inputBytes / outputBytes) * 1000) / 1000 : 1, skippedBatches };
  }
}
