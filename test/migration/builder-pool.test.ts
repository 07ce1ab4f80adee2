// The PageBatchBuilder pool (builder-pool.ts): a disposed PageSender gives its builders back only
// once nothing reads them, and the next sender takes them instead of allocating 4 MB each.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { GuestRam } from '../../src/machine/memory/ram.js';
import { PAGE_SIZE } from '../../src/machine/memory/layout.js';
import { pooledBuilders, takeBuilder } from '../../src/migration/builder-pool.js';
import { PageSender, type FrameSink } from '../../src/migration/page-sender.js';
import { FrameReader, FrameType, PageBatchReader, type PageBatchBuilder } from '../../src/migration/wire/index.js';

const MiB = 1024 * 1024;

/** A sink whose writes complete only when the test says so; frames are checked as they complete. */
class HeldSink implements FrameSink {
  readonly pending: { frame: Uint8Array; done: (err?: Error | null) => void }[] = [];
  readonly delivered: Uint8Array[] = [];
  write(frame: Uint8Array, done: (err?: Error | null) => void): void {
    this.pending.push({ frame, done });
  }
  guard<T>(p: Promise<T>): Promise<T> {
    return p;
  }
  /** Completes the oldest write: a copy of its bytes as they are now is what the socket sent. */
  completeOne(): void {
    const w = this.pending.shift()!;
    this.delivered.push(w.frame.slice());
    w.done();
  }
}

function drain(): void {
  while (pooledBuilders() > 0) takeBuilder();
}

function filledRam(pages: number): { ram: GuestRam; list: Uint32Array } {
  const ram = GuestRam.allocate(pages * PAGE_SIZE);
  for (let p = 0; p < pages; p++) ram.u8.fill((p % 250) + 1, p * PAGE_SIZE, (p + 1) * PAGE_SIZE);
  return { ram, list: Uint32Array.from({ length: pages }, (_, i) => i) };
}

test('a disposed sender returns idle builders at once and busy ones when their write completes', async () => {
  drain();
  const { ram, list } = filledRam(2048); // two full batches
  const sink = new HeldSink();
  const sender = new PageSender(ram, sink, true);
  const round = sender.sendRound(list, 1, false);
  // Two frames go out; the round then waits for them (settle).
  for (let i = 0; i < 50 && sink.pending.length < 2; i++) await new Promise((r) => setImmediate(r));
  assert.equal(sink.pending.length, 2);
  sender.dispose();
  assert.equal(pooledBuilders(), 2, 'the two idle builders went back at once');
  sink.completeOne();
  assert.equal(pooledBuilders(), 3, 'the first frame left: its builder is back');
  sink.completeOne();
  await round;
  assert.equal(pooledBuilders(), 4);
  // What the socket sent is what the guest's RAM held: nothing overwrote a frame in flight.
  const reader = new FrameReader();
  let pages = 0;
  for (const d of sink.delivered) {
    for (const f of reader.feed(d)) {
      assert.equal(f.type, FrameType.Pages);
      const b = new PageBatchReader().decode(f.payload, f.flags);
      for (let i = 0; i < b.count; i++) {
        const p = b.page(i);
        assert.equal(b.data(i)[0], (p % 250) + 1);
        pages++;
      }
    }
  }
  assert.equal(pages, 2048);
  // The next sender takes the pooled builders.
  const again = new PageSender(ram, new HeldSink(), true);
  assert.equal(pooledBuilders(), 0);
  again.dispose();
  assert.equal(pooledBuilders(), 4);
  await assert.rejects(again.sendRound(list, 1, false), /disposed/);
  drain();
});

test('a builder a stopped round still fills is never pooled', async () => {
  drain();
  const { ram, list } = filledRam(512); // less than a batch: the round fills one builder, then flushes
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let guarded = 0;
  const sink: FrameSink = {
    write: (_f, done) => done(),
    // The round's first turn of the event loop (every 64 pages after 5 ms) waits here.
    guard: async <T>(p: Promise<T>): Promise<T> => {
      if (guarded++ === 0) await gate;
      return p;
    },
  };
  const sender = new PageSender(ram, sink, true);
  const t0 = performance.now();
  while (performance.now() - t0 < 6); // past the 5 ms turn: the round yields at page 64
  const round = sender.sendRound(list, 1, false);
  await new Promise((r) => setImmediate(r));
  assert.equal(guarded, 1, 'the round is waiting inside a batch');
  sender.dispose();
  assert.equal(pooledBuilders(), 3, 'the builder being filled stays out of the pool');
  const inPool = new Set<PageBatchBuilder>();
  while (pooledBuilders() > 0) inPool.add(takeBuilder());
  release();
  await assert.rejects(round, /disposed/);
  assert.equal(pooledBuilders(), 0);
  assert.equal(inPool.size, 3);
});
