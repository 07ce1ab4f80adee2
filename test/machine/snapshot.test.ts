import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import { StateFormatError, StateReader, StateWriter, type Stateful } from '../../src/machine/state/codec.js';
import { decodeSnapshot, encodeSnapshot, restoreSnapshot } from '../../src/machine/state/snapshot.js';
import { ConsoleLog, CONSOLE_HISTORY_BYTES } from '../../src/machine/console-log.js';

class Part implements Stateful {
  constructor(readonly stateId: string, readonly stateVersion: number, public value: number, public blob: Uint8Array = new Uint8Array()) {}
  saveState(w: StateWriter): void {
    w.u32(this.value);
    w.bytes(this.blob);
  }
  restoreState(r: StateReader): void {
    this.value = r.u32();
    this.blob = r.bytes(1024);
  }
}

test('snapshot round trip restores every part', () => {
  const bytes = encodeSnapshot([new Part('a', 1, 42, new Uint8Array([1, 2, 3])), new Part('b', 2, 7)]);
  const a = new Part('a', 1, 0);
  const b = new Part('b', 2, 0);
  restoreSnapshot(bytes, [a, b]);
  assert.equal(a.value, 42);
  assert.deepEqual([...a.blob], [1, 2, 3]);
  assert.equal(b.value, 7);
});

test('a corrupt byte anywhere is refused by the checksum before anything loads', () => {
  const bytes = encodeSnapshot([new Part('a', 1, 42)]);
  for (let i = 0; i < bytes.length; i++) {
    const bad = bytes.slice();
    bad[i]! ^= 0x40;
    const a = new Part('a', 1, 0);
    assert.throws(() => restoreSnapshot(bad, [a]), StateFormatError);
    assert.equal(a.value, 0);
  }
});

test('truncated states are refused', () => {
  const bytes = encodeSnapshot([new Part('a', 1, 42)]);
  for (const n of [0, 5, 20, bytes.length - 1]) {
    assert.throws(() => decodeSnapshot(bytes.subarray(0, n)), StateFormatError);
  }
});

test('a section newer than this build, a missing or an unknown section are refused with its name', () => {
  const newer = encodeSnapshot([new Part('cpu', 3, 1)]);
  assert.throws(() => restoreSnapshot(newer, [new Part('cpu', 2, 0)]), /section 'cpu'.*version 3 is not supported/);
  const other = encodeSnapshot([new Part('cpu', 1, 1), new Part('gpu', 1, 1)]);
  assert.throws(() => restoreSnapshot(other, [new Part('cpu', 1, 0)]), /'gpu'.*unknown section/);
  assert.throws(() => restoreSnapshot(encodeSnapshot([]), [new Part('cpu', 1, 0)]), /'cpu'.*missing/);
});

test('a section with trailing bytes is refused', () => {
  class Short extends Part {
    override restoreState(r: StateReader): void {
      this.value = r.u32();
    }
  }
  const bytes = encodeSnapshot([new Part('a', 1, 42)]);
  assert.throws(() => restoreSnapshot(bytes, [new Short('a', 1, 0)]), /trailing/);
});

test('an unknown state format version is refused', () => {
  const bytes = encodeSnapshot([]);
  const body = bytes.slice(0, bytes.length - 32);
  new DataView(body.buffer).setUint32(8, 99, true);
  const re = new Uint8Array([...body, ...createHash('sha256').update(body).digest()]);
  assert.throws(() => decodeSnapshot(re), /format version 99 is not supported/);
});

test('console log keeps the newest bytes and survives a state round trip', () => {
  const log = new ConsoleLog();
  const total = CONSOLE_HISTORY_BYTES + 1000;
  for (let i = 0; i < total; i++) log.push(i & 0xff);
  assert.equal(log.dropped, 1000);
  const c = log.contents();
  assert.equal(c.length, CONSOLE_HISTORY_BYTES);
  assert.equal(c[0], 1000 & 0xff);
  assert.equal(c[c.length - 1], (total - 1) & 0xff);
  const w = new StateWriter();
  log.saveState(w);
  const back = new ConsoleLog();
  back.restoreState(new StateReader(w.finish()));
  assert.deepEqual(back.contents(), c);
  assert.equal(back.total, total);
  back.push(0x41);
  assert.equal(back.contents()[CONSOLE_HISTORY_BYTES - 1], 0x41);
});
