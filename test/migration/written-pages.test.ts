// The pre-copy sender and the written map (GuestRam.written): on RAM that tracks its writes, a
// page marked neither written nor dirty is sent as a zero page without being read.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { GuestRam } from '../../src/machine/memory/ram.js';
import { PAGE_SIZE } from '../../src/machine/memory/layout.js';
import { PageSender, type FrameSink } from '../../src/migration/page-sender.js';
import { FrameReader, FrameType, PageBatchReader, PageEncoding } from '../../src/migration/wire/index.js';

const MiB = 1024 * 1024;

/** Sends `list` as round 1 and returns each page's encoding as it went on the wire. */
async function sendRound(ram: GuestRam, list: Uint32Array): Promise<Map<number, PageEncoding>> {
  const reader = new FrameReader();
  const sink: FrameSink = {
    write(frame, done) {
      reader.push(frame.slice());
      done();
    },
    guard: (p) => p,
  };
  const sender = new PageSender(ram, sink, true);
  await sender.sendRound(list, 1, true);
  const out = new Map<number, PageEncoding>();
  const batch = new PageBatchReader({ ramPages: ram.pageCount });
  for (let f = reader.next(); f !== undefined; f = reader.next()) {
    assert.equal(f.type, FrameType.Pages);
    batch.decode(f.payload, f.flags);
    for (let i = 0; i < batch.count; i++) out.set(batch.page(i), batch.encoding(i));
  }
  return out;
}

test('tracked RAM: pages never written go as zero pages unread; written and dirty pages are read', async () => {
  const ram = GuestRam.allocate(4 * MiB, undefined, true);
  // Page 1: written and marked (as the loader or a guest store with logging off would).
  ram.u8.fill(1, PAGE_SIZE, 2 * PAGE_SIZE);
  ram.markWritten(PAGE_SIZE, PAGE_SIZE);
  // Page 2: marked written but zero again: read, and found zero.
  ram.markWritten(2 * PAGE_SIZE, 1);
  // Page 3: non-zero behind the marks' back. The sender trusts the marks and never reads it:
  // this is what saves the page fault of reading a page no one touched.
  ram.u8[3 * PAGE_SIZE] = 9;
  const list = Uint32Array.from({ length: 8 }, (_, i) => i);
  const sent = await sendRound(ram, list);
  assert.equal(sent.get(1), PageEncoding.Raw);
  assert.equal(sent.get(2), PageEncoding.Zero);
  assert.equal(sent.get(3), PageEncoding.Zero, 'unmarked: sent as zero without reading');
  assert.equal(sent.get(0), PageEncoding.Zero);
});

test('untracked RAM is read page by page', async () => {
  const ram = GuestRam.allocate(4 * MiB);
  ram.u8[3 * PAGE_SIZE] = 9;
  const sent = await sendRound(ram, Uint32Array.of(2, 3));
  assert.equal(sent.get(2), PageEncoding.Zero);
  assert.equal(sent.get(3), PageEncoding.Raw);
});

test('a page dirtied while logging is on is not taken for zero, and goes once its mark is synced', async () => {
  const ram = GuestRam.allocate(4 * MiB, undefined, true);
  ram.u8[5 * PAGE_SIZE] = 7;
  ram.dirty.bits[5] = 1; // the guest wrote it after logging began
  // Round 1 leaves a dirty page for the next round (Xen's skip); not sent as zero.
  const first = await sendRound(ram, Uint32Array.of(4, 5));
  assert.equal(first.get(4), PageEncoding.Zero);
  assert.equal(first.has(5), false);
  const next = ram.dirty.sync();
  assert.deepEqual([...next], [5]);
  assert.equal(ram.knownZero(5), false, 'the synced mark lives on in the written map');
  const second = await sendRound(ram, next);
  assert.equal(second.get(5), PageEncoding.Raw);
});
