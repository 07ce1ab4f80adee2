// What the page encodings buy and cost, on loopback in one process (source and destination
// share this event loop; the guest runs in its vCPU worker thread):
//  1. XBZRLE: bytes to migrate a `munch` that rewrites a few bytes per page (stride=8), with
//     and without --xbzrle, same settings (target: at least 2x fewer bytes);
//  2. compression and parallel streams: ratio and round-1 throughput of lz4 and zstd against
//     none, over 1 and 4 streams, on a VM whose RAM is half text-like, half random;
//  3. auto-converge: the throttle it reaches on a munch that dirties faster than the cap.
//
//   npx tsc -p . && node dist/bench/encodings.js [--json]
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { GuestRam } from '../src/machine/memory/ram.js';
import { Vcpu } from '../src/machine/vcpu/vcpu.js';
import { MigrationServer } from '../src/migration/destination.js';
import type { MigrationReport } from '../src/migration/report.js';
import { OutgoingMigration, type MigrateOptions } from '../src/migration/source.js';
import type { DestinationHost, IncomingVm, MigratableVm, PreparedVm, Reservation } from '../src/migration/vm-port.js';

const MiB = 1024 * 1024;
const json = process.argv.includes('--json');

/** Destination: real GuestRam per reservation; load and resume do nothing. */
class BenchHost implements DestinationHost {
  reserve(vm: IncomingVm): Reservation {
    return { ram: GuestRam.allocate(vm.ramBytes) };
  }
  async load(): Promise<PreparedVm> {
    return { resume: () => {}, discard: async () => {} };
  }
  release(): void {}
}

function vmOf(vcpu: Vcpu | undefined, ram: GuestRam, bootArgs: string): MigratableVm {
  return {
    uuid: new Uint8Array(randomBytes(16)),
    name: 'bench',
    ram,
    config: { imageDigest: 'sha256:bench', bootArgs, devices: [] },
    pause: async () => {
      await vcpu?.pause();
    },
    resume: () => vcpu?.resume(),
    setThrottle: (p) => vcpu?.setThrottle(p),
    setDirtyLogging: async (on) => {
      if (vcpu !== undefined) await vcpu.setDirtyLogging(on);
      else if (on) ram.dirty.clear(); // nothing writes a static VM's RAM
    },
    saveState: async () => (vcpu !== undefined ? vcpu.saveState() : new Uint8Array(64)),
  };
}

async function bootMunch(bootargs: string, ramBytes: number): Promise<{ vcpu: Vcpu; vm: MigratableVm }> {
  const image = new Uint8Array(readFileSync(fileURLToPath(new URL('../../guests/images/munch.elf', import.meta.url))));
  const ram = GuestRam.allocate(ramBytes);
  const vcpu = await Vcpu.start({ ram, name: 'munch', start: { kind: 'boot', boot: { image, imageName: 'munch.elf', bootargs } } });
  await new Promise((r) => setTimeout(r, 1500)); // let munch fill its rss and start writing
  return { vcpu, vm: vmOf(vcpu, ram, bootargs) };
}

let seq = 0;
async function run(vm: MigratableVm, port: number, over: Partial<MigrateOptions>): Promise<MigrationReport> {
  const opts: MigrateOptions = {
    id: `bench-${++seq}`,
    sourceName: 'src',
    destinationName: 'dst',
    destination: { host: '127.0.0.1', port },
    mode: 'precopy',
    maxBandwidthBps: 0,
    minBandwidthBps: 0,
    downtimeLimitMs: 300,
    maxRounds: 30,
    verifyRam: false,
    timeoutMs: 300_000,
    ...over,
  };
  const rep = await new OutgoingMigration(vm, opts).run();
  if (rep.status !== 'completed') throw new Error(`migration ${rep.status}: ${rep.error?.message ?? ''}`);
  return rep;
}

function mb(n: number): string {
  return (n / MiB).toFixed(2) + ' MiB';
}

