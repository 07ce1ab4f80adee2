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

test('every mark the dirty log gives up (sync, take, clear) is folded into the written map', () => {
  const ram = GuestRam.open({ ...GuestRam.allocate(1 << 20).describe(), writesTracked: true });
  for (const p of [3, 4, 5, 200]) ram.dirty.bits[p] = 1;
  assert.equal(ram.knownZero(3), false);
  assert.equal(ram.knownZero(6), true);
  assert.deepEqual([...ram.dirty.sync()].slice(0, 1), [3]);
  ram.dirty.bits[7] = 1;
  assert.equal(ram.dirty.take(7), true);
  ram.dirty.bits[9] = 1;
  ram.dirty.clear();
  const written = [...ram.written.bits.keys()].filter((p) => ram.written.bits[p] !== 0);
  assert.deepEqual(written, [3, 4, 5, 7, 9, 200]);
  for (const p of written) assert.equal(ram.knownZero(p), false);
  assert.equal(ram.dirty.count(), 0);
  ram.markWritten(4096 * 10 + 1, 4096); // pages 10 and 11
  assert.equal(ram.knownZero(10), false);
  assert.equal(ram.knownZero(11), false);
  assert.equal(ram.knownZero(12), true);
  assert.equal(GuestRam.allocate(1 << 20).knownZero(12), false, 'RAM without tracking: nothing known');
});
