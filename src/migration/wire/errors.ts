/**
 * The one error type the wire layer throws. Decoders and the frame reader throw nothing else,
 * so a caller can tell a misbehaving peer (WireError: abort the session) from a local bug.
 */
export type WireErrorCode =
  /** The peer's first frame is not a tern migration handshake: a wrong peer. */
  | 'bad-magic'
  /** The peer speaks a different major version of the protocol. */
  | 'bad-version'
  /** A frame length, string, blob or run list exceeds its bound. */
  | 'oversized'
  /** A frame type code this version does not define. */
  | 'unknown-type'
  /** A frame type that this peer may not send here (direction or handshake order). */
  | 'unexpected-type'
  /** A flag bit or reserved field that must be zero is not. */
  | 'reserved-bits'
  /** A payload (or the stream) ends before a fixed-size field. */
  | 'truncated'
  /** A fixed-layout payload has bytes after its last field. */
  | 'trailing-bytes'
  /** A count or declared length disagrees with the payload length, or is outside its bounds. */
  | 'bad-count'
  /** A field holds a value outside its domain (enum code, page number, size, ordering). */
  | 'bad-value'
  /** A string is not valid UTF-8. */
  | 'bad-text'
  /** A checksum does not match the bytes it covers. */
  | 'bad-digest'
  /** A structured field (the machine config JSON) does not have the required shape. */
  | 'malformed';

export interface WireErrorDetail {
  /** The message (frame type) name, e.g. 'PAGES', when known. */
  readonly message?: string;
  /** The offending field, e.g. 'count' or 'entry[3].encoding'. */
  readonly field?: string;
  /** For 'bad-version': the version the peer announced. */
  readonly peerVersion?: { readonly major: number; readonly minor: number };
}

export class WireError extends Error {
  readonly code: WireErrorCode;
  readonly messageType: string | undefined;
  readonly field: string | undefined;
  readonly peerVersion: { readonly major: number; readonly minor: number } | undefined;

  constructor(code: WireErrorCode, text: string, detail: WireErrorDetail = {}) {
    const where = detail.message !== undefined
      ? detail.field !== undefined ? `${detail.message}.${detail.field}: ` : `${detail.message}: `
      : '';
    super(`tern migration wire (${code}): ${where}${text}`);
    this.name = 'WireError';
    this.code = code;
    this.messageType = detail.message;
    this.field = detail.field;
    this.peerVersion = detail.peerVersion;
  }
}

export function isWireError(e: unknown): e is WireError {
  return e instanceof WireError;
}