async function main(): Promise<void> {
  const server = new MigrationServer(new BenchHost(), { name: 'bench-dst' });
  const { port } = await server.listen(0, '127.0.0.1');
  const out: Record<string, unknown> = {};
  const say = (s: string): void => {
    if (!json) process.stdout.write(s + '\n');
  };

  // 1. XBZRLE on munch rewriting 8 bytes per page touch, 16 MiB wws, paced by the cap so
  // every round re-sends the wws with a few bytes changed per page.
  const args = process.env['MUNCH'] ?? 'wws=16M stride=8 rate=64K rss=8M report=1s';
  const common: Partial<MigrateOptions> = { maxBandwidthBps: 32 * MiB, downtimeLimitMs: 1, maxRounds: 8 };
  say(`XBZRLE: munch ${args}, 128 MiB RAM, --max-bandwidth 32MiB/s, 8 rounds at most`);
  const rows: Record<string, unknown>[] = [];
  for (const xb of [false, true]) {
    const { vcpu, vm } = await bootMunch(args, 128 * MiB);
    try {
      const rep = await run(vm, port, { ...common, ...(xb ? { xbzrleCacheBytes: 64 * MiB } : {}) });
      const later = rep.perRound.slice(1).reduce((s, r) => s + r.bytes, 0);
      const laterPages = rep.perRound.slice(1).reduce((s, r) => s + r.pages, 0);
      const row = { xbzrle: xb, rounds: rep.rounds, bytes: rep.bytesTransferred, bytesAfterRound1: later, pagesAfterRound1: laterPages, bytesPerPageAfterRound1: laterPages > 0 ? Math.round(later / laterPages) : 0, totalTimeMs: rep.totalTimeMs, downtimeMs: rep.downtimeMs, xbzrleStats: rep.xbzrle };
      rows.push(row);
      if (process.env['VERBOSE'] === '1') for (const r of rep.perRound) say(`    round ${r.round}: ${r.pages} pages, ${mb(r.bytes)}, skipped ${r.skippedPages ?? 0}, dirty ${r.dirtyPages}, ${r.durationMs.toFixed(0)} ms`);
      say(`  xbzrle=${xb ? 'on ' : 'off'}: ${rep.rounds} rounds, ${mb(rep.bytesTransferred)} total, ${mb(later)} after round 1 (${row.bytesPerPageAfterRound1} B/page), ${rep.totalTimeMs.toFixed(0)} ms${rep.xbzrle !== undefined ? `, hits ${rep.xbzrle.hits} misses ${rep.xbzrle.misses} overflows ${rep.xbzrle.overflows} unchanged ${rep.xbzrle.unchanged}` : ''}`);
    } finally {
      await vcpu.stop();
    }
  }
  const [off, on] = rows as { bytesPerPageAfterRound1: number; bytes: number }[];
  say(`  bytes per re-sent page: ${(off!.bytesPerPageAfterRound1 / Math.max(1, on!.bytesPerPageAfterRound1)).toFixed(1)}x fewer with XBZRLE; whole migration ${(off!.bytes / on!.bytes).toFixed(2)}x fewer bytes`);
  out['xbzrle'] = rows;

  // 2. Compression: a static VM, half text-like (compressible), half random; round 1 unthrottled.
  const ramBytes = 256 * MiB;
  const ram = GuestRam.allocate(ramBytes);
  let x = 0x9e3779b9;
  for (let p = 0; p < ramBytes / 4096; p++) {
    const base = p * 4096;
    if (p % 2 === 0) {
      for (let i = 0; i < 4096; i++) ram.u8[base + i] = 0x61 + ((i * 7 + p) % 23);
    } else {
      for (let i = 0; i < 4096; i += 4) {
        x ^= x << 13;
        x ^= x >>> 17;
        x ^= x << 5;
        ram.i32[(base + i) >> 2] = x | 1;
      }
    }
  }
  const staticVm = vmOf(undefined, ram, '');
  say(`compression: static ${ramBytes / MiB} MiB VM, half text-like pages, half random; unthrottled`);
  const crow: Record<string, unknown>[] = [];
  const variants: [string, Partial<MigrateOptions>][] = [
    ['none', {}],
    ['lz4', { compression: 'lz4' }],
    ['zstd', { compression: 'zstd' }],
    ['none, 4 streams', { streams: 4 }],
    ['lz4, 4 streams', { compression: 'lz4', streams: 4 }],
  ];
  for (const [name, over] of variants) {
    const rep = await run(staticVm, port, over);
    const r1 = rep.perRound[0]!;
    const row = { variant: name, bytes: rep.bytesTransferred, round1MBps: Math.round(r1.bandwidthBps / 1e6), round1RamMBps: Math.round((ramBytes / (r1.durationMs / 1000)) / 1e6), ratio: rep.compression?.ratio ?? 1, totalTimeMs: rep.totalTimeMs };
    crow.push(row);
    say(`  ${name.padEnd(15)}: ${mb(rep.bytesTransferred)} on the wire, ratio ${row.ratio}, RAM sent at ${row.round1RamMBps} MB/s (${r1.durationMs.toFixed(0)} ms for round 1)`);
  }
  out['compression'] = crow;

  // 3. Auto-converge: munch rewriting a 16 MiB wws flat out, 16 MiB/s cap.
  {
    const { vcpu, vm } = await bootMunch('wws=16M stride=4096 report=1s', 64 * MiB);
    try {
      const rep = await run(vm, port, { autoConverge: true, maxBandwidthBps: 16 * MiB, downtimeLimitMs: 1, maxRounds: 12 });
      const t = rep.perRound.map((r) => r.throttlePercent);
      say(`auto-converge: munch wws=16M flat out, --max-bandwidth 16MiB/s: throttle per round ${t.join(',')}; dirty pages per round ${rep.perRound.map((r) => r.dirtyPages).join(',')}; downtime ${rep.downtimeMs.toFixed(1)} ms`);
      out['autoConverge'] = { throttlePerRound: t, dirtyPagesPerRound: rep.perRound.map((r) => r.dirtyPages), downtimeMs: rep.downtimeMs, switchoverReason: rep.switchoverReason };
    } finally {
      await vcpu.stop();
    }
  }
  await server.close();
  if (json) process.stdout.write(JSON.stringify(out, null, 2) + '\n');
}

main().catch((e: unknown) => {
  process.stderr.write(`bench/encodings: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
  process.exit(1);
});
