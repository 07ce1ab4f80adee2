/**
 * HELLO, ACCEPT and REFUSE: the first frame in each direction. All three start with the same
 * 12-byte prefix {magic "TERNMIGR", major u16, minor u16}, frozen across versions, so a peer of
 * another major is reported as such instead of as garbage.
 */
import {
  ACCEPT_BYTES,
  Capability,
  FrameType,
  HELLO_FIXED_BYTES,
  ID_BYTES,
  MAGIC,
  MAX_CONFIG_BYTES,
  MAX_NAME_BYTES,
  MAX_REASON_TEXT_BYTES,
  MAX_STREAMS,
  PROTOCOL_VERSION,
  REFUSE_FIXED_BYTES,
  WIRE_PAGE_SIZE,
  formatVersion,
  type ProtocolVersion,
} from './constants.js';
import { FrameWriter, PayloadReader, checkBytes, checkU32, checkU64, isAllZero, utf8Bytes, utf8BytesTruncated } from './bytes.js';
import { WireError } from './errors.js';
import {
  MIGRATION_MODES,
  REFUSE_REASONS,
  type Accept,
  type Body,
  type Hello,
  type MachineConfig,
  type Refuse,
} from './messages.js';

const MAX_PAGES = 0xffff_ffff;

function writePrefix(w: FrameWriter, v: ProtocolVersion): void {
  w.raw(MAGIC).u16(v.major).u16(v.minor);
}

function readPrefix(r: PayloadReader): ProtocolVersion {
  const magic = r.fixed(MAGIC.length, 'magic');
  for (let i = 0; i < MAGIC.length; i++) {
    if (magic[i] !== MAGIC[i]) r.fail('bad-magic', 'magic', `handshake magic is not "TERNMIGR": the peer does not speak the tern migration protocol`);
  }
  const major = r.u16('version.major');
  const minor = r.u16('version.minor');
  if (major !== PROTOCOL_VERSION.major) {
    throw new WireError(
      'bad-version',
      `peer speaks tern migration protocol ${major}.${minor}; this host speaks ${formatVersion(PROTOCOL_VERSION)}`,
      { message: r.message, field: 'version', peerVersion: { major, minor } },
    );
  }
  return { major, minor };
}

function checkVersion(message: string, v: ProtocolVersion): void {
  if (!Number.isInteger(v.major) || v.major < 0 || v.major > 0xffff || !Number.isInteger(v.minor) || v.minor < 0 || v.minor > 0xffff) {
    throw new WireError('bad-value', `${v.major}.${v.minor} is not a u16.u16 version`, { message, field: 'version' });
  }
}

// ---- HELLO ----------------------------------------------------------------------------------

/** Checks the shape of the parsed config JSON; unknown keys are kept. */
export function checkMachineConfig(v: unknown, message = 'HELLO'): MachineConfig {
  const bad = (field: string, text: string): never => {
    throw new WireError('malformed', text, { message, field });
  };
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return bad('config', 'must be a JSON object');
  const o = v as { [k: string]: unknown };
  if (typeof o['imageDigest'] !== 'string' || o['imageDigest'].length === 0) bad('config.imageDigest', 'must be a non-empty string');
  if (typeof o['bootArgs'] !== 'string') bad('config.bootArgs', 'must be a string');
  const devices = o['devices'];
  if (!Array.isArray(devices)) return bad('config.devices', 'must be an array');
  for (let i = 0; i < devices.length; i++) {
    const d: unknown = devices[i];
    if (typeof d !== 'object' || d === null || Array.isArray(d)) bad(`config.devices[${i}]`, 'must be an object');
    const kind = (d as { [k: string]: unknown })['kind'];
    if (typeof kind !== 'string' || kind.length === 0) bad(`config.devices[${i}].kind`, 'must be a non-empty string');
  }
  return o as MachineConfig;
}

