import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, test } from 'node:test';
import { GuestRam } from '../../src/machine/memory/ram.js';
import { Vcpu, VcpuThread } from '../../src/machine/vcpu/vcpu.js';
import { CLOCK_WRAP_US, wrappedAgeUs } from '../../src/machine/memory/signals.js';
import { monotonicUs } from '../../src/util/host-clock.js';
import { runCaptured } from '../../src/machine/vcpu/run-captured.js';
import { imageBytes, imagePath, sleep, text, until } from '../helpers/images.js';

const MiB = 1024 * 1024;
const live: Vcpu[] = [];
after(async () => {
  for (const v of live) await v.stop();
});

async function boot(name: string, append: string, memBytes: number, running: boolean): Promise<Vcpu> {
  const ram = GuestRam.allocate(memBytes);
  const v = await Vcpu.start({ ram, running, name, start: { kind: 'boot', boot: { image: imageBytes(name), imageName: name + '.elf', bootargs: append } } });
  live.push(v);
  return v;
}

function ramHash(ram: GuestRam): string {
  return createHash('sha256').update(ram.u8).digest('hex');
}

test('hello boots in a vCPU thread, prints its boot args and powers off with 0', async () => {
  const r = await runCaptured(imagePath('hello'), { memBytes: 16 * MiB, append: 'alpha=1', timeoutMs: 30_000 });
  assert.equal(r.exitCode, 0);
  assert.match(r.output, /Hello/);
  assert.match(r.output, /alpha=1/);
  assert.ok(r.instructions > 0);
});

test('a bad image is refused at start with an ImageError', async () => {
  const ram = GuestRam.allocate(16 * MiB);
  await assert.rejects(
    Vcpu.start({ ram, start: { kind: 'boot', boot: { image: new TextEncoder().encode('not an elf'), imageName: 'junk.img', bootargs: '' } } }),
    (e: Error) => e.name === 'ImageError' && /junk\.img/.test(e.message),
  );
});

test('save, restore in a new thread with a copy of RAM, continue: identical to an uninterrupted run', async () => {
  const N1 = 3_000_000;
  const N2 = 4_000_000;
  const mem = 32 * MiB;
  const append = 'region=4M';

  const ref = await boot('verify', append, mem, false);
  assert.equal(await ref.step(N1 + N2), N1 + N2);
  const refConsole = text(ref.consoleHistory());
  const refState = await ref.saveState();
  const refHash = ramHash(ref.ram);

  const a = await boot('verify', append, mem, false);
  assert.equal(await a.step(N1), N1);
  const state = await a.saveState();
  const copy = GuestRam.allocate(mem);
  copy.u8.set(a.ram.u8);
  await a.stop();

  const b = await Vcpu.start({ ram: copy, running: false, name: 'restored', start: { kind: 'restore', state } });
  live.push(b);
  assert.equal(await b.step(N2), N2);
  assert.equal(text(b.consoleHistory()), refConsole);
  assert.match(refConsole, /^AB+$/);
  assert.equal(ramHash(copy), refHash);
  // The complete machine state matches too (registers, CSRs, devices, clock, console).
  assert.deepEqual(await b.saveState(), refState);
});

test('a standby vCPU thread loads a state later and continues exactly like a fresh restore', async () => {
  const mem = 32 * MiB;
  const a = await boot('verify', 'region=4M', mem, false);
  await a.step(2_000_000);
  const state = await a.saveState();
  const copy = GuestRam.allocate(mem);
  copy.u8.set(a.ram.u8);
  const s = await Vcpu.start({ ram: copy, name: 'standby', start: { kind: 'standby' } });
  live.push(s);
  assert.equal(s.state, 'paused');
  await assert.rejects(s.restore(new Uint8Array(100)), /machine state/);
  await s.stop();
  const t = await Vcpu.start({ ram: copy, name: 'standby2', start: { kind: 'standby' } });
  live.push(t);
  await t.restore(state);
  assert.equal(text(t.consoleHistory()), text(a.consoleHistory()));
  await a.step(1_000_000);
  await t.step(1_000_000);
  assert.deepEqual(await t.saveState(), await a.saveState());
});

