/** 16-byte identifiers (VM uuid, session id) and SHA-256 digests as they travel on the wire. */
import { createHash, randomBytes } from 'node:crypto';
import { DIGEST_BYTES, ID_BYTES } from './constants.js';
import { hex, isAllZero } from './bytes.js';

export const NO_SESSION: Uint8Array = new Uint8Array(ID_BYTES);

export function randomId(): Uint8Array {
  return new Uint8Array(randomBytes(ID_BYTES));
}

export function isZeroId(id: Uint8Array): boolean {
  return isAllZero(id);
}

/** 'xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx'. */
export function formatId(id: Uint8Array): string {
  const h = hex(id);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** Parses the 36-character form (or 32 hex digits); undefined if it is not one. */
export function parseId(s: string): Uint8Array | undefined {
  const h = s.replace(/-/g, '');
  if (!/^[0-9a-fA-F]{32}$/.test(h)) return undefined;
  const out = new Uint8Array(ID_BYTES);
  for (let i = 0; i < ID_BYTES; i++) out[i] = parseInt(h.slice(2 * i, 2 * i + 2), 16);
  return out;
}

export function sha256(data: Uint8Array): Uint8Array {
  const d = new Uint8Array(createHash('sha256').update(data).digest());
  if (d.length !== DIGEST_BYTES) throw new Error('sha256: unexpected digest length');
  return d;
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
