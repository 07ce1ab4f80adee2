// Pre-copy page throughput on loopback, unthrottled: a source on the main thread sends a VM of
// incompressible RAM to a MigrationServer in a worker thread (its own event loop, as a separate
// host process would have). Prints round 1's page-data rate and the whole report.
//
//   npx tsc -p . && node dist/bench/precopy.js [ramMiB=512] [runs=3]
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { GuestRam } from '../src/machine/memory/ram.js';
import { MigrationServer } from '../src/migration/destination.js';
import { OutgoingMigration } from '../src/migration/source.js';
import type { DestinationHost, IncomingVm, MigratableVm, PreparedVm, Reservation } from '../src/migration/vm-port.js';

const MiB = 1024 * 1024;
/** COLD=1: fresh, untouched destination RAM per run, as a real reservation gets. */
const cold = process.env['COLD'] === '1';

/**
 * Destination: writes every page into real GuestRam; load/resume do nothing. The RAM is reused
 * across runs and touched once up front, so runs measure the engine rather than the kernel
 * faulting in fresh memory (which on a VM host can cost more than the copy itself).
 */
class BenchHost implements DestinationHost {
  private ram: GuestRam | undefined;
  reserve(vm: IncomingVm): Reservation {
    if (this.ram?.bytes !== vm.ramBytes || cold) {
      this.ram = GuestRam.allocate(vm.ramBytes);
      if (!cold) for (let i = 0; i < this.ram.u8.length; i += 4096) this.ram.u8[i] = 1;
    }
    return { ram: this.ram };
  }
  async load(): Promise<PreparedVm> {
    return { resume: () => {}, discard: async () => {} };
  }
  release(): void {}
}

async function destination(): Promise<void> {
  const server = new MigrationServer(new BenchHost(), { name: 'bench-dst' });
  const { port } = await server.listen(0, '127.0.0.1');
  parentPort!.postMessage(port);
  parentPort!.once('message', () => void server.close().then(() => process.exit(0)));
}

/** A VM whose RAM is pseudo-random (no zero pages) and never changes. */
function benchVm(ramBytes: number): MigratableVm {
  const ram = GuestRam.allocate(ramBytes);
  const w = ram.i32;
  let x = 0x12345678;
  for (let i = 0; i < w.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    w[i] = x | 1;
  }
  return {
    uuid: Uint8Array.from({ length: 16 }, (_, i) => i + 1),
    name: 'bench',
    ram,
    config: { imageDigest: 'sha256:bench', bootArgs: '', devices: [] },
    pause: async () => {},
    resume: () => {},
    setThrottle: () => {},
    setDirtyLogging: async (on) => {
      if (on) ram.dirty.clear();
    },
    saveState: async () => new Uint8Array(64 * 1024).fill(7),
  };
}

async function main(): Promise<void> {
  const ramMiB = Number(process.argv[2] ?? 512);
  const runs = Number(process.argv[3] ?? 3);
  const worker = new Worker(new URL(import.meta.url), { workerData: 'destination' });
  const port = await new Promise<number>((r) => worker.once('message', r));
  const vm = benchVm(ramMiB * MiB);
  for (let i = 0; i < runs; i++) {
    const m = new OutgoingMigration(vm, {
      id: `bench-${i}`, sourceName: 'bench-src', destinationName: 'bench-dst', destination: { host: '127.0.0.1', port },
      mode: 'precopy', maxBandwidthBps: 0, minBandwidthBps: 0, downtimeLimitMs: 300, maxRounds: 30, verifyRam: false, timeoutMs: 600_000,
    });
    const r = await m.run();
    const r1 = r.perRound[0]!;
    const pageBytes = (r1.pages - 0) * 4096;
    console.log(`run ${i + 1}: ${r.status} ${ramMiB} MiB: round 1 ${r1.pages} pages in ${r1.durationMs.toFixed(1)} ms = ${(pageBytes / r1.durationMs / 1e6).toFixed(2)} GB/s of page data (${(r1.bytes / r1.durationMs / 1e6).toFixed(2)} GB/s on the wire); total ${r.totalTimeMs.toFixed(0)} ms, downtime ${r.downtimeMs.toFixed(1)} ms, rounds ${r.rounds}`);
  }
  worker.postMessage('stop');
  await new Promise((r) => worker.once('exit', r));
}

if (isMainThread) await main();
else if (workerData === 'destination') await destination();
