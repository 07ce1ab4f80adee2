/**
 * The migration-assist channel (docs/assist.md): the host connects to the guest's vsock port
 * ASSIST_PORT; the guest sends its task table; the host may send STUN and RESUME; the guest
 * answers each with DONE; the host closes. Frames are `type u8, version u8, length u16 LE,
 * payload`. One codec per message, checked byte by byte: whatever the guest sends, a bad frame
 * is an AssistError (the caller logs it and resets the channel), never a crash.
 */
import { PAGE_SIZE } from '../machine/memory/layout.js';
import type { GuestChannel } from './vm-port.js';

export const ASSIST_PORT = 1235;
export const ASSIST_VERSION = 1;
export const ASSIST_HEADER_BYTES = 4;
/** Largest payload either side sends (the guest's table: 16 tasks of 8 ranges is 1346 bytes). */
export const ASSIST_MAX_PAYLOAD = 4096;
export const TASK_NAME_BYTES = 16;
/** Guest RAM starts here (QEMU virt); task ranges are guest-physical. */
const RAM_BASE = 0x8000_0000;

export const enum AssistType {
  Table = 1,
  Stun = 2,
  Resume = 3,
  Done = 4,
}

/** What the guest did with one task of a STUN or RESUME. */
export const enum TaskResult {
  Done = 0,
  Exempt = 1,
  Unknown = 2,
  Already = 3,
}

export const TASK_RESULT_NAMES = ['done', 'exempt', 'unknown', 'already'] as const;

export interface TaskRange {
  /** First page, as an index into guest RAM. */
  readonly firstPage: number;
  readonly pages: number;
}

export interface TaskInfo {
  readonly id: number;
  readonly name: string;
  readonly exempt: boolean;
  readonly stunned: boolean;
  readonly ranges: readonly TaskRange[];
}

export interface DoneEntry {
  readonly id: number;
  readonly result: TaskResult;
}

export class AssistError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AssistError';
  }
}

function header(type: AssistType, len: number): Uint8Array {
  const b = new Uint8Array(ASSIST_HEADER_BYTES + len);
  b[0] = type;
  b[1] = ASSIST_VERSION;
  b[2] = len & 0xff;
  b[3] = len >>> 8;
  return b;
}

/** STUN or RESUME of these task ids (RESUME of none: every stunned task). */
export function encodeCommand(type: AssistType.Stun | AssistType.Resume, ids: readonly number[]): Uint8Array {
  if (ids.length > 255) throw new RangeError(`assist: at most 255 task ids, not ${ids.length}`);
  const b = header(type, 2 + 2 * ids.length);
  b[4] = ids.length;
  ids.forEach((id, i) => {
    b[6 + 2 * i] = id & 0xff;
    b[7 + 2 * i] = (id >>> 8) & 0xff;
  });
  return b;
}

/** The guest's TABLE, as a guest would build it (tests and docs). */
export function encodeTable(tasks: readonly TaskInfo[]): Uint8Array {
  let len = 2;
  for (const t of tasks) len += 4 + TASK_NAME_BYTES + 8 * t.ranges.length;
  const b = header(AssistType.Table, len);
  const v = new DataView(b.buffer);
  b[4] = tasks.length;
  let o = 6;
  for (const t of tasks) {
    v.setUint16(o, t.id, true);
    b[o + 2] = (t.exempt ? 1 : 0) | (t.stunned ? 2 : 0);
    b[o + 3] = t.ranges.length;
    b.set(new TextEncoder().encode(t.name).subarray(0, TASK_NAME_BYTES - 1), o + 4);
    o += 4 + TASK_NAME_BYTES;
    for (const r of t.ranges) {
      v.setUint32(o, RAM_BASE + r.firstPage * PAGE_SIZE, true);
      v.setUint32(o + 4, r.pages, true);
      o += 8;
    }
  }
  return b;
}

export function encodeDone(op: AssistType.Stun | AssistType.Resume, entries: readonly DoneEntry[]): Uint8Array {
  const b = header(AssistType.Done, 2 + 4 * entries.length);
  b[4] = op;
  b[5] = entries.length;
  entries.forEach((e, i) => {
    b[6 + 4 * i] = e.id & 0xff;
    b[7 + 4 * i] = e.id >>> 8;
    b[8 + 4 * i] = e.result;
  });
  return b;
}

/** Frames from a byte stream: push bytes, take whole frames. */
export class AssistFramer {
  private buf = new Uint8Array(0);

  push(bytes: Uint8Array): void {
    const b = new Uint8Array(this.buf.length + bytes.length);
    b.set(this.buf);
    b.set(bytes, this.buf.length);
    this.buf = b;
  }

  /** The next whole frame, or undefined until more bytes arrive; throws AssistError on a bad header. */
  next(): { type: number; payload: Uint8Array } | undefined {
    const b = this.buf;
    if (b.length < ASSIST_HEADER_BYTES) return undefined;
    if (b[1] !== ASSIST_VERSION) throw new AssistError(`assist protocol version ${b[1]} (this host speaks ${ASSIST_VERSION})`);
    const len = b[2]! | (b[3]! << 8);
    if (len > ASSIST_MAX_PAYLOAD) throw new AssistError(`a ${len}-byte message (at most ${ASSIST_MAX_PAYLOAD})`);
    if (b.length < ASSIST_HEADER_BYTES + len) return undefined;
    const payload = b.slice(ASSIST_HEADER_BYTES, ASSIST_HEADER_BYTES + len);
    this.buf = b.slice(ASSIST_HEADER_BYTES + len);
    return { type: b[0]!, payload };
  }

  get pending(): number {
    return this.buf.length;
  }
}