test('a restored compute run prints the same digest as one that never stopped', async () => {
  const ref = await runCaptured(imagePath('compute'), { memBytes: 32 * MiB, append: 'iters=1', timeoutMs: 120_000 });
  assert.equal(ref.exitCode, 0);
  const a = await boot('compute', 'iters=1', 32 * MiB, false);
  await a.step(2_000_000);
  const state = await a.saveState();
  const copy = GuestRam.allocate(32 * MiB);
  copy.u8.set(a.ram.u8);
  await a.stop();
  const b = await Vcpu.start({ ram: copy, running: false, start: { kind: 'restore', state } });
  live.push(b);
  const exited = new Promise<number>((r) => b.once('exit', r));
  b.resume();
  assert.equal(await exited, 0);
  await b.stats();
  assert.equal(text(b.consoleHistory()), ref.output);
});

test('pause stops the guest at an instruction boundary and resume continues it', async () => {
  const v = await boot('verify', 'region=4M', 32 * MiB, true);
  assert.ok(await until(() => text(v.consoleHistory()).includes('B'), 20_000), 'verify started');
  await v.pause();
  assert.equal(v.state, 'paused');
  const s1 = await v.stats();
  await sleep(50);
  const s2 = await v.stats();
  assert.equal(s2.instret, s1.instret, 'no instruction retires while paused');
  assert.equal(s2.mtime, s1.mtime, 'guest time stands still while paused');
  v.resume();
  await sleep(50);
  const s3 = await v.stats();
  assert.ok(s3.instret > s2.instret, 'runs again after resume');
  assert.ok(s3.mtime > s2.mtime, 'guest time moves again');
  assert.doesNotMatch(text(v.consoleHistory()), /X/);
});

test('pauseAndSave: the state of exactly where the vCPU stopped, many times over, running each time in between', async () => {
  const v = await boot('verify', 'region=4M', 32 * MiB, true);
  assert.ok(await until(() => text(v.consoleHistory()).includes('B'), 20_000), 'verify started');
  for (let i = 0; i < 20; i++) {
    const { paused, state } = v.pauseAndSave();
    await paused;
    assert.equal(v.state, 'paused');
    const saved = await state;
    const s1 = await v.stats();
    // Saved after it stopped, not before: saving again now gives the same bytes.
    assert.deepEqual(await v.saveState(), saved, `round ${i}`);
    assert.equal((await v.stats()).instret, s1.instret);
    v.resume();
    await sleep(i % 4); // sometimes the save request meets the loop between slices
  }
  assert.doesNotMatch(text(v.consoleHistory()), /X/);
});

test('guest clock: resume(pausedSinceUs) counts the pause from that instant; plain resume() does not', async () => {
  const v = await boot('verify', 'region=1M', 16 * MiB, true);
  assert.ok(await until(() => text(v.consoleHistory()).includes('B'), 20_000), 'verify started');
  const guestMs = async (): Promise<number> => (await v.stats()).mtime / 10_000;
  for (const counted of [true, false]) {
    await v.pause();
    const stoppedUs = v.clockStoppedUs();
    const now = monotonicUs();
    assert.ok(stoppedUs <= now && now - stoppedUs < 1_000_000, `the clock stopped ${(now - stoppedUs) / 1000} ms ago`);
    const atPause = await guestMs();
    await sleep(300);
    assert.equal(await guestMs(), atPause, 'guest time stands still while paused');
    if (counted) v.resume(stoppedUs);
    else v.resume();
    await sleep(50);
    const ran = (await guestMs()) - atPause;
    // Counted, guest time is wall time since the clock stopped: never more, and at least the 350 ms slept.
    const sinceStop = (monotonicUs() - stoppedUs) / 1000;
    if (counted) assert.ok(ran >= 300 + 50 - 1 && ran <= sinceStop + 1, `guest time moved ${ran.toFixed(1)} ms in the ${sinceStop.toFixed(1)} ms since the clock stopped (300 ms of it paused)`);
    else assert.ok(ran < 200, `guest time moved ${ran.toFixed(1)} ms: the pause was not counted`);
  }
  // An instant in the future counts as now; one long ago as at most about 35 minutes.
  await v.pause();
  const before = await guestMs();
  v.resume(monotonicUs() + 10_000_000);
  assert.ok((await guestMs()) - before < 1_000);
  await v.pause();
  const before2 = await guestMs();
  v.resume(0);
  const jumped = (await guestMs()) - before2;
  assert.ok(jumped > 30 * 60_000 && jumped < 36 * 60_000, `a pause from boot time counts as at most ~35 minutes: ${jumped} ms`);
  assert.doesNotMatch(text(v.consoleHistory()), /X/);
});

