import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DirtyLog } from '../../src/machine/memory/dirty-log.js';
import { GuestRam, RamSizeError } from '../../src/machine/memory/ram.js';

test('sync returns marked pages ascending and clears them', () => {
  const log = DirtyLog.allocate(37);
  for (const p of [36, 0, 5, 4, 17]) log.bits[p] = 1;
  assert.equal(log.count(), 5);
  assert.deepEqual([...log.sync()], [0, 4, 5, 17, 36]);
  assert.equal(log.count(), 0);
  assert.deepEqual([...log.sync()], []);
});

test('take clears one page and reports whether it was dirty', () => {
  const log = DirtyLog.allocate(8);
  log.markRange(4096 * 2 + 100, 4096); // pages 2 and 3
  assert.equal(log.take(2), true);
  assert.equal(log.take(2), false);
  assert.equal(log.isDirty(3), true);
  assert.deepEqual([...log.sync()], [3]);
});

test('sync reuses a caller buffer', () => {
  const log = DirtyLog.allocate(100);
  const buf = new Uint32Array(100);
  log.markAll();
  const got = log.sync(buf);
  assert.equal(got.buffer, buf.buffer);
  assert.equal(got.length, 100);
});

test('RAM size is validated with a clear error', () => {
  assert.throws(() => GuestRam.allocate(1000), RamSizeError);
  assert.throws(() => GuestRam.allocate(3 * 1024 * 1024 * 1024), /between/);
  const ram = GuestRam.allocate(1 << 20);
  assert.equal(ram.pageCount, 256);
  assert.equal(ram.offsetOf(0x8000_0000 + 4096, 4), 4096);
  assert.equal(ram.offsetOf(0x8000_0000 + (1 << 20) - 2, 4), -1);
  assert.equal(ram.offsetOf(0x1000_0000, 4), -1);
});

test('a RAM opened from its descriptor shares memory, dirty log and presence map', () => {
  const a = GuestRam.allocate(1 << 20);
  const b = GuestRam.open(a.describe());
  a.u8[12345] = 7;
  assert.equal(b.u8[12345], 7);
  b.dirty.bits[9] = 1;
  assert.deepEqual([...a.dirty.sync()], [9]);
  a.presence.markAbsent(3);
  assert.equal(b.presence.isPresent(3), false);
  const page = new Uint8Array(4096).fill(0xab);
  assert.equal(a.presence.install(3, page), true);
  assert.equal(b.u8[3 * 4096 + 17], 0xab);
  assert.equal(a.presence.install(3, page), false, 'a present page is not overwritten');
  assert.equal(a.isZeroPage(4), true);
  assert.equal(a.isZeroPage(3), false);
});
