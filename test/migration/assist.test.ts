// The migration-assist protocol (docs/assist.md) from hand-made bytes: every message's layout,
// malformed and hostile input (an AssistError, never a crash), and the exchange's handling of a
// guest that sends garbage, stays silent or hangs up.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  AssistError,
  AssistFramer,
  AssistType,
  TaskResult,
  assistExchange,
  decodeDone,
  decodeTable,
  encodeCommand,
  encodeDone,
  encodeTable,
} from '../../src/migration/assist.js';
import type { GuestChannel } from '../../src/migration/vm-port.js';

const RAM_PAGES = 16384; // 64 MiB

/** One task "rogue" (id 1, not exempt, stunned) with 2 pages at 0x80010000. */
const TABLE_BYTES = [
  1, 1, 30, 0, // TABLE, version 1, length 30
  1, 0, // 1 task, reserved
  1, 0, 2, 1, // id 1, flags stunned, 1 range
  ...Buffer.from('rogue'), ...new Array(11).fill(0), // name, NUL-padded to 16
  0x00, 0x00, 0x01, 0x80, 2, 0, 0, 0, // addr 0x80010000, 2 pages
];

function frame(bytes: number[]): { type: number; payload: Uint8Array } {
  const f = new AssistFramer();
  f.push(Uint8Array.from(bytes));
  const m = f.next();
  assert.ok(m !== undefined);
  return m;
}

test('TABLE from hand-made bytes; encodeTable writes the same bytes', () => {
  const m = frame(TABLE_BYTES);
  assert.equal(m.type, AssistType.Table);
  const tasks = decodeTable(m.payload, RAM_PAGES);
  assert.deepEqual(tasks, [{ id: 1, name: 'rogue', exempt: false, stunned: true, ranges: [{ firstPage: 16, pages: 2 }] }]);
  assert.deepEqual([...encodeTable(tasks)], TABLE_BYTES);
});

test('STUN, RESUME and DONE layouts', () => {
  assert.deepEqual([...encodeCommand(AssistType.Stun, [1, 0x203])], [2, 1, 6, 0, 2, 0, 1, 0, 3, 2]);
  assert.deepEqual([...encodeCommand(AssistType.Resume, [])], [3, 1, 2, 0, 0, 0]);
  const done = [4, 1, 10, 0, 2, 2, 1, 0, 0, 0, 3, 0, 1, 0];
  const m = frame(done);
  assert.deepEqual(decodeDone(m.payload, AssistType.Stun), [{ id: 1, result: TaskResult.Done }, { id: 3, result: TaskResult.Exempt }]);
  assert.deepEqual([...encodeDone(AssistType.Stun, [{ id: 1, result: TaskResult.Done }, { id: 3, result: TaskResult.Exempt }])], done);
});

test('the framer waits for whole frames, byte by byte', () => {
  const f = new AssistFramer();
  for (const b of TABLE_BYTES.slice(0, -1)) {
    f.push(Uint8Array.of(b));
    assert.equal(f.next(), undefined);
  }
  f.push(Uint8Array.of(TABLE_BYTES.at(-1)!));
  assert.equal(f.next()!.payload.length, 30);
  assert.equal(f.pending, 0);
});

test('malformed frames and tables are AssistErrors with a reason', () => {
  const bad = (bytes: number[], re: RegExp): void => {
    assert.throws(() => {
      const f = new AssistFramer();
      f.push(Uint8Array.from(bytes));
      const m = f.next();
      if (m !== undefined) decodeTable(m.payload, RAM_PAGES);
    }, (e: unknown) => e instanceof AssistError && re.test(e.message));
  };
  const withPayload = (p: number[]): number[] => [1, 1, p.length & 0xff, p.length >> 8, ...p];
  const t = TABLE_BYTES.slice(4);
  bad([1, 2, 0, 0], /version 2/);
  bad([1, 1, 0xff, 0xff], /65535-byte message/);
  bad(withPayload([]), /shorter than its 2-byte head/);
  bad(withPayload([1, 1]), /reserved byte/);
  bad(withPayload([1, 0, 1, 0]), /truncated in task 0/);
  bad(withPayload(t.slice(0, -3)), /truncated in the ranges/);
  bad(withPayload([...t, 9]), /1 bytes after the last task/);
  bad(withPayload([2, 0, ...t.slice(2), ...t.slice(2)]), /appears twice/);
  bad(withPayload([1, 0, 0, 0, ...t.slice(4)]), /task id 0 is reserved/);
  bad(withPayload([1, 0, 1, 0, 0x80, ...t.slice(5)]), /unknown flags/);
  const name = (n: number[]): number[] => withPayload([1, 0, 1, 0, 0, 1, ...n, ...t.slice(22)]);
  bad(name(new Array(16).fill(0x41)), /not NUL-terminated/);
  bad(name([0x41, 0x0a, ...new Array(14).fill(0)]), /not printable/);
  bad(name(new Array(16).fill(0)), /empty/);
  const range = (addr: number, pages: number): number[] => withPayload([...t.slice(0, 22), addr & 0xff, (addr >>> 8) & 0xff, (addr >>> 16) & 0xff, addr >>> 24, pages & 0xff, (pages >>> 8) & 0xff, (pages >>> 16) & 0xff, pages >>> 24]);
  bad(range(0x7fff_f000, 1), /outside the VM/);
  bad(range(0x8000_0800, 1), /outside the VM/);
  bad(range(0x8000_0000, 0), /outside the VM/);
  bad(range(0x8000_0000 + (RAM_PAGES - 1) * 4096, 2), /outside the VM/);
  bad(range(0xffff_f000, 0xffff_ffff), /outside the VM/);
  assert.throws(() => decodeDone(Uint8Array.of(2, 2, 1, 0, 0, 0), AssistType.Stun), /does not match its count/);
  assert.throws(() => decodeDone(Uint8Array.of(3, 0), AssistType.Stun), /answers 3, expected 2/);
  assert.throws(() => decodeDone(Uint8Array.of(2, 1, 1, 0, 9, 0), AssistType.Stun), /unknown result 9/);
});

