import assert from 'node:assert/strict';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { existsSync, readFileSync } from 'node:fs';
import { test } from 'node:test';
import { RamPool } from '../../src/host/ram-pool.js';
import { GuestRam } from '../../src/machine/memory/ram.js';

const MiB = 1024 * 1024;

/** V8's collector as a function (the flag set at run time; the test runner starts Node without it). */
function collector(): () => void {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
}

/** This process's resident memory in bytes (Linux). */
function rssBytes(): number {
  const m = /^Rss:\s+(\d+) kB/m.exec(readFileSync('/proc/self/smaps_rollup', 'utf8'));
  assert.ok(m !== null, 'smaps_rollup has an Rss line');
  return Number(m[1]) * 1024;
}

test('prealloc adds a buffer that the scrubber backs in the background; it must fit the cap beside what is held', { skip: !existsSync('/proc/self/smaps_rollup') && 'no /proc/self/smaps_rollup' }, async () => {
  // First in this file: earlier tests' pools, still zeroing in the background, were freed while
  // this one's scrubber ran and offset its growth (rss grew 21.6 MiB for 64 MiB written).
  const gc = collector();
  gc();
  const pool = new RamPool(80 * MiB);
  const before = rssBytes();
  assert.equal(pool.prealloc(64 * MiB), true);
  assert.equal(pool.bytes, 64 * MiB);
  assert.ok(rssBytes() - before < 16 * MiB, 'allocating the buffer does not back it');
  assert.equal(pool.scrubbed, false);
  const alive = setInterval(() => {}, 1000); // the scrubber's timers are unref'd: a daemon's servers keep its loop alive, here this does
  await pool.idle();
  clearInterval(alive);
  gc();
  assert.ok(pool.scrubbed);
  assert.ok(rssBytes() - before >= 60 * MiB, `the scrubber wrote every page, so the kernel backs them (rss grew ${((rssBytes() - before) / MiB).toFixed(1)} MiB)`);
  assert.equal(pool.prealloc(32 * MiB), false, 'beyond the cap beside the 64 MiB held: refused, nothing evicted');
  assert.equal(pool.prealloc(1000), false, 'not whole pages');
  assert.equal(pool.bytes, 64 * MiB);
  const b = pool.take(64 * MiB);
  assert.ok(b !== undefined && new Uint8Array(b).every((x) => x === 0));
  assert.equal(pool.bytes, 0);
  await pool.idle(); // nothing held: at once
});

test('a pooled buffer comes back zeroed, only for the same size, once', () => {
  const pool = new RamPool(64 * MiB);
  const ram = GuestRam.allocate(16 * MiB);
  ram.u8.fill(0xa5, 0, 3 * 4096);
  pool.put(ram.buffer);
  pool.put(ram.buffer); // twice is once
  assert.equal(pool.bytes, 16 * MiB);
  assert.equal(pool.take(32 * MiB), undefined);
  const b = pool.take(16 * MiB);
  assert.equal(b, ram.buffer);
  assert.ok(new Uint8Array(b!).every((x) => x === 0));
  assert.equal(pool.bytes, 0);
  assert.equal(pool.take(16 * MiB), undefined);
  const again = GuestRam.allocate(16 * MiB, b);
  assert.equal(again.buffer, b);
});

test('the pool keeps the newest buffers within its cap; 0 keeps none', () => {
  const pool = new RamPool(40 * MiB);
  const a = new SharedArrayBuffer(16 * MiB);
  const b = new SharedArrayBuffer(16 * MiB);
  const c = new SharedArrayBuffer(16 * MiB);
  pool.put(a);
  pool.put(b);
  pool.put(c);
  assert.equal(pool.bytes, 32 * MiB);
  assert.equal(pool.take(16 * MiB), b);
  assert.equal(pool.take(16 * MiB), c);
  assert.equal(pool.take(16 * MiB), undefined);
  const none = new RamPool(0);
  none.put(a);
  assert.equal(none.bytes, 0);
});

test('reused RAM of the wrong size is refused', () => {
  assert.throws(() => GuestRam.allocate(16 * MiB, new SharedArrayBuffer(8 * MiB)), RangeError);
});

test('RAM that tracked its writes is zeroed only where it was written or dirtied', () => {
  const pool = new RamPool(64 * MiB);
  const ram = GuestRam.allocate(16 * MiB, undefined, true);
  ram.u8.fill(0xa5, 0, 8 * 4096);
  ram.markWritten(0, 4 * 4096); // pages 0..3 written while logging was off
  ram.dirty.bits[4] = 1; // page 4 while it was on
  // Pages 5..7 break the rule on purpose (written behind the marks' back): left as they are,
  // which shows the pool does not touch a page its guest never wrote.
  pool.put(ram);
  const b = new Uint8Array(pool.take(16 * MiB)!);
  assert.ok(b.subarray(0, 5 * 4096).every((x) => x === 0), 'marked pages zeroed');
  assert.equal(b[5 * 4096], 0xa5, 'unmarked pages not touched');
  assert.equal(b[8 * 4096 - 1], 0xa5);
});

test('held RAM is zeroed in the background, a slice per turn of the event loop; a take before that finishes zeroes the rest', async () => {
  const pool = new RamPool(256 * MiB);
  const write = (): GuestRam => {
    const ram = GuestRam.allocate(32 * MiB, undefined, true);
    ram.u8.fill(0x5a, 0, 20 * MiB);
    ram.u8.fill(0x5a, 30 * MiB, 31 * MiB + 4096); // past the first slices
    ram.markWritten(0, 20 * MiB);
    ram.markWritten(30 * MiB, 1 * MiB + 4096);
    ram.u8[31 * MiB + 8192] = 0x77; // unmarked: never touched
    return ram;
  };
  const a = write();
  pool.put(a);
  assert.equal(pool.scrubbed, false, 'nothing zeroed inside put()');
  const deadline = Date.now() + 10_000;
  while (!pool.scrubbed && Date.now() < deadline) await new Promise((r) => setImmediate(r));
  assert.ok(pool.scrubbed, 'the scrubber finished');
  const u8 = new Uint8Array(a.buffer);
  assert.ok(u8.subarray(0, 31 * MiB + 4096).every((x) => x === 0), 'every marked page is zero while still held');
  assert.equal(u8[31 * MiB + 8192], 0x77, 'an unmarked page is not touched');
  assert.equal(pool.take(32 * MiB), a.buffer);

  // Taken at once: take() zeroes what the scrubber has not reached.
  const b = write();
  pool.put(b);
  await new Promise((r) => setTimeout(r, 0)); // at most a slice or two
  const got = new Uint8Array(pool.take(32 * MiB)!);
  assert.ok(got.subarray(0, 31 * MiB + 4096).every((x) => x === 0));
  assert.equal(got[31 * MiB + 8192], 0x77);
});