function checkHelloFields(m: Body<Hello>, fail: (field: string, text: string) => never): void {
  if (isAllZero(m.vmId)) fail('vmId', 'is all zero (the nil uuid)');
  if (m.pageSize !== WIRE_PAGE_SIZE) fail('pageSize', `is ${m.pageSize}; protocol 1.x pages are ${WIRE_PAGE_SIZE} bytes`);
  if (m.ramBytes === 0 || m.ramBytes % WIRE_PAGE_SIZE !== 0) fail('ramBytes', `${m.ramBytes} is not a positive multiple of the page size`);
  if (m.ramBytes / WIRE_PAGE_SIZE > MAX_PAGES) fail('ramBytes', `${m.ramBytes} is more than 2^32-1 pages`);
  if (m.streamCount < 1 || m.streamCount > MAX_STREAMS) fail('streamCount', `${m.streamCount} is outside 1..${MAX_STREAMS}`);
  if (m.streamIndex >= m.streamCount) fail('streamIndex', `${m.streamIndex} is not below streamCount ${m.streamCount}`);
  if (m.streamCount > 1 && (m.capabilities & Capability.MultiStream) === 0) fail('streamCount', `${m.streamCount} streams without the multi-stream capability`);
  if (m.streamIndex > 0 && isAllZero(m.sessionId)) fail('sessionId', `is zero on stream ${m.streamIndex}; a joining stream names its session`);
}

export function encodeHello(m: Body<Hello>): Uint8Array {
  const msg = 'HELLO';
  const fail = (field: string, text: string): never => {
    throw new WireError('bad-value', text, { message: msg, field });
  };
  checkVersion(msg, m.version);
  checkBytes(msg, 'vmId', m.vmId, ID_BYTES);
  checkBytes(msg, 'sessionId', m.sessionId, ID_BYTES);
  checkU32(msg, 'capabilities', m.capabilities);
  checkU32(msg, 'pageSize', m.pageSize);
  checkU64(msg, 'ramBytes', m.ramBytes);
  if (!Number.isInteger(m.streamIndex) || !Number.isInteger(m.streamCount)) fail('streamIndex', 'stream index and count must be integers');
  checkHelloFields(m, fail);
  const mode = MIGRATION_MODES.indexOf(m.mode);
  if (mode < 0) fail('mode', `'${String(m.mode)}' is not a migration mode`);
  const name = utf8Bytes(m.vmName);
  if (name.length === 0) fail('vmName', 'is empty');
  if (name.length > MAX_NAME_BYTES) throw new WireError('oversized', `${name.length} bytes of UTF-8 exceed ${MAX_NAME_BYTES}`, { message: msg, field: 'vmName' });
  checkMachineConfig(m.config);
  const config = utf8Bytes(JSON.stringify(m.config));
  if (config.length > MAX_CONFIG_BYTES) throw new WireError('oversized', `${config.length} bytes of JSON exceed ${MAX_CONFIG_BYTES}`, { message: msg, field: 'config' });

  const w = new FrameWriter(FrameType.Hello, HELLO_FIXED_BYTES + name.length + config.length);
  writePrefix(w, m.version);
  w.raw(m.vmId).raw(m.sessionId);
  w.u8(mode).u8(m.streamIndex).u8(m.streamCount).u8(0);
  w.u32(m.capabilities).u32(m.pageSize).u64(m.ramBytes);
  w.u16(name.length).raw(name);
  w.u32(config.length).raw(config);
  return w.finish();
}

