import { GuestRam } from '../machine/memory/ram.js';
import { BLOCK_SIZE, PAGE_SIZE } from '../machine/memory/layout.js';
import { MigrationServer } from '../migration/destination.js';
import { OutgoingMigration } from '../migration/source.js';
import type { DestinationHost, IncomingVm, MigratableVm, PreparedVm, Reservation } from '../migration/vm-port.js';
import type { Logger } from '../util/log.js';

/**
 * What the warm-up migrates: RAM of this size whose data pages come in runs (sent as PAGE_RUN,
 * read straight into RAM) and singly between zero pages (PAGES batches): in each 32 pages, 0..16
 * and the even ones after.
 */
const RAM_BYTES = 16 * 1024 * 1024;
/** Migrations run: V8 optimises the page loops only after they have run a few times. */
const RUNS = 6;
/** Pages dirtied at the start of each run, so the stop-and-copy round carries some. */
const DIRTY_PAGES = 48;
/**
 * In the runs with XBZRLE (every other one), pages dirtied at the start and written again at the
 * pause, a word each: stop-and-copy then encodes them against the cache with block masks, the
 * path a real migration's downtime runs (cold, it ran 2-3x slower there).
 */
const XBZRLE_PAGES = 1024;

/** Where the warm-up's migrations land: RAM reserved and dropped, a state never run. */
class DiscardingHost implements DestinationHost {
  reserve(vm: IncomingVm): Reservation {
    return { ram: GuestRam.allocate(vm.ramBytes), zeroed: true };
  }

  async load(): Promise<PreparedVm> {
    return { resume: () => {}, discard: async () => {} };
  }

  release(): void {}
}

/**
 * A VM that is RAM only: the migration engine sees pages, a dirty log and a state blob.
 * `withXbzrle()`: the run under way uses XBZRLE (XBZRLE_PAGES dirtied, and written again at the
 * pause); else DIRTY_PAGES are dirtied.
 */
function syntheticVm(withXbzrle: () => boolean): MigratableVm {
  const ram = GuestRam.allocate(RAM_BYTES);
  let x = 0x9e3779b9;
  for (let p = 0; p < ram.pageCount; p++) {
    if ((p & 31) >= 16 && (p & 1) === 1) continue;
    for (let i = p * (PAGE_SIZE >>> 2), end = i + (PAGE_SIZE >>> 2); i < end; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      ram.i32[i] = x;
    }
  }
  const state = new Uint8Array(4096).fill(0x5a);
  /** The run's dirtied pages, spread over RAM: the word at `offset` in each is flipped. */
  const rewrite = (offset: number): number[] => {
    const n = withXbzrle() ? XBZRLE_PAGES : DIRTY_PAGES;
    const pages: number[] = [];
    for (let p = 1; p < ram.pageCount; p += Math.floor(ram.pageCount / n)) {
      ram.i32[(p * PAGE_SIZE + offset) >>> 2]! ^= 1;
      pages.push(p);
    }
    return pages;
  };
  return {
    uuid: Uint8Array.from({ length: 16 }, (_, i) => (i * 17 + 1) & 0xff),
    name: 'engine-warm-up',
    ram,
    config: { imageDigest: 'sha256:engine-warm-up', bootArgs: '', devices: [] },
    pause: async () => {
      // The "guest" writes a word in block 3 of each page it wrote at the start, as a CPU store would mark it.
      if (!withXbzrle()) return;
      for (const p of rewrite(3 * BLOCK_SIZE)) ram.dirty.bits[p]! |= 1 << 3;
    },
    resume: () => {},
    setThrottle: () => {},
    setDirtyLogging: async (on) => {
      if (!on) return;
      ram.dirty.clear();
      // Some pages written "while" round 1 runs: the next round sends them.
      for (const p of rewrite(0)) ram.dirty.markRange(p * PAGE_SIZE, 4);
    },
    saveState: async () => state,
  };
}

/**
 * Compiles this daemon's migration paths before its first real migration. A Node process runs a
 * function slowly until V8 has seen it run: the first migration out of or into a daemon moved
 * pages at a fraction of the speed of the third, and its stop-and-copy took twice as long. So at
 * start the daemon migrates a synthetic VM (16 MiB of RAM, nothing else) a few times to a private
 * listener in its own process, through the same source engine, wire codecs and receiver as a
 * real migration; the copies are thrown away. Not in any list, event or count of migrations.
 * `stopped()` ends it early (daemon shutdown).
 */
export async function warmUpEngine(log: Logger, stopped: () => boolean): Promise<void> {
  const t0 = performance.now();
  // Its own migrations log only what goes wrong: they are not the user's.
  const quiet = log.child({ engineWarmUp: true }, { level: log.isLevelEnabled('warn') ? 'warn' : log.level });
  const server = new MigrationServer(new DiscardingHost(), { name: 'engine-warm-up', log: quiet, maxSessions: 1 });
  let done = 0;
  try {
    const { port } = await server.listen(0, '127.0.0.1');
    let run = 0;
    const withXbzrle = (): boolean => run % 2 === 1;
    const vm = syntheticVm(withXbzrle);
    for (; run < RUNS && !stopped(); run++) {
      const m = new OutgoingMigration(vm, {
        id: `engine-warm-up-${run}`,
        sourceName: 'engine-warm-up',
        destinationName: 'engine-warm-up',
        destination: { host: '127.0.0.1', port },
        mode: 'precopy',
        maxBandwidthBps: 0,
        minBandwidthBps: 0,
        downtimeLimitMs: 50,
        maxRounds: 4,
        verifyRam: run === RUNS - 1,
        timeoutMs: 20_000,
        freePageHint: false,
        ...(withXbzrle() ? { xbzrleCacheBytes: RAM_BYTES } : {}),
        log: quiet,
      });
      const r = await m.run();
      if (r.status !== 'completed') {
        log.warn({ status: r.status, err: r.error?.message }, 'engine warm-up: a loopback migration did not complete; the first real migration may be slower');
        return;
      }
      done++;
    }
  } catch (e) {
    log.warn({ err: (e as Error).message }, 'engine warm-up failed; the first real migration may be slower');
  } finally {
    await server.close().catch(() => {});
    log.info({ migrations: done, ms: Math.round(performance.now() - t0) }, 'engine warm-up done');
  }
}