/** A TABLE payload; every range must lie inside the VM's `ramPages`. */
export function decodeTable(p: Uint8Array, ramPages: number): TaskInfo[] {
  if (p.length < 2) throw new AssistError('TABLE shorter than its 2-byte head');
  if (p[1] !== 0) throw new AssistError('TABLE: reserved byte is not 0');
  const n = p[0]!;
  const v = new DataView(p.buffer, p.byteOffset, p.byteLength);
  const tasks: TaskInfo[] = [];
  const ids = new Set<number>();
  let o = 2;
  for (let i = 0; i < n; i++) {
    if (p.length - o < 4 + TASK_NAME_BYTES) throw new AssistError(`TABLE truncated in task ${i}`);
    const id = v.getUint16(o, true);
    const flags = p[o + 2]!;
    const nr = p[o + 3]!;
    if (id === 0 || ids.has(id)) throw new AssistError(`TABLE: task id ${id} ${id === 0 ? 'is reserved' : 'appears twice'}`);
    if ((flags & ~3) !== 0) throw new AssistError(`TABLE: task ${id} has unknown flags 0x${flags.toString(16)}`);
    ids.add(id);
    const nameBytes = p.subarray(o + 4, o + 4 + TASK_NAME_BYTES);
    const nul = nameBytes.indexOf(0);
    if (nul < 0) throw new AssistError(`TABLE: task ${id}'s name is not NUL-terminated`);
    const name = new TextDecoder('utf-8', { fatal: false }).decode(nameBytes.subarray(0, nul));
    if (!/^[\x21-\x7e]{1,15}$/.test(name)) throw new AssistError(`TABLE: task ${id}'s name is empty or not printable ASCII`);
    o += 4 + TASK_NAME_BYTES;
    if (p.length - o < 8 * nr) throw new AssistError(`TABLE truncated in the ranges of task ${id}`);
    const ranges: TaskRange[] = [];
    for (let r = 0; r < nr; r++, o += 8) {
      const addr = v.getUint32(o, true);
      const pages = v.getUint32(o + 4, true);
      const first = (addr - RAM_BASE) / PAGE_SIZE;
      if (addr < RAM_BASE || addr % PAGE_SIZE !== 0 || pages === 0 || first + pages > ramPages) {
        throw new AssistError(`TABLE: task ${id} claims ${pages} pages at 0x${addr.toString(16)}, outside the VM's ${ramPages} pages of RAM`);
      }
      ranges.push({ firstPage: first, pages });
    }
    tasks.push({ id, name, exempt: (flags & 1) !== 0, stunned: (flags & 2) !== 0, ranges });
  }
  if (o !== p.length) throw new AssistError(`TABLE: ${p.length - o} bytes after the last task`);
  return tasks;
}

export function decodeDone(p: Uint8Array, op: AssistType.Stun | AssistType.Resume): DoneEntry[] {
  if (p.length < 2 || p.length !== 2 + 4 * p[1]!) throw new AssistError(`DONE of ${p.length} bytes does not match its count`);
  if (p[0] !== op) throw new AssistError(`DONE answers ${p[0]}, expected ${op}`);
  const out: DoneEntry[] = [];
  for (let i = 0; i < p[1]!; i++) {
    const o = 2 + 4 * i;
    const result = p[o + 2]!;
    if (result > TaskResult.Already) throw new AssistError(`DONE: unknown result ${result} for task ${p[o]! | (p[o + 1]! << 8)}`);
    out.push({ id: p[o]! | (p[o + 1]! << 8), result });
  }
  return out;
}

export interface AssistOutcome {
  readonly tasks: TaskInfo[];
  /** The guest's answer to the command, if one was sent. */
  readonly done?: DoneEntry[];
}

/**
 * One short exchange: open, read the TABLE, send `command` (if any) and read its DONE, close.
 * Rejects with a message fit for a report (refused, timed out, malformed) and resets the channel.
 */
export async function assistExchange(
  open: () => GuestChannel | undefined,
  ramPages: number,
  command: { type: AssistType.Stun | AssistType.Resume; ids: (tasks: readonly TaskInfo[]) => number[] } | undefined,
  timeoutMs: number,
): Promise<AssistOutcome> {
  const ch = open();
  if (ch === undefined) throw new AssistError('the VM has no virtio-vsock device');
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new AssistError(`no answer within ${timeoutMs} ms (the guest runs no assist channel on vsock port ${ASSIST_PORT}?)`)), timeoutMs);
  });
  const framer = new AssistFramer();
  const nextFrame = async (): Promise<{ type: number; payload: Uint8Array }> => {
    for (;;) {
      const f = framer.next();
      if (f !== undefined) return f;
      const bytes = await ch.read();
      if (bytes === undefined) throw new AssistError('the guest closed the channel mid-exchange');
      framer.push(bytes);
    }
  };
  const run = async (): Promise<AssistOutcome> => {
    await ch.opened;
    const t = await nextFrame();
    if (t.type !== AssistType.Table) throw new AssistError(`expected TABLE, got message type ${t.type}`);
    const tasks = decodeTable(t.payload, ramPages);
    if (command === undefined) return { tasks };
    const ids = command.ids(tasks);
    ch.send(encodeCommand(command.type, ids));
    const d = await nextFrame();
    if (d.type !== AssistType.Done) throw new AssistError(`expected DONE, got message type ${d.type}`);
    return { tasks, done: decodeDone(d.payload, command.type) };
  };
  try {
    const out = await Promise.race([run(), timeout]);
    await Promise.race([ch.close(), timeout]);
    return out;
  } catch (e) {
    ch.destroy();
    throw e instanceof AssistError ? e : new AssistError(e instanceof Error ? e.message : String(e));
  } finally {
    clearTimeout(timer);
  }
}