/** A guest played by the test: `script` answers what the host sends (undefined: silence). */
class ScriptedGuest implements GuestChannel {
  readonly opened: Promise<void>;
  sent: Uint8Array[] = [];
  destroyed = false;
  closed = false;
  private queue: (Uint8Array | undefined)[] = [];
  private wake: (() => void) | undefined;

  constructor(first: (Uint8Array | undefined)[], private readonly script: (sent: Uint8Array) => (Uint8Array | undefined)[] = () => [], open: 'accept' | 'refuse' = 'accept') {
    this.opened = open === 'accept' ? Promise.resolve() : Promise.reject(new Error('the guest refused the connection (nothing listens on that port)'));
    this.queue = first;
  }
  send(bytes: Uint8Array): void {
    this.sent.push(bytes);
    this.queue.push(...this.script(bytes));
    this.wake?.();
  }
  async read(): Promise<Uint8Array | undefined> {
    for (;;) {
      if (this.queue.length > 0) return this.queue.shift();
      await new Promise<void>((r) => (this.wake = r));
    }
  }
  close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }
  destroy(): void {
    this.destroyed = true;
  }
}

const STUN_ROGUE = { type: AssistType.Stun as const, ids: () => [1] };

test('an exchange: TABLE, STUN, DONE, close', async () => {
  const g = new ScriptedGuest([Uint8Array.from(TABLE_BYTES)], () => [encodeDone(AssistType.Stun, [{ id: 1, result: TaskResult.Done }])]);
  const out = await assistExchange(() => g, RAM_PAGES, STUN_ROGUE, 1000);
  assert.equal(out.tasks[0]!.name, 'rogue');
  assert.deepEqual(out.done, [{ id: 1, result: TaskResult.Done }]);
  assert.deepEqual([...g.sent[0]!], [2, 1, 4, 0, 1, 0, 1, 0]);
  assert.ok(g.closed && !g.destroyed);
});

test('a hostile or broken guest: the exchange rejects with the reason and resets the channel', async () => {
  const cases: [string, () => ScriptedGuest | undefined, RegExp][] = [
    ['no vsock device', () => undefined, /no virtio-vsock device/],
    ['refused', () => new ScriptedGuest([], undefined, 'refuse'), /refused/],
    ['silent', () => new ScriptedGuest([]), /no answer within 100 ms/],
    ['garbage', () => new ScriptedGuest([Uint8Array.from([0xde, 0xad, 0xbe, 0xef])]), /version 173/],
    ['DONE first', () => new ScriptedGuest([encodeDone(AssistType.Stun, [])]), /expected TABLE/],
    ['hangs up', () => new ScriptedGuest([Uint8Array.from(TABLE_BYTES.slice(0, 10)), undefined]), /closed the channel mid-exchange/],
    ['answers STUN with a TABLE', () => new ScriptedGuest([Uint8Array.from(TABLE_BYTES)], () => [Uint8Array.from(TABLE_BYTES)]), /expected DONE/],
    ['a DONE for RESUME', () => new ScriptedGuest([Uint8Array.from(TABLE_BYTES)], () => [encodeDone(AssistType.Resume, [])]), /answers 3, expected 2/],
  ];
  for (const [what, make, re] of cases) {
    let g: ScriptedGuest | undefined;
    await assert.rejects(assistExchange(() => (g = make()), RAM_PAGES, STUN_ROGUE, 100), (e: unknown) => e instanceof AssistError && re.test(e.message), what);
    if (g !== undefined) assert.equal(g.destroyed, true, `${what}: the channel is reset`);
  }
});