export function decodeHello(payload: Uint8Array): Hello {
  const r = new PayloadReader(payload, 'HELLO');
  const fail = (field: string, text: string): never => r.fail('bad-value', field, text);
  const version = readPrefix(r);
  const vmId = r.fixed(ID_BYTES, 'vmId');
  const sessionId = r.fixed(ID_BYTES, 'sessionId');
  const modeCode = r.u8('mode');
  const streamIndex = r.u8('streamIndex');
  const streamCount = r.u8('streamCount');
  r.reserved(1, 'reserved');
  const capabilities = r.u32('capabilities');
  const pageSize = r.u32('pageSize');
  const ramBytes = r.u64('ramBytes');
  const mode = MIGRATION_MODES[modeCode];
  if (mode === undefined) fail('mode', `code ${modeCode} is not a migration mode (0 precopy, 1 postcopy, 2 hybrid)`);
  const nameLength = r.u16('nameLength');
  if (nameLength === 0) fail('nameLength', 'is 0; a VM has a name');
  if (nameLength > MAX_NAME_BYTES) r.fail('oversized', 'nameLength', `${nameLength} exceeds ${MAX_NAME_BYTES}`);
  const vmName = r.utf8(nameLength, 'vmName');
  const configLength = r.u32('configLength');
  if (configLength > MAX_CONFIG_BYTES) r.fail('oversized', 'configLength', `${configLength} exceeds ${MAX_CONFIG_BYTES}`);
  const configText = r.utf8(configLength, 'config');
  r.end();
  let parsed: unknown;
  try {
    parsed = JSON.parse(configText);
  } catch (e) {
    r.fail('malformed', 'config', `is not JSON (${e instanceof Error ? e.message : 'parse error'})`);
  }
  const config = checkMachineConfig(parsed);
  const m: Hello = {
    type: FrameType.Hello,
    version,
    vmId,
    vmName,
    ramBytes,
    pageSize,
    config,
    mode: mode!,
    capabilities,
    streamIndex,
    streamCount,
    sessionId,
  };
  checkHelloFields(m, fail);
  return m;
}

// ---- ACCEPT ---------------------------------------------------------------------------------

export function encodeAccept(m: Body<Accept>): Uint8Array {
  checkVersion('ACCEPT', m.version);
  checkBytes('ACCEPT', 'sessionId', m.sessionId, ID_BYTES);
  if (isAllZero(m.sessionId)) throw new WireError('bad-value', 'is all zero; ACCEPT names the session', { message: 'ACCEPT', field: 'sessionId' });
  checkU32('ACCEPT', 'capabilities', m.capabilities);
  const w = new FrameWriter(FrameType.Accept, ACCEPT_BYTES);
  writePrefix(w, m.version);
  return w.raw(m.sessionId).u32(m.capabilities).finish();
}

export function decodeAccept(payload: Uint8Array): Accept {
  const r = new PayloadReader(payload, 'ACCEPT');
  const version = readPrefix(r);
  const sessionId = r.fixed(ID_BYTES, 'sessionId');
  const capabilities = r.u32('capabilities');
  r.end();
  if (isAllZero(sessionId)) r.fail('bad-value', 'sessionId', 'is all zero; ACCEPT names the session');
  return { type: FrameType.Accept, version, sessionId, capabilities };
}

// ---- REFUSE ---------------------------------------------------------------------------------

export function encodeRefuse(m: Body<Refuse>): Uint8Array {
  checkVersion('REFUSE', m.version);
  const code = REFUSE_REASONS.indexOf(m.reason) + 1;
  if (code === 0) throw new WireError('bad-value', `'${String(m.reason)}' is not a refusal reason`, { message: 'REFUSE', field: 'reason' });
  const text = utf8BytesTruncated(m.text, MAX_REASON_TEXT_BYTES);
  const w = new FrameWriter(FrameType.Refuse, REFUSE_FIXED_BYTES + text.length);
  writePrefix(w, m.version);
  return w.u8(code).u8(0).u16(text.length).raw(text).finish();
}

export function decodeRefuse(payload: Uint8Array): Refuse {
  const r = new PayloadReader(payload, 'REFUSE');
  const version = readPrefix(r);
  const code = r.u8('reason');
  r.reserved(1, 'reserved');
  const length = r.u16('textLength');
  const reason = REFUSE_REASONS[code - 1];
  if (reason === undefined) r.fail('bad-value', 'reason', `code ${code} is not a refusal reason (1..${REFUSE_REASONS.length})`);
  if (length > MAX_REASON_TEXT_BYTES) r.fail('oversized', 'textLength', `${length} exceeds ${MAX_REASON_TEXT_BYTES}`);
  const text = r.utf8(length, 'text');
  r.end();
  return { type: FrameType.Refuse, version, reason: reason!, text };
}