test('wrappedAgeUs: the age of an instant stored modulo 2^31 µs', () => {
  assert.equal(wrappedAgeUs(5_000, 4_000), 1_000);
  assert.equal(wrappedAgeUs(CLOCK_WRAP_US + 100, CLOCK_WRAP_US - 50), 150);
  assert.equal(wrappedAgeUs(3 * CLOCK_WRAP_US + 7, 7), 0);
});

test('the dirty log sees the pages a running guest writes, and only those', async () => {
  const v = await boot('verify', 'region=4M', 32 * MiB, true);
  assert.ok(await until(() => text(v.consoleHistory()).includes('BB'), 20_000));
  await v.setDirtyLogging(true);
  await sleep(200);
  const pages = [...v.ram.dirty.sync()];
  // verify touches the first byte of every page of its 4 MiB region on every pass.
  assert.ok(pages.length >= 1024, `expected the whole region dirty, got ${pages.length} pages`);
  assert.ok(pages.length < 1024 + 64, `only the region and a few stack/data pages: got ${pages.length}`);
  const topPage = v.ram.pageCount - 1;
  assert.ok(!pages.includes(topPage), 'untouched memory stays clean');
  await sleep(100);
  assert.ok(v.ram.dirty.sync().length >= 1000, 'writes keep marking after a sync');
  await v.setDirtyLogging(false);
  v.ram.dirty.clear();
  await sleep(100);
  assert.equal(v.ram.dirty.count(), 0, 'no marks while logging is off');
});

test('post-copy fault path: a restored VM with every page absent fetches pages on demand and runs on', async () => {
  const mem = 16 * MiB;
  const src = await boot('verify', 'region=2M', mem, true);
  assert.ok(await until(() => text(src.consoleHistory()).includes('BBB'), 20_000));
  await src.pause();
  const srcPc = (await src.stats()).pc;
  const state = await src.saveState();
  const source = src.ram; // the source keeps its copy; pages are served from it

  const ram = GuestRam.allocate(mem);
  ram.presence.markAllAbsent();
  const dst = await Vcpu.start({ ram, running: false, name: 'dst', start: { kind: 'restore', state } });
  live.push(dst);
  const before = text(dst.consoleHistory()).length;
  let seq = 0;
  let faults = 0;
  const seen = new Set<number>();
  const firstPages: number[] = [];
  let serving = true;
  const server = (async () => {
    while (serving) {
      const f = await dst.nextFault(seq, 100);
      if (f === undefined) continue;
      seq = f.seq;
      if (f.page < 0) continue;
      faults++;
      seen.add(f.page);
      if (firstPages.length < 3) firstPages.push(f.page);
      ram.presence.install(f.page, source.page(f.page));
    }
  })();
  dst.resume();
  const ok = await until(() => /B{3}/.test(text(dst.consoleHistory()).slice(before)), 30_000);
  serving = false;
  await server;
  const after2 = text(dst.consoleHistory()).slice(before);
  assert.ok(ok, `guest continued after restore with pages on demand (printed ${JSON.stringify(after2.slice(0, 20))})`);
  assert.doesNotMatch(after2, /X/);
  assert.equal(firstPages[0], (srcPc - 0x8000_0000) >>> 12, 'the first fault is the fetch of the instruction the VM stopped at');
  assert.ok(faults >= 512, `the 2 MiB region was fetched on demand: ${faults} faults`);
  assert.equal(seen.size, faults, 'no page faults twice');
});

test('an idle guest sleeps in wfi instead of burning a host core', async () => {
  // Earlier tests' VMs share this process: stop them so only the idle guest is measured.
  for (const old of live.splice(0)) await old.stop();
  // verify with a long pace spends almost all its time waiting for the timer.
  const v = await boot('verify', 'region=1M pace=200ms', 32 * MiB, true);
  assert.ok(await until(() => text(v.consoleHistory()).includes('B'), 20_000));
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await sleep(1000);
  const used = process.cpuUsage(cpu0);
  const wallUs = (performance.now() - t0) * 1000;
  const share = (used.user + used.system) / wallUs;
  assert.ok(share < 0.3, `process used ${(share * 100).toFixed(1)}% of a core while the guest idled`);
  const passes = (text(v.consoleHistory()).match(/B/g) ?? []).length;
  assert.ok(passes >= 2, 'the timer still wakes it');
});

