// Post-copy pieces without a network: the push orders (linear, bubbling) and the POSTCOPY_STATS codec.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Bubbling, LinearPush, type PushOrder } from '../../src/migration/prepaging.js';
import { PageDigests } from '../../src/migration/postcopy-digest.js';
import { latencySummary } from '../../src/migration/postcopy-source.js';
import { FrameType, WireError, decodeFrameHeader, decodeMessage, decodePostcopyStats, encodePostcopyStats } from '../../src/migration/wire/index.js';

/** Drains an order the way the pusher does (clearing `needed` as pages go), with faults injected. */
function drain(order: PushOrder, needed: Uint8Array, faults: Map<number, number>): number[] {
  const out: number[] = [];
  for (let step = 0; ; step++) {
    const f = faults.get(step);
    if (f !== undefined && needed[f] === 1) {
      needed[f] = 0; // served on demand
      out.push(f);
      order.onFault(f);
    }
    const p = order.next();
    if (p < 0) break;
    assert.equal(needed[p], 1, `order returned page ${p}, which is not needed`);
    needed[p] = 0;
    out.push(p);
  }
  return out;
}

function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0);
}

test('linear and bubbling push every needed page exactly once, whatever the faults', () => {
  for (const seed of [1, 2, 3, 4, 5]) {
    const rand = lcg(seed);
    const n = 5000;
    const base = new Uint8Array(n);
    for (let p = 0; p < n; p++) base[p] = rand() % 4 === 0 ? 0 : 1; // some pages already there (hybrid)
    const faults = new Map<number, number>();
    for (let i = 0; i < 200; i++) faults.set(rand() % 4000, rand() % n);
    const want = [...base.keys()].filter((p) => base[p] === 1).sort((a, b) => a - b);
    for (const make of [(m: Uint8Array) => new LinearPush(m), (m: Uint8Array) => new Bubbling(m, 1), (m: Uint8Array) => new Bubbling(m, 4)]) {
      const needed = base.slice();
      const order = make(needed);
      const got = drain(order, needed, faults);
      assert.deepEqual([...got].sort((a, b) => a - b), want, `${order.constructor.name} seed ${seed}`);
      assert.equal(order.next(), -1);
    }
  }
});

test('bubbling grows outward around each fault, alternating sides, several pivots at once', () => {
  const needed = new Uint8Array(1000).fill(1);
  const b = new Bubbling(needed, 2);
  const take = (): number => {
    const p = b.next();
    needed[p] = 0;
    return p;
  };
  b.onFault(500);
  needed[500] = 0;
  assert.deepEqual([take(), take(), take(), take()], [501, 499, 502, 498]);
  b.onFault(100);
  needed[100] = 0;
  // Two pivots served round-robin.
  const next = [take(), take(), take(), take()];
  assert.ok(next.includes(101) && next.includes(99), `second pivot's neighbours in ${next}`);
  assert.ok(next.some((p) => p > 490 && p < 510), `first pivot still grows: ${next}`);
  // With no fault at all, bubbling is linear.
  const fresh = new Uint8Array(10).fill(1);
  const lin = new Bubbling(fresh);
  const seq: number[] = [];
  for (let p = lin.next(); p >= 0; p = lin.next()) {
    fresh[p] = 0;
    seq.push(p);
  }
  assert.deepEqual(seq, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.throws(() => new Bubbling(fresh, 0), RangeError);
});

test('POSTCOPY_STATS: byte layout, round trip, reserved bytes and length checked', () => {
  const frame = encodePostcopyStats({ networkFaults: 7, writtenPages: 0x01020304, latencyP50Us: 250, latencyP99Us: 4000, latencyMaxUs: 0xffffffff });
  const h = decodeFrameHeader(frame);
  assert.equal(h.type, 0x23);
  assert.equal(h.length, 24);
  const payload = frame.subarray(8);
  assert.deepEqual([...payload.subarray(0, 8)], [7, 0, 0, 0, 4, 3, 2, 1]);
  assert.deepEqual([...payload.subarray(20)], [0, 0, 0, 0]);
  const m = decodeMessage({ type: h.type, flags: 0, payload });
  assert.equal(m.type, FrameType.PostcopyStats);
  assert.deepEqual(decodePostcopyStats(payload), { type: FrameType.PostcopyStats, networkFaults: 7, writtenPages: 0x01020304, latencyP50Us: 250, latencyP99Us: 4000, latencyMaxUs: 0xffffffff });
  const bad = payload.slice();
  bad[21] = 1;
  assert.throws(() => decodePostcopyStats(bad), (e: unknown) => e instanceof WireError && e.code === 'reserved-bits');
  assert.throws(() => decodePostcopyStats(payload.subarray(0, 23)), (e: unknown) => e instanceof WireError && e.code === 'truncated');
  assert.throws(() => encodePostcopyStats({ networkFaults: -1, writtenPages: 0, latencyP50Us: 0, latencyP99Us: 0, latencyMaxUs: 0 }), WireError);
});

test('latency summary and per-page RAM digests', () => {
  assert.deepEqual(latencySummary([]), { p50: 0, p99: 0, max: 0 });
  const s = latencySummary(Array.from({ length: 100 }, (_, i) => i + 1));
  assert.deepEqual(s, { p50: 50, p99: 99, max: 100 });
  const ram = new Uint8Array(4 * 4096);
  const a = new PageDigests(4).takeAll(ram).digest();
  ram[4096 * 2 + 5] = 1;
  const b = new PageDigests(4).takeAll(ram).digest();
  assert.notDeepEqual(a, b);
  const c = new PageDigests(4);
  for (const p of [3, 1, 0, 2]) c.take(ram, p);
  assert.deepEqual(c.digest(), b);
});
