import { GuestRam } from '../machine/memory/ram.js';
import { BLOCK_SIZE, PAGE_SIZE } from '../machine/memory/layout.js';
import { MigrationServer } from '../migration/destination.js';
import { OutgoingMigration } from '../migration/source.js';
import type { DestinationHost, IncomingVm, MigratableVm, PreparedVm, Reservation } from '../migration/vm-port.js';
import { VmNetwork } from '../net/vm-network.js';
import type { VsockHostPort } from '../net/vsock-port.js';
import { silentLogger, type Logger } from '../util/log.js';
import { arrivedNetwork } from './vm-net-setup.js';
import { decodeEnvelope, encodeEnvelope } from './vm-envelope.js';

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

/** Connections the synthetic VM's network holds, each with client bytes queued. */
const CONNECTIONS = 8;

/**
 * A vsock device with no guest behind it, for the synthetic VM's network: what the endpoint
 * sends waits here (it becomes the endpoint's backlog at the freeze, as undelivered packets do).
 */
class GuestlessPort implements VsockHostPort {
  readonly guestCid = 3;
  readonly freeBytes = 1 << 20;
  private held: Uint8Array[] = [];
  send(packet: Uint8Array): boolean {
    if (this.held.length < 64) this.held.push(packet.slice());
    return true;
  }
  onPacket(): void {}
  flushFromGuest(): void {}
  takeUndelivered(): Uint8Array[] {
    const out = this.held;
    this.held = [];
    return out;
  }
  postEvent(): void {}
}

/**
 * Where the warm-up's migrations land: RAM reserved and dropped, a state never run. The state's
 * network section is decoded and restored into a throwaway network, as a real arrival does
 * before its resume.
 */
class DiscardingHost implements DestinationHost {
  reserve(vm: IncomingVm): Reservation {
    return { ram: GuestRam.allocate(vm.ramBytes), zeroed: true };
  }

  async load(vm: IncomingVm, _r: Reservation, state: Uint8Array): Promise<PreparedVm> {
    const { network } = decodeEnvelope(state);
    if (network !== undefined) {
      const arrived = arrivedNetwork(network);
      const net = new VmNetwork(vm.uuid, vm.name, arrived.config, new GuestlessPort(), undefined, silentLogger);
      net.endpoint.restoreState(arrived.endpoint);
      net.start();
      net.dispose();
    }
    return { resume: () => {}, discard: async () => {} };
  }

  release(): void {}
}

/**
 * A VM of RAM and a network with no guest: the migration engine sees pages, a dirty log and a
 * state blob, which is a real envelope (vm-envelope.ts) with a network section. A daemon's first
 * real migration of a VM with a network otherwise ran the freeze, the network's save and the
 * envelope's encoding cold, inside its downtime (measured: 1.2-5.5 ms for the envelope on each
 * host's first outgoing migration, 0.1-0.2 ms later). `withXbzrle()`: the run under way uses
 * XBZRLE (XBZRLE_PAGES dirtied, and written again at the pause); else DIRTY_PAGES are dirtied.
 * `dispose()` drops the network.
 */
function syntheticVm(withXbzrle: () => boolean): MigratableVm & { dispose(): void } {
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
  const uuid = Uint8Array.from({ length: 16 }, (_, i) => (i * 17 + 1) & 0xff);
  const net = new VmNetwork(uuid, 'engine-warm-up', { gateway: undefined, exposures: [{ hostPort: 1, vmPort: 6379 }], epoch: 0 }, new GuestlessPort(), undefined, silentLogger);
  net.start();
  const request = new TextEncoder().encode('*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n');
  for (let c = 1; c <= CONNECTIONS; c++) {
    net.endpoint.open(c, 6379);
    net.endpoint.data(c, 0, request);
  }
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
    uuid,
    name: 'engine-warm-up',
    ram,
    config: { imageDigest: 'sha256:engine-warm-up', bootArgs: '', devices: [] },
    pause: async () => {
      net.freeze();
      // The "guest" writes a word in block 3 of each page it wrote at the start, as a CPU store would mark it.
      if (!withXbzrle()) return;
      for (const p of rewrite(3 * BLOCK_SIZE)) ram.dirty.bits[p]! |= 1 << 3;
    },
    resume: () => net.thaw(),
    setThrottle: () => {},
    setDirtyLogging: async (on) => {
      if (!on) return;
      net.thaw(); // the last run left it frozen (a completed migration never resumes its source)
      ram.dirty.clear();
      // Some pages written "while" round 1 runs: the next round sends them.
      for (const p of rewrite(0)) ram.dirty.markRange(p * PAGE_SIZE, 4);
    },
    saveState: async () => encodeEnvelope(state, net.saveState()),
    dispose: () => net.dispose(),
  };
}

/**
 * Compiles this daemon's migration paths before its first real migration. A Node process runs a
 * function slowly until V8 has seen it run: the first migration out of or into a daemon moved
 * pages at a fraction of the speed of the third, and its stop-and-copy took twice as long. So at
 * start the daemon migrates a synthetic VM (16 MiB of RAM and a network with no guest) a few times
 * to a private listener in its own process, through the same source engine, wire codecs and
 * receiver as a real migration, and the same network freeze, save, envelope and restore as a
 * VM with a gateway; the copies are thrown away. Not in any list, event or count of migrations.
 * `stopped()` ends it early (daemon shutdown).
 */
export async function warmUpEngine(log: Logger, stopped: () => boolean): Promise<void> {
  const t0 = performance.now();
  // Its own migrations log only what goes wrong: they are not the user's.
  const quiet = log.child({ engineWarmUp: true }, { level: log.isLevelEnabled('warn') ? 'warn' : log.level });
  const server = new MigrationServer(new DiscardingHost(), { name: 'engine-warm-up', log: quiet, maxSessions: 1 });
  let done = 0;
  let vm: ReturnType<typeof syntheticVm> | undefined;
  try {
    const { port } = await server.listen(0, '127.0.0.1');
    let run = 0;
    const withXbzrle = (): boolean => run % 2 === 1;
    vm = syntheticVm(withXbzrle);
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
    vm?.dispose();
    await server.close().catch(() => {});
    log.info({ migrations: done, ms: Math.round(performance.now() - t0) }, 'engine warm-up done');
  }
}
