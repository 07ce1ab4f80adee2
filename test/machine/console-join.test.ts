// Console history split for migration (console-precopy): the state saved at the pause carries only
// the tail (ConsoleLog.saveFrom), the destination joins the history sent live in front of it
// (ConsoleLog.join, ReceivedConsole), and the host's mirror hands out what was printed since a
// position (Vcpu.consoleSince, tested through a real vCPU in test/host/migrate.test.ts).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConsoleLog, CONSOLE_HISTORY_BYTES } from '../../src/machine/console-log.js';
import { StateReader, StateWriter } from '../../src/machine/state/codec.js';
import { ReceivedConsole } from '../../src/migration/console-history.js';

const text = (s: string): Uint8Array => new TextEncoder().encode(s);
const str = (b: Uint8Array): string => new TextDecoder().decode(b);

function logOf(s: string): ConsoleLog {
  const log = new ConsoleLog();
  log.pushAll(text(s));
  return log;
}

/** The log's state saved from `from` on, restored into a fresh log. */
function tailOf(log: ConsoleLog, from: number): ConsoleLog {
  log.saveFrom = from;
  const w = new StateWriter();
  log.saveState(w);
  log.saveFrom = 0;
  const back = new ConsoleLog();
  back.restoreState(new StateReader(w.finish()));
  return back;
}

test('a state saved from a position carries only the bytes after it, and the same total', () => {
  const log = logOf('0123456789abcdef');
  assert.equal(str(log.since(10)), 'abcdef');
  assert.equal(str(log.since(0)), '0123456789abcdef');
  assert.equal(str(log.since(99)), '');
  const tail = tailOf(log, 10);
  assert.equal(str(tail.contents()), 'abcdef');
  assert.equal(tail.total, 16);
  assert.equal(tail.dropped, 10);
  assert.equal(str(tailOf(log, 0).contents()), '0123456789abcdef', 'saveFrom 0: everything');
});

test('join puts the history sent live in front of the tail, where they meet or overlap', () => {
  const whole = '0123456789abcdef';
  const meet = tailOf(logOf(whole), 10);
  assert.equal(meet.join(10, text('0123456789')), true);
  assert.equal(str(meet.contents()), whole);
  assert.equal(meet.total, 16);
  meet.pushAll(text('!'));
  assert.equal(str(meet.contents()), whole + '!', 'output after the join lands at the end');

  const overlap = tailOf(logOf(whole), 8); // the tail holds 89abcdef; the prefix 2..11 overlaps it
  assert.equal(overlap.join(12, text('23456789ab')), true);
  assert.equal(str(overlap.contents()), '23456789abcdef', 'the prefix up to the tail, then the tail as saved');

  const gap = tailOf(logOf(whole), 12);
  assert.equal(gap.join(10, text('0123456789')), false, 'a gap between them: nothing joined');
  assert.equal(str(gap.contents()), 'cdef');

  const covered = tailOf(logOf(whole), 0);
  assert.equal(covered.join(10, text('0123456789')), false, 'the state holds it all already');
  assert.equal(str(covered.contents()), whole);
});

test('join keeps the newest CONSOLE_HISTORY_BYTES', () => {
  const big = new Uint8Array(CONSOLE_HISTORY_BYTES).map((_, i) => i & 0xff);
  const log = new ConsoleLog();
  log.pushAll(big);
  log.pushAll(text('tail!'));
  const tail = tailOf(log, CONSOLE_HISTORY_BYTES);
  assert.equal(str(tail.contents()), 'tail!');
  assert.equal(tail.join(CONSOLE_HISTORY_BYTES, big), true);
  const c = tail.contents();
  assert.equal(c.length, CONSOLE_HISTORY_BYTES);
  assert.equal(str(c.subarray(c.length - 5)), 'tail!');
  assert.equal(c[0], 5 & 0xff, 'the oldest 5 bytes fell out');
  assert.deepEqual(c, log.contents(), 'the same as the source machine keeps');
});

test('ReceivedConsole: frames continue the history, a later start drops what it skipped, going back is refused', () => {
  const r = new ReceivedConsole();
  assert.equal(r.history(), undefined);
  assert.equal(r.add(0, new Uint8Array(0)), undefined, 'an empty first frame');
  assert.deepEqual(r.history(), { end: 0, bytes: new Uint8Array(0) });
  const view = text('hello ');
  assert.equal(r.add(6, view), undefined);
  view[0] = 0x58; // the frame's buffer is reused by the reader: the history kept a copy
  assert.equal(r.add(11, text('world')), undefined);
  assert.equal(str(r.history()!.bytes), 'hello world');
  assert.equal(r.history()!.end, 11);
  assert.match(r.add(12, text('ld!'))!, /\[9, 12\) goes back before the end of the history received \(11\)/);
  assert.equal(r.add(20, text('later')), undefined, 'starts at 15: 11..15 were dropped by the source');
  assert.deepEqual({ end: r.history()!.end, text: str(r.history()!.bytes) }, { end: 20, text: 'later' });
  const mib = new Uint8Array(CONSOLE_HISTORY_BYTES).fill(0x61);
  assert.equal(r.add(20 + mib.length, mib), undefined);
  assert.equal(r.add(20 + mib.length + 3, text('end')), undefined);
  const h = r.history()!;
  assert.equal(h.bytes.length, CONSOLE_HISTORY_BYTES, 'the newest 1 MiB');
  assert.equal(str(h.bytes.subarray(h.bytes.length - 3)), 'end');
  assert.equal(h.bytes[0], 0x61);
});
