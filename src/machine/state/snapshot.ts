import { createHash } from 'node:crypto';
import { StateFormatError, StateReader, StateWriter, type Stateful } from './codec.js';

/**
 * The machine-state container: every Stateful component's section, versioned, with a SHA-256
 * over the whole so a corrupt state is refused before anything is loaded. Layout in
 * docs/machine-state.md.
 */
export const STATE_MAGIC = 'TERNSTAT';
export const STATE_FORMAT_VERSION = 1;
const MAX_SECTIONS = 64;
const MAX_SECTION_BYTES = 16 * 1024 * 1024;
const DIGEST_BYTES = 32;

export interface StateSection {
  readonly id: string;
  readonly version: number;
  readonly data: Uint8Array;
}

export function encodeSnapshot(parts: readonly Stateful[]): Uint8Array {
  const w = new StateWriter(64 * 1024);
  w.raw(new TextEncoder().encode(STATE_MAGIC));
  w.u32(STATE_FORMAT_VERSION);
  w.u32(parts.length);
  for (const p of parts) {
    const sw = new StateWriter();
    p.saveState(sw);
    w.string(p.stateId);
    w.u32(p.stateVersion);
    w.bytes(sw.finish());
  }
  const body = w.finish();
  const digest = createHash('sha256').update(body).digest();
  const out = new Uint8Array(body.length + DIGEST_BYTES);
  out.set(body, 0);
  out.set(digest, body.length);
  return out;
}

/** Parses and checks the container; throws StateFormatError on anything wrong. */
export function decodeSnapshot(bytes: Uint8Array): StateSection[] {
  if (bytes.length < STATE_MAGIC.length + 8 + DIGEST_BYTES) throw new StateFormatError(`${bytes.length} bytes is too short to be a machine state`);
  const magic = new TextDecoder().decode(bytes.subarray(0, STATE_MAGIC.length));
  if (magic !== STATE_MAGIC) throw new StateFormatError(`not a tern machine state (magic ${JSON.stringify(magic)})`);
  const body = bytes.subarray(0, bytes.length - DIGEST_BYTES);
  const digest = createHash('sha256').update(body).digest();
  const stored = bytes.subarray(bytes.length - DIGEST_BYTES);
  if (!digest.equals(stored)) throw new StateFormatError('checksum mismatch: the state is corrupt');
  const r = new StateReader(body);
  r.raw(STATE_MAGIC.length);
  const version = r.u32();
  if (version !== STATE_FORMAT_VERSION) {
    throw new StateFormatError(`state format version ${version} is not supported by this tern (it reads version ${STATE_FORMAT_VERSION})`);
  }
  const count = r.u32();
  if (count > MAX_SECTIONS) r.fail(`${count} sections exceeds the limit of ${MAX_SECTIONS}`);
  const sections: StateSection[] = [];
  for (let i = 0; i < count; i++) {
    const id = r.string(64);
    const v = r.u32();
    const data = r.bytes(MAX_SECTION_BYTES);
    if (sections.some((s) => s.id === id)) r.fail(`section '${id}' appears twice`);
    sections.push({ id, version: v, data });
  }
  r.end();
  return sections;
}

/**
 * Restores every part from its section. Checks that the sections match the parts exactly and
 * that no section is newer than its part before loading any of them.
 */
export function restoreSnapshot(bytes: Uint8Array, parts: readonly Stateful[]): void {
  const sections = decodeSnapshot(bytes);
  const byId = new Map(sections.map((s) => [s.id, s]));
  for (const p of parts) {
    const s = byId.get(p.stateId);
    if (s === undefined) throw new StateFormatError('section is missing', p.stateId);
    if (s.version > p.stateVersion || s.version === 0) {
      throw new StateFormatError(`version ${s.version} is not supported (this tern reads up to ${p.stateVersion})`, p.stateId);
    }
  }
  for (const s of sections) {
    if (!parts.some((p) => p.stateId === s.id)) throw new StateFormatError('unknown section for this machine', s.id);
  }
  for (const p of parts) {
    const s = byId.get(p.stateId)!;
    const r = new StateReader(s.data, p.stateId);
    p.restoreState(r, s.version);
    r.end();
  }
}