test('a retired vCPU thread runs the next machine exactly like a new thread would', async () => {
  const mem = 32 * MiB;
  const ref = await boot('verify', 'region=4M', mem, false);
  await ref.step(3_000_000);
  const refState = await ref.saveState();

  const a = await boot('verify', 'region=4M', mem, false);
  await a.step(2_000_000);
  const state = await a.saveState();
  const copy = GuestRam.allocate(mem);
  copy.u8.set(a.ram.u8);
  const thread = await a.retire();
  assert.ok(thread !== undefined && thread.usable, 'a paused, healthy vCPU retires its thread');
  await assert.rejects(a.saveState(), /retired/);
  assert.equal(await a.retire(), undefined, 'retiring twice gives nothing');

  // The thread loads a migrated state as a standby, and continues exactly as the reference did.
  const b = await Vcpu.start({ ram: copy, name: 'reused', start: { kind: 'standby' }, thread });
  live.push(b);
  assert.equal(b.reusedThread, true);
  assert.equal(thread.usable, false, 'a thread serves one machine');
  await b.restore(state);
  assert.equal(await b.step(1_000_000), 1_000_000);
  assert.deepEqual(await b.saveState(), refState);

  // Retired again, it boots another image from scratch: hello runs to its power-off.
  const again = await b.retire();
  assert.ok(again !== undefined);
  const ram = GuestRam.allocate(16 * MiB);
  const h = await Vcpu.start({ ram, name: 'hello', thread: again, start: { kind: 'boot', boot: { image: imageBytes('hello'), imageName: 'hello.elf', bootargs: 'beta=2' } } });
  live.push(h);
  assert.equal(h.reusedThread, true);
  await until(() => h.exited !== undefined, 20_000);
  assert.equal(h.exited, 0);
  assert.match(text(h.consoleHistory()), /beta=2/);

  // An ended thread is not used: the next machine gets a new one.
  const ended = await (await boot('verify', 'region=1M', 16 * MiB, false)).retire();
  await ended!.terminate();
  assert.equal(ended!.usable, false);
  const fresh = await Vcpu.start({ ram: GuestRam.allocate(16 * MiB), name: 'fresh', start: { kind: 'standby' }, thread: ended! });
  live.push(fresh);
  assert.equal(fresh.reusedThread, false);
});

test('a spare thread trained on a guest (or on junk: no training) then runs a VM of its own, exactly', async () => {
  const devices = [{ kind: 'virtio-vsock' as const, guestCid: 3 }, { kind: 'virtio-balloon' as const }];
  const trained = await VcpuThread.spawn({ boot: { image: imageBytes('selftest'), imageName: 'selftest.elf', bootargs: '' }, ramBytes: 64 * MiB, devices, ms: 50 });
  const junk = await VcpuThread.spawn({ boot: { image: new TextEncoder().encode('not an elf'), imageName: 'junk.img', bootargs: '' }, ramBytes: 16 * MiB, devices, ms: 50 });
  for (const thread of [trained, junk]) {
    assert.equal(thread.usable, true);
    const ram = GuestRam.allocate(16 * MiB);
    const v = await Vcpu.start({ ram, running: true, name: 'after-training', devices, thread, start: { kind: 'boot', boot: { image: imageBytes('verify'), imageName: 'verify.elf', bootargs: 'region=1M pace=2ms' } } });
    live.push(v);
    assert.ok(await until(() => text(v.consoleHistory()).split('B').length > 3, 20_000), 'the VM runs on the thread');
    assert.match(text(v.consoleHistory()), /^AB+$/, 'its own output only: nothing of the training guest');
  }
});

test("a spare's training waits while its hold word is set (a migration runs on the host), then ends", async () => {
  const devices = [{ kind: 'virtio-vsock' as const, guestCid: 3 }];
  const hold = new SharedArrayBuffer(4);
  const word = new Int32Array(hold);
  Atomics.store(word, 0, 1);
  let ready = false;
  const spawned = VcpuThread.spawn({ boot: { image: imageBytes('selftest'), imageName: 'selftest.elf', bootargs: '' }, ramBytes: 16 * MiB, devices, ms: 50, hold }).then((t) => {
    ready = true;
    return t;
  });
  // Unheld, 50 ms of training is over well within this (a thread loads its code in 0.1-0.3 s).
  await sleep(2000);
  assert.equal(ready, false, 'held: the spare is not offered yet');
  Atomics.store(word, 0, 0);
  Atomics.notify(word, 0);
  const thread = await spawned;
  assert.equal(thread.usable, true);
  await thread.terminate();
});
