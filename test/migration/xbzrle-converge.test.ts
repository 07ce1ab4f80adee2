// XBZRLE and a guest that rewrites a little of every page all the time: pre-copy cannot converge
// by sending pages whole, but it can by sending deltas, once the pages are cached. So with XBZRLE
// later rounds send pages even when they are dirty again (a page never sent is never cached),
// and the switchover policy weighs the dirty set by what a page costs on the wire.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { GuestRam } from '../../src/machine/memory/ram.js';
import type { MigrationReport } from '../../src/migration/report.js';
import { staticVm } from '../helpers/static-vm.js';
import { MiB, NullDestinationHost, migrate, startServer } from '../helpers/test-hosts.js';

test('a byte of every page rewritten every 5 ms: whole pages never converge, XBZRLE deltas do', async () => {
  const host = new NullDestinationHost();
  const { server, port } = await startServer(host);
  const run = async (xbzrle: boolean, fallback = false): Promise<MigrationReport> => {
    const ram = GuestRam.allocate(4 * MiB);
    for (let p = 0; p < ram.pageCount; p++) ram.u8.fill((p * 7) & 0xff, p * 4096 + 16, p * 4096 + 4096);
    let n = 0;
    const writer = setInterval(() => {
      n++;
      for (let p = 0; p < ram.pageCount; p++) {
        ram.u8[p * 4096 + (n & 15)] = n & 0xff;
        ram.dirty.markRange(p * 4096, 1);
      }
    }, 5);
    try {
      // 4 MiB at 16 MiB/s: 250 ms a round; a 30 ms limit holds 120 whole pages of the 1024 dirty.
      return await migrate(staticVm(ram, xbzrle ? 'xb' : 'whole'), port, {
        maxBandwidthBps: 16 * MiB, downtimeLimitMs: 30, maxRounds: 12, verifyRam: false,
        ...(xbzrle ? { xbzrleCacheBytes: 4 * MiB } : {}),
        xbzrleFallback: fallback,
      }).report;
    } finally {
      clearInterval(writer);
    }
  };
  try {
    const whole = await run(false);
    assert.equal(whole.status, 'completed', whole.error?.message);
    assert.equal(whole.switchoverReason, 'not-converging', JSON.stringify(whole.perRound));
    const last = whole.perRound.at(-1)!;
    assert.ok(last.bytes > 2 * MiB, `stop-and-copy sent ${last.bytes} bytes`);

    const xb = await run(true);
    assert.equal(xb.status, 'completed', xb.error?.message);
    assert.ok(xb.switchoverReason === 'downtime-limit' || xb.switchoverReason === 'small-remainder', `${xb.switchoverReason} ${JSON.stringify(xb.perRound)}`);
    const final = xb.perRound.at(-1)!;
    assert.ok(final.bytes < last.bytes / 10, `stop-and-copy sent ${final.bytes} bytes with XBZRLE, ${last.bytes} without`);
    assert.ok((xb.xbzrle?.hits ?? 0) > 1024, JSON.stringify(xb.xbzrle));
    // Round 2 on sends the dirty pages instead of skipping them (that is how they get cached).
    assert.equal(xb.perRound[1]!.skippedPages ?? 0, 0, JSON.stringify(xb.perRound[1]));
    assert.equal(xb.xbzrle?.fallbackRound, undefined);

    // Not asked for, but on by default: the fallback turns XBZRLE on once the rounds stop
    // shrinking, and the next two rounds (cache, then deltas) make it converge.
    const fb = await run(false, true);
    assert.equal(fb.status, 'completed', fb.error?.message);
    assert.ok(fb.switchoverReason === 'downtime-limit' || fb.switchoverReason === 'small-remainder', `${fb.switchoverReason} ${JSON.stringify(fb.perRound)}`);
    const at = fb.xbzrle?.fallbackRound;
    assert.ok(at !== undefined && at >= 2, JSON.stringify(fb.xbzrle));
    assert.ok(fb.perRound.at(-1)!.bytes < last.bytes / 10, `stop-and-copy sent ${fb.perRound.at(-1)!.bytes} bytes after the fallback`);
    assert.ok(fb.rounds <= at + 3, `converged within the fallback's rounds: ${fb.rounds} rounds, fallback after ${at}`);
  } finally {
    await server.close();
  }
});

test('a guest that rewrites whole pages: the fallback samples the deltas and does not turn XBZRLE on', async () => {
  const host = new NullDestinationHost();
  const { server, port } = await startServer(host);
  const ram = GuestRam.allocate(4 * MiB);
  ram.u8.fill(0x3c);
  let n = 0;
  const writer = setInterval(() => {
    n++;
    // Every byte of every page changes: a delta would be as big as the page.
    for (let i = 0; i < ram.i32.length; i++) ram.i32[i] = Math.imul(i + n, 0x9e3779b1);
    ram.dirty.markAll();
  }, 5);
  try {
    const r = await migrate(staticVm(ram, 'whole-pages'), port, { maxBandwidthBps: 16 * MiB, downtimeLimitMs: 30, maxRounds: 12, verifyRam: false }).report;
    assert.equal(r.status, 'completed', r.error?.message);
    assert.equal(r.switchoverReason, 'not-converging', JSON.stringify(r.perRound));
    assert.equal(r.xbzrle, undefined, 'no XBZRLE: the sampled deltas were whole pages');
  } finally {
    clearInterval(writer);
    await server.close();
  }
});
