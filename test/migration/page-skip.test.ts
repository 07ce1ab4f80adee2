// The rules of PageSkips (src/migration/page-skip.ts) on hand-set page marks: which pages round 1,
// later rounds and post-copy leave out, and what --verify zeroes.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { GuestRam } from '../../src/machine/memory/ram.js';
import { PageSkips } from '../../src/migration/page-skip.js';

const PAGES = 256;

function all(): Uint32Array {
  return Uint32Array.from({ length: PAGES }, (_, i) => i);
}

test('round 1 leaves out ballooned pages and, with hinting, hinted ones; later rounds know what the destination holds', () => {
  const ram = GuestRam.allocate(PAGES * 4096);
  for (const p of [1, 2, 3]) ram.discarded.mark(p);
  for (const p of [10, 11, 3]) ram.freeHints.mark(p);
  const s = new PageSkips(ram);
  const r1 = s.firstRound(all(), true);
  assert.equal(r1.length, PAGES - 5);
  assert.ok(![1, 2, 3, 10, 11].some((p) => r1.includes(p)));
  assert.deepEqual(s.counts, { balloon: 3, freeHint: 2 });

  // Page 1 still ballooned (and dirty, say): left out again. Page 2 deflated and written: sent.
  // Page 10 hinted, reused and written: sent. Page 20 sent in round 1 and ballooned since: sent, the destination has its old bytes.
  ram.discarded.unmark(2);
  ram.discarded.mark(20);
  assert.deepEqual([...s.laterRound(Uint32Array.of(1, 2, 10, 20))], [2, 10, 20]);
  assert.deepEqual(s.counts, { balloon: 4, freeHint: 2 });
  // Page 2 ballooned again: the destination holds its written bytes now, so it goes (as a zero page).
  ram.discarded.mark(2);
  assert.deepEqual([...s.laterRound(Uint32Array.of(2))], [2]);
});

test('without hinting round 1 ignores stale hints; post-copy clears ballooned pages from the needed set', () => {
  const ram = GuestRam.allocate(PAGES * 4096);
  ram.freeHints.mark(5);
  ram.discarded.mark(7);
  const s = new PageSkips(ram);
  assert.equal(s.firstRound(all(), false).length, PAGES - 1);
  const needed = new Uint8Array(PAGES).fill(1);
  assert.equal(s.postcopyNeeded(needed), 1);
  assert.equal(needed[7], 0);
  assert.equal(needed[5], 1);
  assert.deepEqual(s.counts, { balloon: 2, freeHint: 0 });
});

test('--verify zeroes exactly the hinted pages never sent and not written since', () => {
  const ram = GuestRam.allocate(PAGES * 4096);
  for (const p of [4, 5, 6]) {
    ram.freeHints.mark(p);
    ram.u8.fill(0xaa, p * 4096, (p + 1) * 4096);
  }
  ram.u8.fill(0xbb, 9 * 4096, 10 * 4096);
  const s = new PageSkips(ram);
  s.firstRound(all(), true);
  s.laterRound(Uint32Array.of(5)); // page 5 written after its hint: sent in round 2
  assert.equal(s.zeroUnsentFreePages(), 2);
  assert.ok(ram.isZeroPage(4) && ram.isZeroPage(6));
  assert.equal(ram.u8[5 * 4096], 0xaa);
  assert.equal(ram.u8[9 * 4096], 0xbb);
});
